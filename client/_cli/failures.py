"""What a failed command prints and its exit status: one sentence for a person, naming the
flag or environment variable to change, or with ``--json`` the machine form (an ErrorBody).

Every daemon error code the CLI words differently from the daemon is in :data:`SENTENCES`.
"""

from __future__ import annotations

import json
import re
import sys
from enum import IntEnum
from typing import Any

from pydantic import ValidationError

from specklab.schemas.api import ErrorBody

from .._errors import (
    ApiError,
    AuthenticationError,
    ModelDoesNotFit,
    PermissionDenied,
    ProtocolError,
    ServerError,
    StreamError,
    TransportError,
    WaitTimeout,
)
from .parsing import UsageError


class Exit(IntEnum):
    """The exit statuses of ``specklab`` (docs/client.md lists them)."""

    OK = 0
    #: The daemon refused the request, or the work failed (a model that does not fit ...).
    REFUSED = 1
    #: The command line is wrong: an unknown verb, a flag's value, a local file.
    USAGE = 2
    #: The daemon could not be reached, or failed (5xx).
    UNREACHABLE = 3
    #: No token, a token the daemon refuses, or a user who may not do this.
    NOT_ALLOWED = 4
    #: ``--timeout`` passed while waiting for a booking to start (the booking was cancelled).
    GAVE_UP = 5
    INTERRUPTED = 130


_TOKEN = "set SPECKLAB_TOKEN or pass --token"

#: The daemon's codes in the CLI's words; ``{message}`` is the daemon's own sentence.
SENTENCES: dict[str, str] = {
    "no_token": f"no API token: {_TOKEN}",
    # The daemon's own words here are about HTTP headers.
    "unauthorized": f"the daemon did not take the API token: {_TOKEN}",
    "invalid_token": f"the daemon does not know this API token: {_TOKEN} with a current one",
    "token_revoked": f"{{message}}: {_TOKEN} with a current one",
    "token_expired": f"{{message}}: {_TOKEN} with a current one",
    "read_only": "{message} (pass a user's --token to change things)",
    "admin_only": "{message}: pass an admin's --token",
    "device_not_found": "{message} (specklab device list shows the lab's devices)",
    "model_not_found": "{message} (specklab model list shows yours)",
    "booking_not_found": "{message} (specklab booking list shows yours)",
    "recording_not_found": "{message} (specklab recording list shows yours)",
    "token_not_found": "{message} (specklab token list shows yours)",
    "user_not_found": "{message} (specklab user list shows them)",
    "not_deployed": "{message}: deploy a model first (specklab deploy MODEL DEVICE)",
    "not_booked": "{message} (specklab book DEVICE --minutes N)",
    "invalid_patch": "--patch: {message}",
    "quota_exceeded": "{message} (specklab model delete ID, or a shorter --minutes)",
    "too_many_uploads": "{message}: wait for your compiles to finish",
    "daemon_stopping": "the daemon is shutting down; try again in a moment",
    "busy": "the daemon's database is busy; try again",
}

#: Request fields as the flags that set them, for the schemas' and the daemon's 422s.
FLAGS: dict[str, str] = {
    "minutes": "--minutes",
    "starts_at": "--start",
    "ends_at": "--until",
    "expires_in_days": "--days",
    "input_shape": "--input-shape",
    "chip_layers_ordering": "--layers",
    "monitor_layers": "--monitor",
    "config_patch": "--patch",
    "duration_s": "--duration",
    "speed": "--speed",
    "limit": "--limit",
    "role": "--role",
    "name": "NAME",
}

#: REST routes and pydantic's documentation links mean nothing to a person at a terminal.
_NOISE = re.compile(
    r"\s*\((?:GET|POST|PUT|PATCH|DELETE) /v1/[^)]*\)"
    r"|\s*For further information visit \S+"
)
_ASK_NEXT_FREE = re.compile(r"\(ask for the next free slot[^)]*\)")


def exit_status(error: BaseException) -> Exit:
    if isinstance(error, UsageError):
        return Exit.USAGE
    if isinstance(error, WaitTimeout):
        return Exit.GAVE_UP
    if isinstance(error, AuthenticationError | PermissionDenied):
        return Exit.NOT_ALLOWED
    if isinstance(error, TransportError | ProtocolError | ServerError):
        return Exit.UNREACHABLE
    if isinstance(error, ValidationError | ValueError | OSError):
        return Exit.USAGE
    return Exit.REFUSED


def sentence(error: BaseException) -> str:
    """One line for a person: what went wrong and which flag or variable to change."""
    if isinstance(error, ApiError):
        return _api_sentence(error)
    if isinstance(error, UsageError):
        return error.message
    if isinstance(error, TransportError):
        return f"{error} (set SPECKLAB_URL or pass --url)"
    if isinstance(error, StreamError):
        return _clean(error.message)
    if isinstance(error, ValidationError):
        return field_problems(error.errors())
    if isinstance(error, FileNotFoundError) and error.filename is not None:
        return f"{error.filename}: no such file"
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror}"
    return _clean(str(error))


def _api_sentence(error: ApiError) -> str:
    if isinstance(error, ServerError):
        return f"the daemon failed ({error.code}: {_clean(error.message)}); its log says more"
    message = _clean(error.message)
    if error.code == "invalid_request" and isinstance(error.detail, list):
        return field_problems(error.detail) or message
    if error.code == "booking_conflict":
        message = _ASK_NEXT_FREE.sub("(--next-free books that slot)", message)
    said = SENTENCES.get(error.code, "{message}").format(message=message)
    return said + _closest_hint(error.detail, said)


def field_problems(errors: Any) -> str:
    """pydantic's error list (a local ValidationError's, or a 422's detail) as sentences
    about flags: ``--minutes: Input should be greater than 0``."""
    problems = []
    for problem in errors:
        where = [str(part) for part in problem.get("loc", ()) if part not in ("body", "query")]
        field = where[-1] if where else ""
        flag = FLAGS.get(field, field)
        problems.append(f"{flag}: {_clean(problem.get('msg', ''))}" if flag else problem["msg"])
    return "; ".join(problems)


def _closest_hint(detail: Any, said: str) -> str:
    """The ids the daemon found closest to an unknown one, when its message does not say them."""
    if not isinstance(detail, dict) or "did you mean" in said:
        return ""
    closest = detail.get("closest") or detail.get("did_you_mean")
    if not isinstance(closest, list) or not closest:
        return ""
    return f"; did you mean {' or '.join(str(name) for name in closest)}?"


def _clean(message: str) -> str:
    return _NOISE.sub("", message).strip()


def error_body(error: BaseException) -> ErrorBody:
    """The machine form of any failure: the daemon's own body for its errors."""
    if isinstance(error, ApiError):
        return ErrorBody(code=error.code, message=error.message, detail=error.detail)
    code = getattr(error, "code", None)
    if isinstance(error, UsageError | StreamError) and code:
        return ErrorBody(code=code, message=sentence(error))
    kinds = {
        Exit.USAGE: "usage",
        Exit.GAVE_UP: "gave_up",
        Exit.UNREACHABLE: "unreachable",
        Exit.REFUSED: "failed",
    }
    return ErrorBody(code=kinds.get(exit_status(error), "failed"), message=sentence(error))


def report(error: BaseException, *, as_json: bool) -> Exit:
    """Print ``error`` on stderr for a person or, with ``--json``, as an ErrorBody."""
    if as_json:
        print(json.dumps(error_body(error).model_dump(mode="json")), file=sys.stderr)
        return exit_status(error)
    if isinstance(error, ModelDoesNotFit):
        from specklab.schemas.render import report_table

        if error.report is not None:
            print(report_table(error.report), file=sys.stderr)
        else:
            for problem in error.problems:
                print(f"{problem.severity} {problem.code}: {problem.message}", file=sys.stderr)
        print(f"specklab: {error.message}", file=sys.stderr)
        return Exit.REFUSED
    print(f"specklab: {sentence(error)}", file=sys.stderr)
    return exit_status(error)
