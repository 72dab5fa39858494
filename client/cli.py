"""The ``specklab`` command: client commands, plus the daemon's when the server is installed."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence

from ._commands import register as register_client_commands
from ._evaluate_command import register_evaluate


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="specklab", description="A shared, remote lab for SynSense Speck devkits."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    register_client_commands(commands)
    register_evaluate(commands)
    if _server_installed():
        from specklab.server.cli import register

        register(commands)
    return parser


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
    return parser.parse_args(_join_dashed_values(sys.argv[1:] if argv is None else argv))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
