"""Reading the command line: the parser that speaks in sentences, value types, shared options.

Module-level imports stay in the standard library so that ``specklab --help`` starts fast.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

#: Declares one verb's arguments on its parser and sets its ``handler``.
Verb = Callable[[argparse.ArgumentParser], None]


class UsageError(Exception):
    """The command line is wrong (exit 2): ``message`` says what to change."""

    def __init__(self, message: str, code: str = "usage") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are raised as :class:`UsageError` sentences naming the
    flag ("--minutes must be a whole number (specklab book --help)") instead of printed."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{_sentence(message)} (see {self.prog} --help)")


_ARGUMENT = re.compile(r"argument (?P<names>[^:]+): (?P<problem>.*)", re.DOTALL)
_CHOICE = re.compile(r"invalid choice: (?P<value>'[^']*')(?: \(choose from (?P<choices>.*)\))?")


def _sentence(message: str) -> str:
    """argparse's message as a sentence that starts with the flag it is about."""
    if message.startswith("unrecognized arguments: "):
        return f"unknown option or extra argument: {message.partition(': ')[2]}"
    if message.startswith("the following arguments are required: "):
        return f"missing {message.partition(': ')[2]}"
    matched = _ARGUMENT.fullmatch(message)
    if matched is None:
        return message
    name = matched["names"].split("/")[0]
    problem = matched["problem"]
    if choice := _CHOICE.fullmatch(problem):
        what = "command" if name in ("COMMAND", "VERB") else name
        choices = f": one of {choice['choices']}" if choice["choices"] else ""
        return f"{choice['value']} is no {what}{choices}"
    return f"{name} {problem}"


def whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None


def positive(text: str) -> int:
    number = whole(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return number


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text!r}")
    return value


def when(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time such as 2030-01-01T10:00"
        ) from None
    return moment if moment.tzinfo else moment.astimezone()


def shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not C,H,W such as 1,28,28") from None


def cores(text: str) -> list[int] | str:
    """``--layers``: "auto", or the cores of the model's layers in order."""
    if text == "auto":
        return text
    try:
        return [int(core) for core in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not 'auto' or comma-separated cores such as 0,3,5"
        ) from None


def monitor_layers(text: str) -> list[int | str] | str:
    if text == "all":
        return text
    try:
        return [part if part == "dvs" else int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not 'all' or comma-separated layer indices and 'dvs'"
        ) from None


def common_options(nested: bool) -> argparse.ArgumentParser:
    """``--url``, ``--token`` and ``--json``; accepted after a verb too (``token list
    --json``), where they must not reset what was given before it."""
    common = argparse.ArgumentParser(add_help=False)
    keep: dict[str, Any] = {"default": argparse.SUPPRESS} if nested else {}
    url_help = "the daemon (default: SPECKLAB_URL or http://127.0.0.1:8765)"
    common.add_argument("--url", help=url_help, **keep)
    common.add_argument("--token", help="API token (default: SPECKLAB_TOKEN)", **keep)
    common.add_argument(
        "--json", action="store_true", help="print JSON (errors: the daemon's ErrorBody)", **keep
    )
    return common


def read_json_file(flag: str, path: Path) -> Any:
    """A JSON file given with ``flag``; an unreadable one is the command line's fault."""
    import json

    try:
        text = path.read_text()
    except OSError as error:
        raise UsageError(f"{flag} file {path} cannot be read: {error.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        raise UsageError(f"{flag} file {path} is not valid JSON ({where})") from None
