"""The ``specklab`` command: client commands, plus the daemon's when the server is installed."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence

from ._commands import register as register_client_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="specklab", description="A shared, remote lab for SynSense Speck devkits."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    register_client_commands(commands)
    if _server_installed():
        from specklab.server.cli import register

        register(commands)
    return parser


def _server_installed() -> bool:
    return importlib.util.find_spec("fastapi") is not None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
