"""The lab's web dashboard: static pages served at ``/`` that use only the public API.

Everything the browser loads ships in this package (``static/``: plain ES modules and CSS, no
build step); :func:`install` adds the pages, the dashboard's endpoints (``overview``, and the
live view in ``api/live.py``) and the security headers to the app.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..api import live
from ..auth.dependencies import require_user
from . import overview

STATIC = Path(__file__).parent / "static"

#: No inline script or style, nothing from another origin, never inside another site's frame.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def install(app: FastAPI) -> None:
    app.include_router(overview.router, dependencies=[Depends(require_user)])
    # The live view authenticates itself: its token comes as a subprotocol (see api/live.py).
    app.include_router(live.router)

    # The pages themselves are public (a browser cannot send a token for them); all they
    # show comes from the API, behind the token.
    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.router.add_route("/", index, include_in_schema=False)
    app.mount("/dashboard", StaticFiles(directory=STATIC), name="dashboard")

    app.add_middleware(SecurityHeaders)


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every HTTP answer that does not set them itself.

    Pure ASGI rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` runs
    the request in a task of its own, which turns uvicorn's cancel at the end of the shutdown
    grace into a cancel the endpoint cannot answer (an upload then got no 503).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
