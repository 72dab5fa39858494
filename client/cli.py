"""The ``specklab`` command: client commands, plus the daemon's when the server is installed."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence

from ._cli import epilog
from ._cli import register as register_client_commands
from ._cli.failures import Exit, report
from ._cli.parsing import Parser, UsageError


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="specklab",
        description="A shared, remote lab for SynSense Speck devkits. "
        "Commands are groups of verbs: specklab GROUP VERB (specklab GROUP --help lists them).",
        epilog=epilog(),
        formatter_class=_Listing,
    )
    parser.add_argument("--version", action="version", version=f"specklab {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    register_client_commands(commands)
    if _server_installed():
        from specklab.server.cli import register

        register(commands)
    return parser


class _Listing(argparse.RawDescriptionHelpFormatter):
    """One line per group: the help column starts after the longest group name."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=20)
        # argparse sizes the column from the top-level options only, not the listed commands.
        self._action_max_length = 18


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("specklab")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def _server_installed() -> bool:
    return importlib.util.find_spec("fastapi") is not None


#: Options whose documented values start with a dash (``--monitor -1,dvs``): argparse takes
#: such a value for an option unless it looks like a plain negative number.
_DASHED_VALUES = ("--monitor",)


def _join_dashed_values(argv: Sequence[str]) -> list[str]:
    """``--monitor -1,dvs`` as ``--monitor=-1,dvs``, which argparse reads as meant."""
    out: list[str] = []
    pending = False
    for arg in argv:
        if pending and arg.startswith("-"):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
        pending = arg in _DASHED_VALUES
    return out


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The parsed command line; a wrong one is reported as one sentence and exits 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return parser.parse_args(_join_dashed_values(argv))
    except UsageError as error:
        raise SystemExit(report(error, as_json="--json" in argv)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return Exit.USAGE
    return int(handler(args))


if __name__ == "__main__":
    sys.exit(main())
