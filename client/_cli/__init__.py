"""The client's part of ``specklab``: one noun group per kind of thing, each with its verbs
(``specklab booking create``), plus the short forms the README uses (``specklab book``).

Every command takes ``--url``, ``--token`` (else ``SPECKLAB_URL`` / ``SPECKLAB_TOKEN``) and
``--json``. Module-level imports stay light so that ``specklab --help`` starts fast; handlers
import the client.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from . import accounts, bookings, deployments, devices, jobs, models, recordings
from .parsing import Verb, common_options


@dataclass(frozen=True)
class Group:
    name: str
    what: str
    verbs: dict[str, tuple[str, Verb]]
    #: What the group does without a verb.
    default: Verb
    aliases: tuple[str, ...] = field(default=())


GROUPS = (
    Group("device", "the lab's devices", devices.VERBS, devices.VERBS["list"][1]),
    Group("booking", "bookings", bookings.VERBS, bookings.VERBS["list"][1]),
    Group("model", "compiled models", models.VERBS, models.VERBS["list"][1]),
    Group("deployment", "deployed models", deployments.VERBS, deployments.VERBS["list"][1]),
    Group(
        "recording",
        "recorded events",
        recordings.VERBS,
        recordings.VERBS["list"][1],
        aliases=("recordings",),
    ),
    Group("job", "evaluation jobs", jobs.VERBS, jobs.VERBS["list"][1]),
    Group("token", "API tokens (alone: who you are)", accounts.TOKEN_VERBS, accounts.WHOAMI),
    Group("user", "the lab's users", accounts.USER_VERBS, accounts.USER_VERBS["me"][1]),
    Group("audit", "who did what", accounts.AUDIT_VERBS, accounts.AUDIT_VERBS["list"][1]),
)

#: The short forms the README and earlier releases use, as ``group verb``.
SHORT_FORMS: dict[str, tuple[str, str]] = {
    "devices": ("device", "list"),
    "book": ("booking", "create"),
    "bookings": ("booking", "list"),
    "extend": ("booking", "extend"),
    "cancel": ("booking", "cancel"),
    "upload": ("model", "upload"),
    "models": ("model", "list"),
    "deploy": ("deployment", "create"),
    "stream": ("device", "stream"),
    "record": ("recording", "create"),
    "evaluate": ("job", "evaluate"),
}


def register(commands: argparse._SubParsersAction) -> None:
    common = [common_options(nested=False)]
    by_name = {group.name: group for group in GROUPS}
    for group in GROUPS:
        listed = f"{group.what}: {', '.join(group.verbs)}"
        _add_group(commands.add_parser(group.name, parents=common, help=listed), group, listed)
        for alias in group.aliases:
            # No help=: aliases and short forms stay out of the listing (the epilog names them).
            _add_group(commands.add_parser(alias, parents=common), group, listed)
    for short, (name, verb) in SHORT_FORMS.items():
        what, declare = by_name[name].verbs[verb]
        declare(commands.add_parser(short, parents=common, description=f"{what} ({name} {verb})"))


def _add_group(parser: argparse.ArgumentParser, group: Group, listed: str) -> None:
    parser.description = listed
    group.default(parser)
    nested = [common_options(nested=True)]
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (what, declare) in group.verbs.items():
        declare(verbs.add_parser(verb, parents=nested, help=what, description=what))


def epilog() -> str:
    aliases = {alias: (group.name,) for group in GROUPS for alias in group.aliases}
    forms = "\n".join(
        f"  {short:<11}{' '.join(long)}" for short, long in {**aliases, **SHORT_FORMS}.items()
    )
    return (
        f"short forms:\n{forms}\n\n"
        "exit status: 0 done, 1 refused by the daemon or failed, 2 wrong command line,\n"
        "3 daemon unreachable or failing, 4 no token or not allowed, 5 --timeout passed,\n"
        "130 interrupted."
    )
