"""Event streams over WebSockets: spikes in and out of a deployment, and live DVS events.

Each endpoint is a short adapter around :class:`~specklab.schemas.stream.ServerStream` (the
sans-I/O state machine): messages in, device calls, frames out through one writer. A stream the
server refuses gets a fatal error frame and the close code 4000 + the HTTP status; one it ends
(booking preempted or over, device unplugged, deployment removed, daemon stopping) gets a
fatal error frame and close code 4410, and one whose token is revoked or expires (checked at
every heartbeat and every ``token_recheck_s``) close code 4401. Bad frames get non-fatal error
frames and the stream goes on.

Output frames are encoded one at a time, each when the previous one has been handed to the
transport, which waits while the client's socket is full: a client that does not read holds
at most one frame of the daemon's memory (plus the device's answer being sent, at most
``max_batch_output_events``). Continuous outputs are flushed as the device produces them (the
pump reads every ~1 ms), in frames of at most 64 KiB; a consumer that falls behind loses
outputs, counted in the ``dropped`` of its stats frames (see ``deployments.hub``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

import anyio
import numpy as np
from fastapi import APIRouter, FastAPI, WebSocket

from specklab.schemas.errors import DomainError
from specklab.schemas.events import DVS_CORE, SPIKE_DTYPE, EventKind, take_events
from specklab.schemas.frames import ErrorFrame, MessageParts, encode
from specklab.schemas.stream import (
    CLOSE_ENDED,
    CLOSE_TOKEN_INVALID,
    MAX_EVENTS_PER_FRAME,
    ControlRequest,
    InputBatch,
    ServerStream,
    StreamMode,
)

from ..auth.accounts import Authenticator
from ..auth.principal import Principal
from ..deployments import Deployments, DeviceHub, EndReason, OutputSubscription
from ..devices.base import DeviceOutput
from ..transport import SEND_PARTS
from .deps import CurrentUser, DeploymentsDep
from .errors import stream_error
from .tasks import Ending, run_until_first_done

log = logging.getLogger("specklab.streams")
router = APIRouter(prefix="/v1/devices/{device_id}", tags=["streams"])

#: Continuous outputs go out in frames of at most 64 KiB.
CONTINUOUS_FRAME_EVENTS = 64 * 1024 // SPIKE_DTYPE.itemsize
STATS_INTERVAL_S = 1.0
#: How long a stream's last (fatal) frame and close may wait for a client that does not read.
LAST_WORD_TIMEOUT_S = 5.0
#: How long a stopping daemon waits for its streams to send their ``daemon_stopping`` frame.
STOP_STREAMS_TIMEOUT_S = 5.0

OutputSelector = Callable[[DeviceOutput], list[tuple[EventKind, np.ndarray]]]


class _StreamEnd(Ending):
    """Ends a stream: its fatal error frame, then ``close_code``."""

    def __init__(self, code: str, message: str, close_code: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


def _ended(hub: DeviceHub) -> _StreamEnd:
    reason = hub.end_reason
    assert reason is not None
    return _StreamEnd(reason.code, reason.message, CLOSE_ENDED)


class _Connection:
    """The one writer of a WebSocket, and the stream state it serves."""

    def __init__(self, websocket: WebSocket, stream: ServerStream, hub: DeviceHub) -> None:
        self.websocket = websocket
        self.stream = stream
        self.hub = hub
        self.subscription: OutputSubscription | None = None
        #: Most bytes of encoded frames this connection held at once, not yet taken by the
        #: transport (reported in stats frames as ``buffered_bytes_peak``).
        self.buffered_bytes_peak = 0
        self._lock = asyncio.Lock()
        self._sends_parts = SEND_PARTS in websocket.scope.get("extensions", {})

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
        messages = [(message,) for message in self.stream.data_to_send()]
        await self._write(messages, sum(len(message) for (message,) in messages))

    async def send_events(self, kind: EventKind, events: np.ndarray, seq: int | None) -> None:
        """Output events, one frame encoded at a time (the transport's backpressure)."""
        await self.flush()
        await self._write(self.stream.events_messages(kind, events, seq), 0)

    async def _write(self, messages: Iterable[MessageParts], held: int) -> None:
        """Send ``messages`` in order; ``held`` bytes of them are encoded already."""
        async with self._lock:
            for parts in messages:
                size = sum(map(len, parts))
                held = max(held, size)
                self.buffered_bytes_peak = max(self.buffered_bytes_peak, held)
                await self._send(parts)
                held -= size

    async def _send(self, parts: MessageParts) -> None:
        """One message; in its parts where the server takes them so (the events not joined
        to their frame's head: ``server/transport.py``)."""
        if len(parts) > 1 and self._sends_parts:
            await self.websocket.send({"type": "websocket.send", "bytes": None, SEND_PARTS: parts})
        else:
            await self.websocket.send_bytes(b"".join(parts))

    async def send_stats(self) -> None:
        extra: dict[str, int | float] = dict(self.hub.stats())
        extra["buffered_bytes_peak"] = self.buffered_bytes_peak
        if self.subscription is not None:
            extra["dropped"] = self.subscription.dropped
            extra["queued_events"] = self.subscription.queued_events
        self.stream.send_stats(extra)
        await self.flush()


async def _refuse(websocket: WebSocket, exc: DomainError) -> None:
    frame, close_code = stream_error(exc)
    await websocket.send_bytes(encode(frame))
    await websocket.close(code=close_code, reason=frame.code)


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
    on_events: Callable[[InputBatch], Awaitable[None]] | None,
    heartbeat: Callable[[], Awaitable[None]],
) -> None:
    """Messages in, device calls, frames out. ``on_events`` None: a listen-only stream (its
    ServerStream refuses input, so none reaches here)."""
    while True:
        message = await conn.websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        for request in conn.stream.receive_data(message.get("text") if data is None else data):
            try:
                if isinstance(request, ControlRequest):
                    await _control(conn, request, heartbeat)
                elif on_events is not None:
                    await on_events(request)
            except DomainError as exc:
                if conn.hub.ended:
                    raise _ended(conn.hub) from None
                frame, _ = stream_error(exc)
                conn.stream.send_error(frame.code, frame.message, detail=frame.detail)
        await conn.flush()


async def _output_loop(conn: _Connection, select: OutputSelector) -> None:
    assert conn.subscription is not None
    next_stats = time.monotonic() + STATS_INTERVAL_S
    while True:
        item = await conn.subscription.get()
        if isinstance(item, EndReason):
            raise _ended(conn.hub)
        for kind, events in select(item):
            await conn.send_events(kind, events, None)
        if time.monotonic() >= next_stats:
            next_stats = time.monotonic() + STATS_INTERVAL_S
            await conn.send_stats()


async def _end_watch(conn: _Connection) -> None:
    await conn.hub.ended_event.wait()
    raise _ended(conn.hub)


class _TokenCheck:
    """Whether the token a stream was opened with is still valid: at every heartbeat, and
    every ``interval_s`` in :meth:`watch`."""

    def __init__(self, websocket: WebSocket, user: Principal) -> None:
        self._auth: Authenticator = websocket.app.state.auth
        self._user = user
        self.interval_s: float = websocket.app.state.settings.token_recheck_s

    async def __call__(self) -> None:
        try:
            await anyio.to_thread.run_sync(self._auth.revalidate, self._user)
        except DomainError as exc:
            if exc.status != 401:
                raise
            raise _StreamEnd(exc.body.code, exc.body.message, CLOSE_TOKEN_INVALID) from None

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self()


async def _connect(
    websocket: WebSocket,
    stream: ServerStream,
    hub: DeviceHub,
    user: Principal,
    deployments: Deployments,
) -> tuple[_Connection, _TokenCheck, Callable[[], Awaitable[None]]]:
    """The stream's connection, its first frames sent; its token check; and its heartbeat
    (the token still valid, then the booking's lease renewed)."""
    conn = _Connection(websocket, stream, hub)
    await conn.flush()
    token = _TokenCheck(websocket, user)

    async def heartbeat() -> None:
        await token()
        await deployments.heartbeat(user, hub)

    return conn, token, heartbeat


async def _serve_continuously(
    conn: _Connection,
    on_events: Callable[[InputBatch], Awaitable[None]] | None,
    heartbeat: Callable[[], Awaitable[None]],
    select: OutputSelector,
    token: _TokenCheck,
    in_use: Awaitable[None],
) -> None:
    """A continuous stream: the device's time restarts, inputs go to ``on_events`` and the
    selected outputs flow out as they come, until the client leaves, the deployment ends or
    the token stops being valid."""
    await conn.hub.restart_stopwatch()
    async with conn.hub.subscribe() as subscription:
        conn.subscription = subscription
        await run_until_first_done(
            _receive_loop(conn, on_events, heartbeat),
            _output_loop(conn, select),
            _end_watch(conn),
            token.watch(),
            in_use,
        )


@contextlib.asynccontextmanager
async def _reported(websocket: WebSocket, device_id: str) -> AsyncIterator[None]:
    """The stream's end: a fatal error frame and its close code (an unexpected failure is an
    ``internal_error``, with the details in the log only)."""
    deployments: Deployments = websocket.app.state.deployments
    with deployments.stream_open():
        try:
            yield
        except _StreamEnd as end:
            await _last_word(websocket, end)
        except Exception:
            log.exception("stream on %s failed", device_id)
            message = f"the stream on {device_id} failed on the server; the failure is logged"
            await _last_word(websocket, _StreamEnd("internal_error", message, 1011))


async def _last_word(websocket: WebSocket, end: _StreamEnd) -> None:
    """Send the fatal frame and close, unless the client is gone or does not read."""
    frame = encode(ErrorFrame(end.code, end.message, fatal=True))
    with contextlib.suppress(Exception):
        async with asyncio.timeout(LAST_WORD_TIMEOUT_S):
            await websocket.send_bytes(frame)
            await websocket.close(code=end.close_code, reason=end.code)


async def stop_streams(app: FastAPI) -> None:
    """Before the server closes its connections at shutdown: every open stream gets its fatal
    ``daemon_stopping`` frame (close code 4410), and new streams are refused (4503)."""
    deployments: Deployments | None = getattr(app.state, "deployments", None)
    if deployments is not None:
        await deployments.stop_streams(STOP_STREAMS_TIMEOUT_S)


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
    except DomainError as exc:
        await _refuse(websocket, exc)
        return
    stream = ServerStream(
        hub.config,
        mode,
        max_events_per_frame=(
            CONTINUOUS_FRAME_EVENTS if mode is StreamMode.CONTINUOUS else MAX_EVENTS_PER_FRAME
        ),
    )
    stream.start(
        {"device": device_id, "model_id": hub.deployment.model_id, "booking_id": hub.booking_id}
    )
    conn, token, heartbeat = await _connect(websocket, stream, hub, user, deployments)

    async def forward(batch: InputBatch) -> None:
        spikes = batch.events if batch.kind is EventKind.SPIKE else None
        dvs = batch.events if batch.kind is EventKind.DVS else None
        output = await hub.forward(spikes, dvs, batch.checked)
        counts: dict[str, int] = {}
        for kind, events in _monitored_outputs(output):
            await conn.send_events(kind, events, batch.seq)
            counts[kind.value] = len(events)
        counts["complete"] = int(output.complete)
        stream.send_end(batch.seq, counts)

    async def write(batch: InputBatch) -> None:
        if batch.kind is EventKind.SPIKE:
            await hub.write(batch.events, None, batch.checked)
        else:
            await hub.write(None, batch.events, batch.checked)

    try:
        in_use = deployments.keep_in_use(user, hub)
        if mode is StreamMode.FORWARD:
            await run_until_first_done(
                _receive_loop(conn, forward, heartbeat), _end_watch(conn), token.watch(), in_use
            )
            return
        await _serve_continuously(conn, write, heartbeat, _monitored_outputs, token, in_use)
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
                hub.config,
                StreamMode.CONTINUOUS,
                takes_input=False,
                max_events_per_frame=CONTINUOUS_FRAME_EVENTS,
            )
            stream.start({"device": device_id, "raw": raw, "booking_id": hub.booking_id})
            conn, token, heartbeat = await _connect(websocket, stream, hub, user, deployments)

            def select(output: DeviceOutput) -> list[tuple[EventKind, np.ndarray]]:
                if raw:
                    return [(EventKind.DVS, output.dvs)] if len(output.dvs) else []
                spikes = take_events(
                    output.spikes, np.flatnonzero(output.spikes["core"] == DVS_CORE)
                )
                return [(EventKind.SPIKE, spikes)] if len(spikes) else []

            async with hub.sensor():
                in_use = deployments.keep_in_use(user, hub)
                await _serve_continuously(conn, None, heartbeat, select, token, in_use)
    except DomainError as exc:
        with contextlib.suppress(Exception):
            await _refuse(websocket, exc)
