"""What both stream adapters share about the ``websockets`` library: options and its errors."""

from __future__ import annotations

import json
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from specklab.schemas.api import ErrorBody
from specklab.schemas.frames import MAX_FRAME_BYTES
from specklab.schemas.stream import CLOSE_ENDED

from ._errors import SpecklabError, StreamError, Timeout, TransportError, api_error

#: Seconds to wait for the WebSocket handshake.
OPEN_TIMEOUT = 30.0
#: Seconds to wait for a closed stream's last frames: they arrived before the close, so this
#: only bounds a closing handshake still under way.
LAST_FRAMES_S = 1.0


def connect_options(headers: dict[str, str]) -> dict[str, Any]:
    return {
        "additional_headers": headers,
        # permessage-deflate costs 8-50x on event frames, which are packed arrays already.
        "compression": None,
        "max_size": MAX_FRAME_BYTES,
        "open_timeout": OPEN_TIMEOUT,
    }


def _error_body(text: str, fallback_code: str) -> ErrorBody:
    try:
        return ErrorBody.model_validate(json.loads(text))
    except ValueError:
        return ErrorBody(code=fallback_code, message=text or "no reason given")


def connect_error(exc: Exception, url: str) -> SpecklabError:
    """A failed handshake as this package's error: refusals by the daemon become ApiErrors."""
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        body = exc.response.body.decode(errors="replace") if exc.response.body else ""
        return api_error(status, _error_body(body, f"http_{status}"))
    if isinstance(exc, TimeoutError):
        return Timeout(f"no WebSocket handshake with {url} within {OPEN_TIMEOUT} s")
    if isinstance(exc, InvalidHandshake | OSError):
        return TransportError(f"cannot open a stream to {url}: {exc}")
    raise exc


def closed_error(exc: ConnectionClosed, failure: StreamError | None) -> SpecklabError:
    """Why a stream closed under us.

    A stream the daemon refuses at its start (no booking, no deployment, unknown device) gets a
    fatal error frame, then the close code ``4000 + HTTP status``: that becomes the ApiError
    the same refusal gets over REST; so does a stream whose token was revoked or expired
    (:data:`~specklab.schemas.stream.CLOSE_TOKEN_INVALID`, 4401: an AuthenticationError). A
    stream the daemon ends (booking over, device unplugged, daemon stopping) closes with
    :data:`CLOSE_ENDED` after its fatal frame, which is the error.
    """
    close = exc.rcvd
    if close is not None and 4000 <= close.code < 5000 and close.code != CLOSE_ENDED:
        status = close.code - 4000
        if failure is not None:
            body = ErrorBody(code=failure.code, message=failure.message)
        else:
            body = ErrorBody(code=close.reason or f"ws_{close.code}", message=str(exc))
        return api_error(status, body)
    if failure is not None:
        return failure
    if close is not None and close.code == CLOSE_ENDED:
        return StreamError(close.reason or "ended", "the daemon ended the stream", fatal=True)
    return TransportError(f"the stream broke: {exc}")
