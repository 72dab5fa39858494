"""The live view's WebSocket: sensor events binned into images and output spikes into raster
points, a few dozen frames a second, for people watching (the dashboard), not for programs.

``WS /v1/devices/{id}/live[?sensor=true]``. Browsers cannot set headers on a WebSocket, and a
query string ends up in access logs, so the token travels as a subprotocol: the client offers
``specklab.live`` and ``bearer.<token>``; the server answers ``specklab.live``. Programs may send
``Authorization: Bearer`` instead.

Two roles, decided at the start:

- **holder** (the caller holds the running booking) with ``sensor=true``: the sensor is on for as
  long as the view is open, exactly as on ``/dvs`` (``Deployments.sensor_hub``); the client sends
  ``{"op": "heartbeat"}`` text messages to keep the booking's lease.
- **spectator** (anyone else, observers and other users included; the holder without
  ``sensor``): read-only. It attaches to the device's output only while the holder's own
  streams, DVS views or recordings consume it, and leaves as soon as they stop (checked every
  frame), so it never starts the device's pump, never turns anything on, and never holds the
  device's stopwatch. Forward batches go to their caller only and are not seen.

Messages from the server: text JSON ``{"type": "status" | "error", ...}`` and binary frames:
``u32 little-endian header length``, the header (JSON: ``seq``, ``t_us``, ``dvs``, ``layers``),
then when ``dvs`` is not null the off and on event counts of each pixel (two ``height x width``
byte images, row-major, saturated at 255).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import time
import weakref
from collections.abc import Iterator

import anyio
from fastapi import APIRouter, WebSocket
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect, WebSocketState

from specklab.schemas.errors import DomainError

from ..auth.accounts import Authenticator
from ..auth.dependencies import bearer_token
from ..auth.principal import Principal
from ..dashboard.binning import DvsBinner, RasterBinner, raster_layers
from ..deployments import Deployments, DeviceHub, EndReason
from .errors import stream_error
from .tasks import run_until_first_done

log = logging.getLogger("specklab.live")
router = APIRouter(prefix="/v1/devices/{device_id}", tags=["live"])

SUBPROTOCOL = "specklab.live"
TOKEN_PREFIX = "bearer."
#: 30 frames a second: above the 25 a moving picture needs, with room for a busy machine.
FRAME_INTERVAL_S = 1 / 30
#: How often a spectator looks for a stream to watch while the device is idle.
IDLE_POLL_S = 0.25


#: Spectators reading each deployment's output now; its other consumers are its holder's.
_spectators: weakref.WeakKeyDictionary[DeviceHub, int] = weakref.WeakKeyDictionary()


def _holder_consumers(hub: DeviceHub) -> int:
    return hub.stats()["consumers"] - _spectators.get(hub, 0)


@contextlib.contextmanager
def _counted_as_spectator(hub: DeviceHub, spectator: bool) -> Iterator[None]:
    _spectators[hub] = _spectators.get(hub, 0) + spectator
    try:
        yield
    finally:
        _spectators[hub] -= spectator


def offered_token(conn: HTTPConnection) -> str | None:
    offered = [p.strip() for p in conn.headers.get("sec-websocket-protocol", "").split(",")]
    for protocol in offered:
        if protocol.startswith(TOKEN_PREFIX):
            return protocol[len(TOKEN_PREFIX) :]
    return bearer_token(conn)


async def _authenticate(websocket: WebSocket) -> Principal:
    authenticator: Authenticator = websocket.app.state.auth
    token = offered_token(websocket)
    return await anyio.to_thread.run_sync(authenticator.authenticate, token)


class _View:
    """One viewer: the socket, and the binners of what it is shown."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.seq = 0
        self._status: dict[str, object] | None = None

    async def status(self, **status: object) -> None:
        if status != self._status:
            self._status = status
            await self.websocket.send_text(json.dumps({"type": "status", **status}))

    async def error(self, code: str, message: str, close_code: int) -> None:
        await self.websocket.send_text(
            json.dumps({"type": "error", "code": code, "message": message, "fatal": True})
        )
        await self.websocket.close(code=close_code, reason=code)

    async def watch(self, hub: DeviceHub, *, spectator: bool) -> EndReason | None:
        """Frames of ``hub``'s output until it ends, or (``spectator``) until its holder's
        consumers are gone."""
        dvs = hub.config.dvs_layer
        # Raw sensor events leave the chip only with the raw monitor on (the holder's choice).
        raw = dvs is not None and dvs.raw_monitor_enable
        sensor = DvsBinner(dvs.input_size.x, dvs.input_size.y) if raw and dvs else None
        raster = RasterBinner(raster_layers(hub.config))
        end: EndReason | None = None
        async with hub.subscribe() as subscription:

            async def read() -> None:
                nonlocal end
                while True:
                    item = await subscription.get()
                    if isinstance(item, EndReason):
                        end = item
                        return
                    if sensor is not None:
                        sensor.add(item.dvs)
                    raster.add(item.spikes)

            reader = asyncio.ensure_future(read())
            try:
                with _counted_as_spectator(hub, spectator):
                    last = tick = time.monotonic()
                    while not reader.done():
                        # Ticks on a schedule, so sending a frame does not slow the rate.
                        tick = max(tick + FRAME_INTERVAL_S, time.monotonic())
                        await asyncio.sleep(tick - time.monotonic())
                        now = time.monotonic()
                        await self._send_frame(sensor, raster, now - last, subscription.dropped)
                        last = now
                        if spectator and _holder_consumers(hub) == 0:
                            return None
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        return end

    async def _send_frame(
        self, sensor: DvsBinner | None, raster: RasterBinner, seconds: float, dropped: int
    ) -> None:
        self.seq += 1
        header: dict[str, object] = {"seq": self.seq, "seconds": seconds, "dropped": dropped}
        image = b""
        if sensor is not None:
            events, image = sensor.take()
            header["dvs"] = {
                "width": sensor.width,
                "height": sensor.height,
                "events": events,
                "rate_hz": events / seconds if seconds > 0 else 0.0,
            }
        else:
            header["dvs"] = None
        header["layers"] = raster.take(seconds)
        encoded = json.dumps(header).encode()
        await self.websocket.send_bytes(struct.pack("<I", len(encoded)) + encoded + image)


async def _holds_booking(deployments: Deployments, user: Principal, device_id: str) -> bool:
    if not user.can_write:
        return False
    try:
        await deployments.require_booking(user, device_id)
    except DomainError:
        return False
    return True


@router.websocket("/live")
async def live_view(websocket: WebSocket, device_id: str, sensor: bool = False) -> None:
    # A bad token is refused at the handshake (401), as on every other route.
    user = await _authenticate(websocket)
    offered = websocket.headers.get("sec-websocket-protocol", "")
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    view = _View(websocket)
    deployments: Deployments = websocket.app.state.deployments
    try:
        deployments.devices.state(device_id)  # unknown ids: device_not_found
        if sensor and await _holds_booking(deployments, user, device_id):
            await _hold(view, deployments, user, device_id)
        else:
            await _spectate(view, deployments, device_id)
    except DomainError as exc:
        frame, close_code = stream_error(exc)
        await view.error(frame.code, frame.message, close_code)
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("live view of %s failed", device_id)
        with contextlib.suppress(Exception):
            message = f"the live view of {device_id} failed on the server; the failure is logged"
            await view.error("internal_error", message, 1011)
    finally:
        if websocket.client_state is not WebSocketState.DISCONNECTED:
            with contextlib.suppress(RuntimeError):
                await websocket.close()


async def _until_client_leaves(
    websocket: WebSocket, on_heartbeat: asyncio.Event | None = None
) -> None:
    """Reads the client's messages: heartbeats (``on_heartbeat`` is set), nothing else counts."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if on_heartbeat is not None and _is_heartbeat(message.get("text")):
            on_heartbeat.set()


def _is_heartbeat(text: str | None) -> bool:
    try:
        request = json.loads(text or "")
    except ValueError:
        return False
    return isinstance(request, dict) and request.get("op") == "heartbeat"


async def _hold(view: _View, deployments: Deployments, user: Principal, device_id: str) -> None:
    heartbeat = asyncio.Event()
    async with deployments.sensor_hub(user, device_id, raw=True) as hub:
        await deployments.heartbeat(user, hub)
        # As on /dvs: the device's time runs from here (unless others consume it already).
        await hub.restart_stopwatch()
        await view.status(role="holder", state="watching", deployment=hub.deployment.summary)
        ends: list[EndReason] = []

        async def watch() -> None:
            if end := await view.watch(hub, spectator=False):
                ends.append(end)

        async def renew() -> None:
            while True:
                await heartbeat.wait()
                heartbeat.clear()
                await deployments.heartbeat(user, hub)

        async with hub.sensor():
            await run_until_first_done(
                _until_client_leaves(view.websocket, heartbeat), watch(), renew()
            )
            if ends:
                await view.error(ends[0].code, ends[0].message, 4410)


async def _spectate(view: _View, deployments: Deployments, device_id: str) -> None:
    async def follow() -> None:
        while True:
            hub = deployments.live_hub(device_id)
            if hub is None or _holder_consumers(hub) == 0:
                await view.status(role="spectator", state="idle", deployment=None)
                await asyncio.sleep(IDLE_POLL_S)
                continue
            await view.status(role="spectator", state="watching", deployment=hub.deployment.summary)
            await view.watch(hub, spectator=True)

    # A failure of the view ends it (reported by the caller).
    await run_until_first_done(_until_client_leaves(view.websocket), follow())
