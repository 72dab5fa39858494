"""The client's event-stream logic, without I/O.

:class:`StreamState` wraps the schemas' :class:`~specklab.schemas.stream.ClientStream` and writes
each thing a stream does (greet, forward a batch, pipeline many, send a source of batches,
gather outputs, ask for stats) once, as a generator of :data:`Step` s: ``Send`` these
messages, ``Receive`` one (``None`` back on idle timeout, :data:`CLOSED` when the daemon
closed), ``Pull`` the next input batch from the user's source (:data:`EXHAUSTED` at its end),
``Emit`` a value to the user. The blocking and asyncio streams only execute steps.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import numpy as np

from specklab.schemas.events import EventKind
from specklab.schemas.frames import MAX_FRAME_BYTES
from specklab.schemas.stream import (
    BatchEnd,
    ClientStream,
    ForwardResult,
    Outputs,
    ProtocolViolation,
    Stats,
    StreamMode,
)
from specklab.schemas.stream import StreamError as ErrorFrameEvent

from ._conversions import as_events, event_kind
from ._errors import ProtocolError, StreamError

T = TypeVar("T")

#: Seconds to wait for the daemon's greeting.
GREETING_TIMEOUT = 30.0
#: Continuous-mode batches larger than this many events are split into several frames.
SPLIT_EVENTS = 1 << 17


class _Marker:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: ``Receive``'s answer once the daemon has closed the stream.
CLOSED: Final = _Marker("CLOSED")
#: ``Pull``'s answer once the user's source of batches is exhausted.
EXHAUSTED: Final = _Marker("EXHAUSTED")


@dataclass(frozen=True, slots=True)
class Send:
    messages: list[bytes]


@dataclass(frozen=True, slots=True)
class Receive:
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Pull:
    pass


@dataclass(frozen=True, slots=True)
class Emit:
    value: Any


Step = Send | Receive | Pull | Emit
StreamOp = Generator[Step, Any, T]


@dataclass(frozen=True, slots=True)
class BatchOutput:
    """Everything one forward batch caused on the monitored layers."""

    seq: int
    spikes: np.ndarray
    dvs: np.ndarray
    readout: np.ndarray
    #: The daemon's counters of the batch (events in, out, dropped ...).
    counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InputOptions:
    """How user batches become wire events (see :func:`~specklab.client.as_events`)."""

    dt: float | None = None
    layer: int | None = None
    kind: EventKind | str | None = None


class StreamState:
    def __init__(self, mode: StreamMode | None, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        #: None for a listen-only stream (the live DVS endpoint).
        self.mode = mode
        self.protocol = ClientStream(max_frame_bytes=max_frame_bytes)
        self.failure: StreamError | None = None
        self._pending: dict[int, ForwardResult] = {}
        self._finished: dict[int, BatchOutput] = {}
        self._outputs: deque[np.ndarray] = deque()
        #: The daemon also sends stats on its own (every second); only the latest is kept.
        self._stats: deque[dict[str, int | float]] = deque(maxlen=1)

    @property
    def info(self) -> Mapping[str, Any]:
        """The daemon's greeting: mode, layer -> core map, input layers, dvs_input ..."""
        return self.protocol.info or {}

    # Interpreting what the daemon sends.
    def receive(self, data: Any) -> None:
        if data is CLOSED:
            raise self.failure or ProtocolError("the daemon closed the stream")
        event = self.protocol.receive_data(data)
        if isinstance(event, Outputs):
            self._take_outputs(event)
        elif isinstance(event, BatchEnd):
            self._finish(event)
        elif isinstance(event, Stats):
            self._stats.append(dict(event.counters))
        elif isinstance(event, ErrorFrameEvent):
            error = StreamError(event.code, event.message, fatal=event.fatal)
            if event.fatal:
                self.failure = error
            # The batches in flight will get no end frame; their late outputs are dropped.
            self._pending.clear()
            raise error
        elif isinstance(event, ProtocolViolation):
            raise ProtocolError(f"the daemon broke the stream protocol: {event.message}")

    def _take_outputs(self, event: Outputs) -> None:
        if self.mode is not StreamMode.FORWARD:
            self._outputs.append(event.events)
            return
        result = self._pending.get(event.seq) if event.seq is not None else None
        if result is not None:
            result.add(event.kind, event.events)

    def _finish(self, event: BatchEnd) -> None:
        result = self._pending.pop(event.seq, None) if event.seq is not None else None
        if result is None:
            return
        self._finished[result.seq] = BatchOutput(
            seq=result.seq,
            spikes=result.events(EventKind.SPIKE),
            dvs=result.events(EventKind.DVS),
            readout=result.events(EventKind.READOUT),
            counts=dict(event.counts),
        )

    # Building what the client sends.
    def encode_batch(self, batch: Any, options: InputOptions) -> tuple[int, list[bytes]]:
        """One user batch as frames, and the last frame's ``seq``.

        Forward batches are one frame each, so that one end frame closes the whole batch.
        """
        events = self.to_events(batch, options)
        kind = event_kind(events)
        parts = [events]
        if self.mode is not StreamMode.FORWARD and len(events) > SPLIT_EVENTS:
            parts = [events[i : i + SPLIT_EVENTS] for i in range(0, len(events), SPLIT_EVENTS)]
        seq = -1
        for part in parts:
            seq = self.protocol.send_events(kind, part)
            if self.mode is StreamMode.FORWARD:
                self._pending[seq] = ForwardResult(seq)
        messages = self.protocol.data_to_send()
        limit = self.protocol.max_frame_bytes
        if any(len(message) > limit for message in messages):
            raise ValueError(
                f"a batch of {len(events)} events is larger than a frame may be ({limit} bytes); "
                "send it as several batches"
            )
        return seq, messages

    def to_events(self, batch: Any, options: InputOptions) -> np.ndarray:
        layer = options.layer
        if layer is None:
            inputs = self.info.get("inputs") or [0]
            layer = int(inputs[0])
        kind = options.kind
        if kind is None and self.info and not self.info.get("dvs_input"):
            # without a DVS layer the network takes spikes only: say what a spike needs
            kind = EventKind.SPIKE
        return as_events(batch, dt=options.dt, layer=layer, kind=kind)

    # Operations.
    def greet(self) -> StreamOp[Mapping[str, Any]]:
        data = yield Receive(GREETING_TIMEOUT)
        if data is None:
            raise ProtocolError(f"the daemon sent no greeting within {GREETING_TIMEOUT} s")
        try:
            self.receive(data)
        except StreamError as error:
            if not error.fatal:
                raise
            # A refusal: the close that follows carries the HTTP status, and the driver raises
            # the matching ApiError when it reads it.
            yield Receive(GREETING_TIMEOUT)
            raise
        return self.info

    def forward(self, batch: Any, options: InputOptions) -> StreamOp[BatchOutput]:
        """Send one batch and gather every output it causes, until its end frame."""
        seq, messages = self.encode_batch(batch, options)
        yield Send(messages)
        return (yield from self._result(seq))

    def _result(self, seq: int) -> StreamOp[BatchOutput]:
        while seq not in self._finished:
            if seq not in self._pending:
                raise ProtocolError(f"batch {seq} was abandoned before its end")
            data = yield Receive()
            self.receive(data)
        return self._finished.pop(seq)

    def forward_many(self, options: InputOptions, window: int) -> StreamOp[None]:
        """Forward each pulled batch, keeping up to ``window`` in flight; emit results in order."""
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        in_flight: deque[int] = deque()
        try:
            while True:
                batch = yield Pull()
                if batch is EXHAUSTED:
                    break
                seq, messages = self.encode_batch(batch, options)
                yield Send(messages)
                in_flight.append(seq)
                if len(in_flight) >= window:
                    yield Emit((yield from self._result(in_flight.popleft())))
            while in_flight:
                yield Emit((yield from self._result(in_flight.popleft())))
        finally:
            for seq in in_flight:
                self._pending.pop(seq, None)
                self._finished.pop(seq, None)

    def send_all(self, options: InputOptions) -> StreamOp[int]:
        """Send every pulled batch (continuous mode); returns how many were sent."""
        count = 0
        while (batch := (yield Pull())) is not EXHAUSTED:
            yield Send(self.encode_batch(batch, options)[1])
            count += 1
        return count

    def outputs(self, idle: float | None) -> StreamOp[None]:
        """Emit output arrays as they come; stop after ``idle`` seconds without outputs (stats
        frames do not count) or when the daemon closes the stream."""
        last_output = time.monotonic()
        while True:
            while self._outputs:
                yield Emit(self._outputs.popleft())
                last_output = time.monotonic()
            wait = None if idle is None else idle - (time.monotonic() - last_output)
            if wait is not None and wait <= 0:
                return
            data = yield Receive(wait)
            if data is None or (data is CLOSED and self.failure is None):
                return
            self.receive(data)

    def control(self, op: str, **args: Any) -> StreamOp[None]:
        self.protocol.send_control(op, **args)
        yield Send(self.protocol.data_to_send())

    def stats(self, timeout: float) -> StreamOp[dict[str, int | float]]:
        """The daemon's counters of this stream; outputs that arrive meanwhile are kept."""
        self._stats.clear()
        yield from self.control("stats")
        while not self._stats:
            data = yield Receive(timeout)
            if data is None:
                raise ProtocolError(f"no stats from the daemon within {timeout} s")
            self.receive(data)
        return self._stats.popleft()
