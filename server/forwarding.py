"""Any host serves any user: the requests on one device (``/v1/devices/{ref}`` and below, REST
and WebSocket) reach the daemon that serves it, whichever daemon of the lab they land on.

- ``ref`` may be the device's id or its name on its host (``speck2fdevkit:0``); it is resolved
  once, here, by ``booking.lab.resolve_device`` (the rule is in ``devices/naming.py``), and the
  request goes on with the id in its path.
- What does not depend on the device is checked here first: a caller without a valid token
  gets this host's 401, an observer's write its 403, whichever host serves the device.
- A device of another live host: the request is forwarded to that host's URL as it came, the
  caller's credentials included, so that host authenticates the token and checks the booking
  against the shared database exactly as for a caller of its own. A forwarded request carries
  ``x-specklab-forwarded-by`` and is never forwarded again (no loops when hosts disagree).
- A device whose host is down: REST calls below the device answer 409 ``device_offline``
  (``GET /v1/devices/{id}`` itself still answers, with status ``offline``), streams are
  refused with a fatal ``device_offline`` frame and close code 4409.
- A stream whose host dies mid-stream ends with a fatal ``device_offline`` frame and close code
  4410, as a stream whose device goes offline does (``docs/streams.md``).
- Calls that name their device in a JSON body (``POST /v1/recordings``, ``POST
  /v1/recordings/{id}/replay``) are routed the same way, by the body's ``device_id`` (resolved
  to the id in the body that goes on).
- ``x-specklab-forwarded-by`` grants nothing: it only stops a request from being forwarded
  again, and the host that answers checks the token and the booking itself, whoever sent it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import httpx
import websockets
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from specklab.schemas.errors import DomainError
from specklab.schemas.frames import ErrorFrame, encode
from specklab.schemas.stream import CLOSE_ENDED

from .api.errors import json_error_response, stream_error
from .api.live import offered_token
from .auth.dependencies import SAFE_METHODS, bearer_token
from .auth.ownership import get_owned
from .auth.principal import Principal
from .booking import lab
from .devices.errors import DeviceError, DeviceOffline
from .storage import utcnow
from .storage.tables import RecordingRecord

log = logging.getLogger("specklab.forwarding")

FORWARDED_BY = "x-specklab-forwarded-by"
_DEVICE_PATH = re.compile(r"^/v1/devices/(?P<ref>[^/]+)(?P<rest>/.*)?$")
#: POST routes whose JSON body names the device (``device_id``).
_BODY_PATH = re.compile(r"^/v1/recordings(?:/(?P<recording>[^/]+)/replay)?$")
#: Bodies read to find their device: these requests are a few hundred bytes; a larger body
#: goes to this host's endpoint, which answers it.
_MAX_ROUTED_BODY = 64 * 1024
#: Connection-level headers: each hop has its own.
_HOP_HEADERS = frozenset(
    {
        "connection",
        "host",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: WebSocket handshake headers the upstream connection makes itself.
_WS_HEADERS = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "origin"}
)
#: The daemon's frame limit plus room, as its own transport reads (``docs/architecture.md``).
_MAX_FRAME = 80 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Route:
    device_id: str
    host_name: str
    url: str
    online: bool
    #: The token's user; None without a valid token.
    caller: Principal | None


class DeviceRouting:
    """ASGI middleware: resolves device names and forwards calls on other hosts' devices."""

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        self.state = state
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._closing_at_shutdown(send))
            return
        # Mounted under a prefix (behind a proxy), the app's own paths follow ``root_path``.
        root = scope.get("root_path", "")
        path = scope.get("path", "")
        path = path.removeprefix(root) if path.startswith(root) else path
        match = _DEVICE_PATH.match(path)
        body_path = _BODY_PATH.match(path)
        if scope["type"] == "http" and scope["method"] == "POST" and body_path:
            await self._route_by_body(scope, receive, send, body_path["recording"])
            return
        if scope["type"] not in ("http", "websocket") or match is None:
            await self.app(scope, receive, send)
            return
        route = await self._route(scope, unquote(match["ref"]))
        if route is None:  # unknown here: the endpoint answers device_not_found
            await self.app(scope, receive, send)
            return
        path = f"{root}/v1/devices/{route.device_id}{match['rest'] or ''}"
        scope = {**scope, "path": path, "raw_path": quote(path).encode()}
        here = route.host_name == self.state.settings.host_name
        if here or _refused_here(scope, route.caller) or _header(scope, FORWARDED_BY) is not None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            if route.online:
                await _forward_websocket(scope, receive, send, route, self.state.settings.host_name)
            else:
                await receive()  # websocket.connect
                await _refuse(scope, send, receive, _host_down(route))
        elif route.online and await self._forward_http(scope, receive, send, route):
            pass
        elif match["rest"] is None:  # the device's status: answered here, from the database
            await self.app(scope, receive, send)
        else:
            await _refuse(scope, send, receive, _host_down(route))

    async def _route_by_body(
        self, scope: Scope, receive: Receive, send: Send, recording: str | None
    ) -> None:
        """A call that names its device in its JSON body: forwarded to the device's host with
        the device's id in the body, else answered here. A replay of a recording the caller
        cannot see is answered here (404), whatever the device's host."""
        body, complete = await _read_body(receive)
        document = _json_object(body) if complete else None
        ref = None if document is None else document.get("device_id")
        route = await self._route(scope, ref) if isinstance(ref, str) and ref else None
        if (
            document is None
            or route is None
            or route.host_name == self.state.settings.host_name
            or _refused_here(scope, route.caller)
            or _header(scope, FORWARDED_BY) is not None
            or (recording is not None and not await self._sees_recording(route.caller, recording))
        ):
            await self.app(scope, _replaying(body, complete, receive), send)
            return
        content = json.dumps({**document, "device_id": route.device_id}).encode()
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(content)).encode())]}
        if not (route.online and await self._forward_http(scope, receive, send, route, content)):
            await _refuse(scope, send, receive, _host_down(route))

    async def _sees_recording(self, caller: Principal | None, recording: str) -> bool:
        def visible(session: Session) -> bool:
            if caller is None:
                return False
            try:
                get_owned(session, RecordingRecord, int(recording), caller, what="recording")
            except (DomainError, ValueError):
                return False
            return True

        try:
            return bool(await self.state.db.run(visible))
        except SQLAlchemyError:  # as for devices: the endpoint answers, with its own checks
            log.exception("looking up recording %r failed", recording)
            return False

    async def _route(self, scope: Scope, ref: str) -> Route | None:
        manager = getattr(self.state, "devices", None)
        if manager is not None:
            with contextlib.suppress(DeviceError):
                description = manager.state(ref).description
                if description.id == ref:  # this host's device, by id: no database needed
                    return Route(ref, description.host, "", online=True, caller=None)
        db = getattr(self.state, "db", None)
        if db is None:
            return None
        try:
            return await db.run(lambda session: self._resolve(session, scope, ref))
        except SQLAlchemyError:
            log.exception("resolving device %r failed", ref)
            return None

    def _resolve(self, session: Session, scope: Scope, ref: str) -> Route | None:
        now = utcnow()
        stale_after = self.state.booking_policy.host_stale_after
        caller = _caller(self.state, scope)
        row = lab.resolve_device(
            session,
            ref,
            user_id=None if caller is None else caller.id,
            now=now,
            stale_after=stale_after,
        )
        if row is None:
            return None
        online = row.present and row.host.last_seen_at > now - stale_after
        return Route(row.id, row.host_name, row.host.url, online, caller)

    def _closing_at_shutdown(self, send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete" and self._client is not None:
                await self._client.aclose()
                self._client = None
            await send(message)

        return sending

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            timeout = httpx.Timeout(10.0, read=None, write=None, pool=None)
            self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        return self._client

    async def _forward_http(
        self, scope: Scope, receive: Receive, send: Send, route: Route, body: bytes | None = None
    ) -> bool:
        """Relay the request (``body`` when it was read already) and its answer; False when the
        host could not be reached."""
        headers = _forwarded_headers(scope, self.state.settings.host_name)
        url = _upstream_url(route.url, scope)
        content = _request_body(receive) if body is None else body
        request = self.client().build_request(
            scope["method"], url, headers=headers, content=content
        )
        try:
            response = await self.client().send(request, stream=True)
        except httpx.HTTPError as exc:
            log.warning("forwarding to %s failed: %s", route.host_name, exc)
            return False
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (name, value)
                        for name, value in response.headers.raw
                        if name.decode("latin-1").lower() not in _HOP_HEADERS
                    ],
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()
        return True


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode("latin-1")
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None


def _refused_here(scope: Scope, caller: Principal | None) -> bool:
    """What this host refuses itself, whichever host serves the device: a caller without a
    valid token (401), an observer's write (403)."""
    write = scope["type"] == "http" and scope["method"] not in SAFE_METHODS
    return caller is None or (write and not caller.can_write)


def _caller(state: Any, scope: Scope) -> Principal | None:
    """The token's user (for name resolution and the checks made here); None without a
    valid token. The token is taken exactly as the endpoint takes it (header, else query; the
    live view's subprotocol first), so that both hosts judge the same token."""
    conn = HTTPConnection(scope)
    live = scope["type"] == "websocket" and scope["path"].endswith("/live")
    try:
        return state.auth.authenticate(offered_token(conn) if live else bearer_token(conn))
    except DomainError:
        return None


def _host_down(route: Route) -> DeviceOffline:
    return DeviceOffline(
        f"device {route.device_id} is offline: its host {route.host_name} is not answering"
    )


def _forwarded_headers(scope: Scope, host_name: str) -> list[tuple[str, str]]:
    headers = [
        (key.decode("latin-1"), value.decode("latin-1"))
        for key, value in scope["headers"]
        if key.decode("latin-1").lower() not in _HOP_HEADERS | _WS_HEADERS
        and not key.lower().startswith(b"sec-websocket-")
    ]
    return [*headers, (FORWARDED_BY, host_name)]


def _upstream_url(base: str, scope: Scope) -> str:
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{base.rstrip('/')}{quote(scope['path'])}{'?' + query if query else ''}"


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The request's body up to ``_MAX_ROUTED_BODY``, and whether that is all of it."""
    chunks: list[bytes] = []
    size = 0
    while size <= _MAX_ROUTED_BODY:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True
    return b"".join(chunks), False


def _replaying(body: bytes, complete: bool, receive: Receive) -> Receive:
    """``receive`` with ``body``, read already, given back first."""
    pending = [{"type": "http.request", "body": body, "more_body": not complete}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def _refuse(scope: Scope, send: Send, receive: Receive, error: DomainError) -> None:
    """An ErrorBody answer, or for a WebSocket (connect received) a refused stream start."""
    if scope["type"] == "http":
        await json_error_response(error.status, error.body)(scope, receive, send)
        return
    frame, close_code = stream_error(error)
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "bytes": encode(frame)})
    await send({"type": "websocket.close", "code": close_code, "reason": frame.code})


async def _forward_websocket(
    scope: Scope, receive: Receive, send: Send, route: Route, host_name: str
) -> None:
    """Relay a stream to the device's host, message by message, and its close as it came."""
    await receive()  # websocket.connect
    url = "ws" + _upstream_url(route.url, scope).removeprefix("http")
    # The live view's subprotocols carry its token: offered upstream as they came.
    offered = [p.strip() for p in (_header(scope, "sec-websocket-protocol") or "").split(",")]
    try:
        upstream = await websockets.connect(
            url,
            additional_headers=_forwarded_headers(scope, host_name),
            subprotocols=[Subprotocol(p) for p in offered if p] or None,
            max_size=_MAX_FRAME,
            compression=None,
            open_timeout=10,
        )
    except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
        log.warning("forwarding a stream to %s failed: %s", route.host_name, exc)
        await _refuse(scope, send, receive, _host_down(route))
        return
    await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
    async with upstream:
        uplink = asyncio.create_task(_uplink(receive, upstream))
        try:
            await _downlink(upstream, send, route)
        finally:
            uplink.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await uplink


async def _uplink(receive: Receive, upstream: ClientConnection) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            await upstream.close(code=message.get("code", 1000))
            return
        data = message.get("bytes")
        await upstream.send(data if data is not None else message.get("text", ""))


async def _downlink(upstream: ClientConnection, send: Send, route: Route) -> None:
    try:
        async for data in upstream:
            key = "bytes" if isinstance(data, bytes) else "text"
            await send({"type": "websocket.send", key: data})
    except websockets.ConnectionClosedError:
        pass
    close = upstream.protocol.close_rcvd
    with contextlib.suppress(OSError, RuntimeError):  # the client may be gone already
        if close is None:  # no close frame: the host died or the network broke
            error = DeviceOffline(
                f"device {route.device_id} went offline (its host {route.host_name} stopped "
                "answering); the stream is ended"
            )
            frame = encode(ErrorFrame(error.code, error.message, fatal=True))
            await send({"type": "websocket.send", "bytes": frame})
            await send({"type": "websocket.close", "code": CLOSE_ENDED, "reason": error.code})
        else:
            await send({"type": "websocket.close", "code": close.code, "reason": close.reason})
