"""The event-stream session, both ends, without I/O.

``ServerStream`` and ``ClientStream`` take the bytes of received WebSocket messages and hand
back what they mean; what they want sent accumulates in ``data_to_send()``. The daemon's
WebSocket endpoint and the client's stream are short adapters around them (the websockets
library's sans-I/O design), and the tests drive both ends by feeding frames.

A session, in order:

1. the server sends ``control ready`` with the deployment (mode, layer -> core map, inputs);
2. the client sends event batches (``events`` frames; spikes addressed by *model* layer, DVS
   events for the DVS layer) and control requests (:data:`CLIENT_OPS`);
3. the server answers with ``events`` frames (spikes carry model layer and core); in
   ``forward`` mode every batch is closed by an ``end`` frame with the batch's ``seq``, in
   ``continuous`` mode outputs flow as they come;
4. problems with one frame get a non-fatal ``error`` frame and the session goes on; a fatal
   ``error`` frame (device unplugged, booking preempted or ended) precedes the close.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import numpy as np

from .chipconfig import ChipConfig
from .events import DTYPES, EventKind
from .frames import (
    MAX_FRAME_BYTES,
    ControlFrame,
    EndFrame,
    ErrorFrame,
    EventsFrame,
    Frame,
    FrameError,
    StatsFrame,
    decode,
    encode,
)


class StreamMode(StrEnum):
    FORWARD = "forward"
    CONTINUOUS = "continuous"


#: Control operations a client may request.
CLIENT_OPS: Final = frozenset({"heartbeat", "reset_states", "start_sensor", "stop_sensor", "stats"})
#: Largest number of events the server puts in one frame (about 1.8 MB of spikes).
MAX_EVENTS_PER_FRAME: Final = 1 << 17
#: WebSocket close code of a session the server ended (the fatal error frame says why).
CLOSE_ENDED: Final = 4410
#: WebSocket close code of a session whose token was revoked or expired while it ran.
CLOSE_TOKEN_INVALID: Final = 4401
#: Largest timestamp of an input event (about 146,000 years of microseconds): device time
#: arithmetic stays within signed 64 bits.
MAX_TIMESTAMP_US: Final = (1 << 62) - 1


def refusal_close_code(http_status: int) -> int:
    """WebSocket close code of a stream refused at its start: 4000 + the HTTP status."""
    return 4000 + http_status


class StreamError(Exception):
    """An error frame received by the client, raised where it matters."""

    def __init__(self, code: str, message: str, fatal: bool, detail: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.fatal = fatal
        self.detail = detail


# What the server side hands its adapter.
@dataclass(frozen=True, slots=True)
class InputBatch:
    """Input events for the device: spikes with ``core`` filled in, or DVS events."""

    kind: EventKind
    events: np.ndarray
    seq: int | None


@dataclass(frozen=True, slots=True)
class ControlRequest:
    op: str
    args: Mapping[str, Any]


@dataclass
class _Counters:
    frames_in: int = 0
    frames_out: int = 0
    events_in: int = 0
    events_out: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class _Endpoint:
    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.counters = _Counters()
        self._outgoing: list[bytes] = []

    def _send(self, frame: Frame) -> None:
        self._outgoing.append(encode(frame))
        self.counters.frames_out += 1

    def data_to_send(self) -> list[bytes]:
        """Messages to send, in order; each call hands over what accumulated since the last."""
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    def _decode(self, data: bytes | bytearray | memoryview) -> Frame:
        self.counters.frames_in += 1
        return decode(data, max_bytes=self.max_frame_bytes)


class ServerStream(_Endpoint):
    def __init__(
        self,
        config: ChipConfig,
        mode: StreamMode,
        *,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        max_events_per_frame: int = MAX_EVENTS_PER_FRAME,
    ) -> None:
        super().__init__(max_frame_bytes)
        self.config = config
        self.mode = mode
        self.max_events_per_frame = max_events_per_frame
        self._input_limits = {layer: _layer_input_limits(config, layer) for layer in config.inputs}

    def start(self, info: Mapping[str, Any]) -> None:
        """Greet the client with the deployment it is talking to."""
        args = {
            "mode": self.mode.value,
            "layers": {str(p.layer): p.core for p in self.config.layers},
            "inputs": list(self.config.inputs),
            "dvs_input": self.config.dvs_layer is not None,
            **info,
        }
        self._send(ControlFrame("ready", args))

    def receive_data(
        self, data: bytes | bytearray | memoryview
    ) -> list[InputBatch | ControlRequest]:
        """Interpret one client message. Bad input queues a non-fatal error frame instead."""
        try:
            frame = self._decode(data)
            return [self._interpret(frame)]
        except FrameError as exc:
            self.send_error(exc.code, exc.message)
            return []

    def _interpret(self, frame: Frame) -> InputBatch | ControlRequest:
        if isinstance(frame, ControlFrame):
            if frame.op not in CLIENT_OPS:
                ops = ", ".join(sorted(CLIENT_OPS))
                raise FrameError("unknown_op", f"unknown control op {frame.op!r}; expected {ops}")
            return ControlRequest(frame.op, frame.args)
        if not isinstance(frame, EventsFrame):
            raise FrameError("unexpected_frame", f"clients do not send {type(frame).__name__}s")
        if frame.kind is EventKind.SPIKE:
            events = self._input_spikes(frame.events)
        elif frame.kind is EventKind.DVS:
            events = self._input_dvs(frame.events)
        else:
            raise FrameError("bad_input", f"{frame.kind.value} events cannot be sent to a device")
        _check_times(events)
        self.counters.events_in += len(events)
        return InputBatch(frame.kind, events, frame.seq)

    def _input_spikes(self, spikes: np.ndarray) -> np.ndarray:
        layers = np.unique(spikes["layer"])
        for layer in layers.tolist():
            limits = self._input_limits.get(layer)
            if limits is None:
                raise FrameError(
                    "bad_input",
                    f"model layer {layer} takes no input spikes; "
                    f"input layers are {list(self.config.inputs)}",
                )
            _check_ranges(spikes[spikes["layer"] == layer], limits, f"model layer {layer}")
        return self.config.spikes_to_cores(spikes)

    def _input_dvs(self, events: np.ndarray) -> np.ndarray:
        dvs = self.config.dvs_layer
        if dvs is None:
            raise FrameError("bad_input", "the deployed network has no DVS input layer")
        limits = {"x": dvs.input_size.x, "y": dvs.input_size.y, "p": 2}
        _check_ranges(events, limits, "the DVS layer")
        return events

    def send_events(self, kind: EventKind, events: np.ndarray, seq: int | None = None) -> None:
        """Queue output events, split into frames of at most ``max_events_per_frame``."""
        self._outgoing.extend(self.events_messages(kind, events, seq))

    def events_messages(
        self, kind: EventKind, events: np.ndarray, seq: int | None = None
    ) -> Iterator[bytes]:
        """Output events as messages of at most ``max_events_per_frame`` events, each encoded
        only when asked for: an adapter that sends one before taking the next holds one frame
        at a time, whatever the number of events."""
        step = self.max_events_per_frame
        for start in range(0, len(events), step):
            part = events[start : start + step]
            message = encode(EventsFrame(kind, part, seq))
            self.counters.frames_out += 1
            self.counters.events_out += len(part)
            yield message

    def send_end(self, seq: int | None, counts: Mapping[str, int]) -> None:
        self._send(EndFrame(seq, counts))

    def send_error(self, code: str, message: str, fatal: bool = False) -> None:
        self.counters.errors += 1
        self._send(ErrorFrame(code, message, fatal))

    def send_stats(self, extra: Mapping[str, int | float] | None = None) -> None:
        self._send(StatsFrame({**self.counters.as_dict(), **(extra or {})}))


def _layer_input_limits(config: ChipConfig, layer: int) -> dict[str, int]:
    shape = config.cnn_layers[config.core_of_layer[layer]].dimensions.input_shape
    return {"feature": shape.feature_count, "x": shape.size.x, "y": shape.size.y}


def _check_ranges(events: np.ndarray, limits: Mapping[str, int], target: str) -> None:
    for name, limit in limits.items():
        column = events[name]
        bad = np.flatnonzero(column >= limit)
        if bad.size:
            index = int(bad[0])
            raise FrameError(
                "bad_input",
                f"event {index}: {name}={int(column[index])} is out of range for {target} "
                f"({name} < {limit}); {bad.size} such events in the batch",
            )


def _check_times(events: np.ndarray) -> None:
    times = events["t"]
    if times.size and int(times.max()) > MAX_TIMESTAMP_US:
        index = int(np.argmax(times > MAX_TIMESTAMP_US))
        raise FrameError(
            "bad_input",
            f"event {index}: t={int(times[index])} is beyond the largest timestamp, "
            f"{MAX_TIMESTAMP_US} us",
        )
    if times.size > 1 and bool((times[1:] < times[:-1]).any()):
        index = int(np.flatnonzero(times[1:] < times[:-1])[0]) + 1
        raise FrameError(
            "bad_input", f"events must be sorted by t; event {index} goes back in time"
        )


# What the client side hands its adapter.
@dataclass(frozen=True, slots=True)
class Ready:
    info: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Outputs:
    kind: EventKind
    events: np.ndarray
    seq: int | None


@dataclass(frozen=True, slots=True)
class BatchEnd:
    seq: int | None
    counts: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Stats:
    counters: Mapping[str, int | float]


StreamEvent = Ready | Outputs | BatchEnd | Stats | StreamError


@dataclass
class ForwardResult:
    """Every output of one forward batch, gathered until its ``end`` frame."""

    seq: int
    parts: dict[EventKind, list[np.ndarray]] = field(default_factory=dict)

    def add(self, kind: EventKind, events: np.ndarray) -> None:
        self.parts.setdefault(kind, []).append(events)

    def events(self, kind: EventKind) -> np.ndarray:
        parts = self.parts.get(kind)
        return np.concatenate(parts) if parts else np.zeros(0, DTYPES[kind])


class ClientStream(_Endpoint):
    """The client's end: encodes requests, interprets what the server sends."""

    def __init__(self, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        super().__init__(max_frame_bytes)
        self.info: Mapping[str, Any] | None = None
        self._next_seq = 0

    def send_events(self, kind: EventKind | str, events: np.ndarray) -> int:
        """Queue one input batch; returns its ``seq``."""
        seq = self._next_seq
        self._next_seq += 1
        self._send(EventsFrame(EventKind(kind), events, seq))
        self.counters.events_out += len(events)
        return seq

    def send_control(self, op: str, **args: Any) -> None:
        self._send(ControlFrame(op, args))

    def receive_data(self, data: bytes | bytearray | memoryview) -> StreamEvent:
        frame = self._decode(data)
        if isinstance(frame, EventsFrame):
            self.counters.events_in += len(frame.events)
            return Outputs(frame.kind, frame.events, frame.seq)
        if isinstance(frame, EndFrame):
            return BatchEnd(frame.seq, frame.counts)
        if isinstance(frame, StatsFrame):
            return Stats(frame.counters)
        if isinstance(frame, ErrorFrame):
            self.counters.errors += 1
            return StreamError(frame.code, frame.message, frame.fatal, frame.detail)
        if frame.op == "ready":
            self.info = frame.args
            return Ready(frame.args)
        raise FrameError("unexpected_frame", f"servers do not send control op {frame.op!r}")
