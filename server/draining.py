"""Graceful shutdown for new work: once the daemon starts stopping, new requests get a 503
``daemon_stopping`` ErrorBody (and new WebSockets close with 4503, reason ``daemon_stopping``,
the code every refused stream start uses: 4000 + the HTTP status) instead
of a dropped connection or a half-done answer; work already in flight finishes.

Uvicorn stops accepting connections at once, but requests can still arrive on connections it
has open (keep-alive, pipelining) while in-flight ones finish; the server calls
:func:`begin_shutdown` from its signal handling, the lifespan's end is the last resort.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from specklab.schemas.api import ErrorBody

#: Still answered while stopping: liveness and metrics (operators watch the shutdown).
_ALWAYS = ("/v1/health/live", "/metrics")
#: WebSocket close code of a stream refused because the daemon stops (docs/streams.md).
CLOSE_DAEMON_STOPPING = 4503


def begin_shutdown(state: Any) -> None:
    state.stopping = True


def is_stopping(state: Any) -> bool:
    return getattr(state, "stopping", False)


class Draining:
    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] not in ("http", "websocket")
            or not is_stopping(self.state)
            or scope["path"] in _ALWAYS
        ):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send(
                {
                    "type": "websocket.close",
                    "code": CLOSE_DAEMON_STOPPING,
                    "reason": "daemon_stopping",
                }
            )
            return
        body = ErrorBody(
            code="daemon_stopping", message="the daemon is shutting down; try again shortly"
        )
        response = JSONResponse(body.model_dump(), 503, {"Retry-After": "5", "Connection": "close"})
        await response(scope, receive, send)
