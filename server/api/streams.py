"""Event streams over WebSockets: spikes in and out of a deployment, and live DVS events.

Each endpoint is a short adapter around :class:`~specklab.schemas.stream.ServerStream` (the
sans-I/O session): messages in, device calls, frames out through one writer. A stream the
server refuses gets a fatal error frame and the close code 4000 + the HTTP status; one it ends
(booking preempted or over, device unplugged, deployment removed) gets a fatal error frame
and close code 4410. Bad frames get non-fatal error frames and the stream goes on.

Continuous outputs are flushed as the device produces them (the pump reads every ~1 ms),
in frames of at most 64 KiB; a consumer that falls behind loses outputs, counted in the
``dropped`` of its stats frames (see ``deployments.hub``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import numpy as np
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from specklab.schemas.events import DVS_CORE, SPIKE_DTYPE, EventKind
from specklab.schemas.frames import ErrorFrame, encode
from specklab.schemas.stream import (
    CLOSE_ENDED,
    ControlRequest,
    InputBatch,
    ServerStream,
    StreamMode,
    refusal_close_code,
)

from ..auth.principal import Principal
from ..deployments import Deployments, DeviceHub, EndReason, OutputSubscription
from ..devices.base import DeviceOutput
from ..devices.errors import DeviceError
from ..errors import ApiError
from .deps import CurrentUser, DeploymentsDep

log = logging.getLogger("specklab.streams")
router = APIRouter(prefix="/v1/devices/{device_id}", tags=["streams"])

#: Continuous outputs go out in frames of at most 64 KiB.
CONTINUOUS_FRAME_EVENTS = 64 * 1024 // SPIKE_DTYPE.itemsize
STATS_INTERVAL_S = 1.0

OutputSelector = Callable[[DeviceOutput], list[tuple[EventKind, np.ndarray]]]


class _Connection:
    """The one writer of a WebSocket, and the stream state it serves."""

    def __init__(self, websocket: WebSocket, stream: ServerStream, hub: DeviceHub) -> None:
        self.websocket = websocket
        self.stream = stream
        self.hub = hub
        self.subscription: OutputSubscription | None = None
        self._lock = asyncio.Lock()

        self._sensor: contextlib.AsyncExitStack | None = None

    async def start_sensor(self) -> None:
        if self._sensor is None:
            self._sensor = contextlib.AsyncExitStack()
            await self._sensor.enter_async_context(self.hub.sensor())

    async def stop_sensor(self) -> None:
        if self._sensor is not None:
            sensor, self._sensor = self._sensor, None
            await sensor.aclose()

    async def flush(self) -> None:
        async with self._lock:
            for message in self.stream.data_to_send():
                await self.websocket.send_bytes(message)

    async def send_stats(self) -> None:
        extra: dict[str, int | float] = dict(self.hub.stats())
        if self.subscription is not None:
            extra["dropped"] = self.subscription.dropped
            extra["queued_events"] = self.subscription.queued_events
        self.stream.send_stats(extra)
        await self.flush()


async def _refuse(websocket: WebSocket, exc: ApiError | DeviceError) -> None:
    if isinstance(exc, ApiError):
        status, frame = (
            exc.status,
            ErrorFrame(exc.body.code, exc.body.message, True, exc.body.detail),
        )
    else:
        status, frame = exc.http_status, ErrorFrame(exc.code, exc.message, fatal=True)
    await websocket.send_bytes(encode(frame))
    await websocket.close(code=refusal_close_code(status), reason=frame.code)


async def _control(
    conn: _Connection, request: ControlRequest, heartbeat: Callable[[], Awaitable[None]]
) -> None:
    if request.op == "heartbeat":
        await heartbeat()
    elif request.op == "reset_states":
        await conn.hub.reset_states()
    elif request.op == "start_sensor":
        await conn.start_sensor()
    elif request.op == "stop_sensor":
        await conn.stop_sensor()
    elif request.op == "stats":
        await conn.send_stats()


async def _receive_loop(
    conn: _Connection,
    on_events: Callable[[InputBatch], Awaitable[None]],
    heartbeat: Callable[[], Awaitable[None]],
) -> None:
    while True:
        message = await conn.websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is None:
            conn.stream.send_error("malformed", "frames are binary messages (msgpack), not text")
            requests = []
        else:
            requests = conn.stream.receive_data(data)
        for request in requests:
            try:
                if isinstance(request, InputBatch):
                    await on_events(request)
                else:
                    await _control(conn, request, heartbeat)
            except (ApiError, DeviceError) as exc:
                if conn.hub.ended:
                    return  # the end watcher tells the client why
                if isinstance(exc, ApiError):
                    conn.stream.send_error(exc.body.code, exc.body.message)
                else:
                    conn.stream.send_error(exc.code, exc.message)
        await conn.flush()


async def _output_loop(conn: _Connection, select: OutputSelector) -> None:
    assert conn.subscription is not None
    next_stats = time.monotonic() + STATS_INTERVAL_S
    while True:
        item = await conn.subscription.get()
        if isinstance(item, EndReason):
            return
        for kind, events in select(item):
            conn.stream.send_events(kind, events)
        await conn.flush()
        if time.monotonic() >= next_stats:
            next_stats = time.monotonic() + STATS_INTERVAL_S
            await conn.send_stats()


async def _end_watch(conn: _Connection) -> None:
    await conn.hub.ended_event.wait()
    reason = conn.hub.end_reason
    assert reason is not None
    conn.stream.send_error(reason.code, reason.message, fatal=True)
    await conn.flush()
    await conn.websocket.close(code=CLOSE_ENDED, reason=reason.code)


async def _serve_continuously(
    conn: _Connection,
    on_events: Callable[[InputBatch], Awaitable[None]],
    heartbeat: Callable[[], Awaitable[None]],
    select: OutputSelector,
    in_use: Awaitable[None],
) -> None:
    """A continuous session: the device's time restarts, inputs go to ``on_events`` and the
    selected outputs flow out as they come, until the client leaves or the deployment ends."""
    await conn.hub.restart_stopwatch()
    async with conn.hub.subscribe() as subscription:
        conn.subscription = subscription
        await _run_until_first_done(
            _receive_loop(conn, on_events, heartbeat),
            _output_loop(conn, select),
            _end_watch(conn),
            in_use,
        )


async def _run_until_first_done(*jobs: Awaitable[None]) -> None:
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            exc = task.exception()
            if exc is not None and not isinstance(exc, WebSocketDisconnect):
                raise exc
    finally:
        for task in tasks:
            task.cancel()
        # Reaping the jobs must finish even while this task is itself being cancelled (a test
        # client cancels the app as soon as it has closed; servers do at shutdown): cancelled
        # inside this wait, the CancelledError escaped the caller's cancel scope.
        with anyio.CancelScope(shield=True):
            await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def _reported(websocket: WebSocket, device_id: str) -> AsyncIterator[None]:
    """An unexpected failure ends the stream with a fatal error frame (details in the log only)."""
    try:
        yield
    except Exception:
        log.exception("stream on %s failed", device_id)
        with contextlib.suppress(Exception):
            message = f"the stream on {device_id} failed on the server; the failure is logged"
            await websocket.send_bytes(encode(ErrorFrame("internal_error", message, fatal=True)))
            await websocket.close(code=1011, reason="internal_error")


def _monitored_outputs(output: DeviceOutput) -> list[tuple[EventKind, np.ndarray]]:
    parts: list[tuple[EventKind, np.ndarray]] = []
    for kind, events in (
        (EventKind.SPIKE, output.spikes),
        (EventKind.READOUT, output.readout),
        (EventKind.DVS, output.dvs),
    ):
        if len(events):
            parts.append((kind, events))
    return parts


@router.websocket("/stream")
async def stream_events(
    websocket: WebSocket,
    device_id: str,
    user: CurrentUser,
    deployments: DeploymentsDep,
    mode: StreamMode = StreamMode.FORWARD,
) -> None:
    await websocket.accept()
    async with _reported(websocket, device_id):
        await _stream_events(websocket, device_id, user, deployments, mode)


async def _stream_events(
    websocket: WebSocket,
    device_id: str,
    user: Principal,
    deployments: Deployments,
    mode: StreamMode,
) -> None:
    try:
        hub = await deployments.hub_for_use(user, device_id)
        await deployments.heartbeat(user, hub)
    except (ApiError, DeviceError) as exc:
        await _refuse(websocket, exc)
        return
    frame_events = CONTINUOUS_FRAME_EVENTS if mode is StreamMode.CONTINUOUS else None
    stream = ServerStream(
        hub.config, mode, **({"max_events_per_frame": frame_events} if frame_events else {})
    )
    stream.start(
        {"device": device_id, "model_id": hub.deployment.model_id, "booking_id": hub.booking_id}
    )
    conn = _Connection(websocket, stream, hub)
    await conn.flush()

    async def heartbeat() -> None:
        await deployments.heartbeat(user, hub)

    async def forward(batch: InputBatch) -> None:
        spikes = batch.events if batch.kind is EventKind.SPIKE else None
        dvs = batch.events if batch.kind is EventKind.DVS else None
        output = await hub.forward(spikes, dvs)
        counts: dict[str, int] = {}
        for kind, events in _monitored_outputs(output):
            stream.send_events(kind, events, batch.seq)
            counts[kind.value] = len(events)
        counts["complete"] = int(output.complete)
        stream.send_end(batch.seq, counts)

    async def write(batch: InputBatch) -> None:
        if batch.kind is EventKind.SPIKE:
            await hub.write(batch.events, None)
        else:
            await hub.write(None, batch.events)

    try:
        in_use = deployments.keep_in_use(user, hub)
        if mode is StreamMode.FORWARD:
            await _run_until_first_done(
                _receive_loop(conn, forward, heartbeat), _end_watch(conn), in_use
            )
            return
        await _serve_continuously(conn, write, heartbeat, _monitored_outputs, in_use)
    finally:
        await conn.stop_sensor()


@router.websocket("/dvs")
async def stream_dvs(
    websocket: WebSocket,
    device_id: str,
    user: CurrentUser,
    deployments: DeploymentsDep,
    raw: bool = True,
) -> None:
    """The sensor's events, live: ``raw`` as the sensor sends them (``dvs`` frames), otherwise
    after the DVS layer's pre-processing (``spike`` frames of core 13)."""
    await websocket.accept()
    async with _reported(websocket, device_id):
        await _stream_dvs(websocket, device_id, user, deployments, raw)


async def _stream_dvs(
    websocket: WebSocket, device_id: str, user: Principal, deployments: Deployments, raw: bool
) -> None:
    try:
        async with deployments.sensor_hub(user, device_id, raw=raw) as hub:
            stream = ServerStream(
                hub.config, StreamMode.CONTINUOUS, max_events_per_frame=CONTINUOUS_FRAME_EVENTS
            )
            stream.start({"device": device_id, "raw": raw, "booking_id": hub.booking_id})
            conn = _Connection(websocket, stream, hub)
            await conn.flush()

            async def heartbeat() -> None:
                await deployments.heartbeat(user, hub)

            async def refuse_input(batch: InputBatch) -> None:
                raise ApiError(
                    400,
                    "bad_input",
                    "a DVS stream only carries the sensor's events out; send input on /stream",
                )

            def select(output: DeviceOutput) -> list[tuple[EventKind, np.ndarray]]:
                if raw:
                    return [(EventKind.DVS, output.dvs)] if len(output.dvs) else []
                spikes = output.spikes[output.spikes["core"] == DVS_CORE]
                return [(EventKind.SPIKE, spikes)] if len(spikes) else []

            async with hub.sensor():
                in_use = deployments.keep_in_use(user, hub)
                await _serve_continuously(conn, refuse_input, heartbeat, select, in_use)
    except (ApiError, DeviceError) as exc:
        with contextlib.suppress(Exception):
            await _refuse(websocket, exc)
