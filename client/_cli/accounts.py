"""``specklab token``, ``specklab user`` and ``specklab audit``: who may do what, and who did."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .output import emit
from .parsing import UsageError, Verb, positive, when
from .running import runner

if TYPE_CHECKING:
    from .._client import Client

_ROLES = ("admin", "user", "observer")


def _user_id(client: Client, name: str | None) -> int | None:
    """The id of the user called ``name`` (listing users is for admins)."""
    if name is None:
        return None
    for user in client.users():
        if user.name == name:
            return user.id
    raise UsageError(f"--user {name}: no such user (specklab user list shows them)")


def _whoami_verb(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=runner(_whoami))


def _whoami(client: Client, args: argparse.Namespace) -> None:
    me = client.me()
    emit(args, me, lambda: f"{me.name} ({me.role}) at {client.url}")


#: ``specklab token`` alone, as it always did: who the token belongs to.
WHOAMI: Verb = _whoami_verb


def _token_list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", help="another user's (admins)")
    parser.set_defaults(handler=runner(_tokens))


def _tokens(client: Client, args: argparse.Namespace) -> None:
    from specklab.schemas.render import format_table

    tokens = client.tokens(user_id=_user_id(client, args.user))
    headers = ("id", "name", "prefix", "created", "expires", "revoked", "last used")
    rows = [
        (t.id, t.name, t.prefix, t.created_at, t.expires_at, t.revoked_at, t.last_used_at)
        for t in tokens
    ]
    emit(args, tokens, lambda: format_table(headers, rows))


def _token_create(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="what the token is for (laptop, ci)")
    parser.add_argument("--user", help="for another user (admins)")
    lifetime = parser.add_mutually_exclusive_group()
    lifetime.add_argument(
        "--days", type=positive, default=90, help="days until it expires (default 90)"
    )
    lifetime.add_argument("--never-expires", action="store_true")
    parser.set_defaults(handler=runner(_create_token))


def _create_token(client: Client, args: argparse.Namespace) -> None:
    days = None if args.never_expires else args.days
    user_id = _user_id(client, args.user)
    created = client.create_token(args.name, expires_in_days=days, user_id=user_id)
    emit(args, created, lambda: created.token)


def _token_revoke(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("token_id", type=positive, metavar="TOKEN")
    parser.set_defaults(handler=runner(_revoke))


def _revoke(client: Client, args: argparse.Namespace) -> None:
    revoked = client.revoke_token(args.token_id)
    emit(args, revoked, lambda: f"revoked token {revoked.id} ({revoked.name})")


TOKEN_VERBS: dict[str, tuple[str, Verb]] = {
    "list": ("your API tokens (never their secrets)", _token_list),
    "create": ("a new token; its secret is shown once", _token_create),
    "revoke": ("revoke a token", _token_revoke),
}


def _user_list(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=runner(_users))


def _users(client: Client, args: argparse.Namespace) -> None:
    from specklab.schemas.render import format_table

    users = client.users()
    rows = [(u.id, u.name, u.role, u.created_at) for u in users]
    emit(args, users, lambda: format_table(("id", "name", "role", "created"), rows))


def _user_create(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")
    parser.add_argument("--role", choices=_ROLES, default="user")
    parser.set_defaults(handler=runner(_create_user))


def _create_user(client: Client, args: argparse.Namespace) -> None:
    user = client.create_user(args.name, role=args.role)
    emit(args, user, lambda: f"created user {user.name} ({user.role}), id {user.id}")


USER_VERBS: dict[str, tuple[str, Verb]] = {
    "me": ("who your token belongs to", _whoami_verb),
    "list": ("the lab's users (admins)", _user_list),
    "create": ("add a user (admins); then: specklab token create NAME --user USER", _user_create),
}


def _audit_list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--action", help="booking.create, or a prefix ending in '.' (booking.)")
    parser.add_argument("--user", help="only what this user did")
    parser.add_argument("--target", help="only what was done to this (a device id ...)")
    parser.add_argument("--since", type=when, help="only from this time (ISO 8601)")
    parser.add_argument("--limit", type=positive, default=100, help="at most this many (100)")
    parser.set_defaults(handler=runner(_audit))


def _audit(client: Client, args: argparse.Namespace) -> None:
    from specklab.schemas.render import format_table

    entries = client.audit(
        action=args.action,
        actor_id=_user_id(client, args.user),
        target=args.target,
        since=args.since,
        limit=args.limit,
    )
    headers = ("id", "at", "actor", "action", "target", "detail")
    rows = [(e.id, e.at, e.actor_name, e.action, e.target, e.detail) for e in entries]
    emit(args, entries, lambda: format_table(headers, rows))


AUDIT_VERBS: dict[str, tuple[str, Verb]] = {
    "list": ("the audit log, newest first (admins)", _audit_list),
}
