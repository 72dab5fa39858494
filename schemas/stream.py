"""The event stream, both ends, as sans-I/O state machines.

``ServerStream`` and ``ClientStream`` take the bytes of received WebSocket messages and hand
back what they mean, as values; what they want sent accumulates in ``data_to_send()``. The
daemon's WebSocket endpoints and the client's stream are short adapters that only move bytes
(the websockets library's sans-I/O design); the tests drive both ends by feeding frames.

A stream, in order:

1. the server sends ``control ready`` with the deployment (mode, layer -> core map, inputs);
2. the client sends event batches (``events`` frames; spikes addressed by *model* layer, DVS
   events for the DVS layer) and control requests (:data:`CLIENT_OPS`);
3. the server answers with ``events`` frames (spikes carry model layer and core); in
   ``forward`` mode every batch is closed by an ``end`` frame with the batch's ``seq``, in
   ``continuous`` mode outputs flow as they come;
4. problems with one frame get a non-fatal ``error`` frame and the stream goes on; a fatal
   ``error`` frame (device unplugged, booking preempted or ended) precedes the close.

What each end accepts in each of its states is one table per end, :data:`SERVER_RULES` and
:data:`CLIENT_RULES` (drawn in ``docs/streams.md``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import numpy as np

from .chipconfig import ChipConfig
from .events import DTYPES, EventKind, concat_events
from .frames import (
    MAX_FRAME_BYTES,
    ControlFrame,
    EndFrame,
    ErrorFrame,
    EventsFrame,
    Frame,
    FrameError,
    MessageParts,
    StatsFrame,
    decode,
    encode,
    encode_parts,
)
from .inputs import Checked, InputCheck


class StreamMode(StrEnum):
    FORWARD = "forward"
    CONTINUOUS = "continuous"


#: Control operations a client may request.
CLIENT_OPS: Final = frozenset({"heartbeat", "reset_states", "start_sensor", "stop_sensor", "stats"})
#: Largest number of events the server puts in one frame (about 1.8 MB of spikes).
MAX_EVENTS_PER_FRAME: Final = 1 << 17
#: WebSocket close code of a stream the server ended (the fatal error frame says why).
CLOSE_ENDED: Final = 4410
#: WebSocket close code of a stream whose token was revoked or expired while it ran.
CLOSE_TOKEN_INVALID: Final = 4401


def refusal_close_code(http_status: int) -> int:
    """WebSocket close code of a stream refused at its start: 4000 + the HTTP status."""
    return 4000 + http_status


class StreamError(Exception):
    """An error frame received by the client (a value of ``ClientStream.receive_data``)."""

    def __init__(self, code: str, message: str, fatal: bool, detail: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.fatal = fatal
        self.detail = detail


# ----- outcomes of the tables -----


class Outcome(StrEnum):
    #: Hand the message's meaning to the adapter.
    ACCEPT = "accept"
    #: Nothing: no answer, no value.
    IGNORE = "ignore"
    #: Answer with the message's own decoding fault (``malformed``, ``too_large`` ...).
    FAULT = "fault"


@dataclass(frozen=True, slots=True)
class Refuse:
    """A non-fatal error frame ``code``; ``text`` may name the message as ``{what}``."""

    code: str
    text: str


@dataclass(frozen=True, slots=True)
class Violation:
    """The peer broke the protocol (client side): the stream is over."""

    text: str


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """What ``ClientStream.receive_data`` returns for a message the protocol does not allow."""

    message: str


# ----- the server's end -----


class ServerState(StrEnum):
    #: Created; ``ready`` not sent yet.
    GREETING = "greeting"
    #: Each events frame is one batch, answered by outputs and an end frame under its ``seq``.
    FORWARD = "forward"
    #: Inputs queue on the device's stopwatch; outputs flow as they come.
    CONTINUOUS = "continuous"
    #: A DVS stream: the sensor's events go out, nothing comes in but control requests.
    LISTENING = "listening"
    #: A fatal error frame was sent; what still arrives is not read.
    CLOSED = "closed"


class ClientMessage(StrEnum):
    """A client message, as the server's table tells them apart."""

    UNREADABLE = "unreadable"  # not a frame: bad msgpack, text, too large, unknown type ...
    BATCH = "batch"  # spike or DVS events with a seq
    UNNUMBERED = "unnumbered"  # spike or DVS events without a seq
    OUTPUT_EVENTS = "output_events"  # events of a kind devices only emit (readout)
    CONTROL = "control"  # a control op of CLIENT_OPS
    UNKNOWN_OP = "unknown_op"  # any other control op
    SERVER_FRAME = "server_frame"  # end, stats, error: frames only servers send


_NOT_READY = Refuse("not_ready", "{what} before the stream's greeting")
_NO_OUTPUT_KIND = Refuse("bad_input", "{what} cannot be sent to a device")
_UNKNOWN_OP = Refuse("unknown_op", f"unknown {{what}}; expected {', '.join(sorted(CLIENT_OPS))}")
_NOT_FROM_CLIENTS = Refuse("unexpected_frame", "clients do not send {what}")
_LISTEN_ONLY = Refuse(
    "bad_input", "a DVS stream only carries the sensor's events out; send input on /stream"
)
_OPEN: dict[ClientMessage, Outcome | Refuse] = {
    ClientMessage.UNREADABLE: Outcome.FAULT,
    ClientMessage.BATCH: Outcome.ACCEPT,
    ClientMessage.UNNUMBERED: Outcome.ACCEPT,
    ClientMessage.OUTPUT_EVENTS: _NO_OUTPUT_KIND,
    ClientMessage.CONTROL: Outcome.ACCEPT,
    ClientMessage.UNKNOWN_OP: _UNKNOWN_OP,
    ClientMessage.SERVER_FRAME: _NOT_FROM_CLIENTS,
}

#: What the server does with each client message in each state. Messages never change the
#: server's state: ``start`` moves it from GREETING to the mode's state, a fatal error frame
#: sent (``send_error(fatal=True)``) to CLOSED.
SERVER_RULES: Final[Mapping[ServerState, Mapping[ClientMessage, Outcome | Refuse]]] = {
    ServerState.GREETING: dict.fromkeys(ClientMessage, _NOT_READY),
    ServerState.FORWARD: {
        **_OPEN,
        ClientMessage.UNNUMBERED: Refuse(
            "missing_seq", "{what} without a seq: forward answers carry their batch's seq"
        ),
    },
    ServerState.CONTINUOUS: _OPEN,
    ServerState.LISTENING: {
        **_OPEN,
        ClientMessage.BATCH: _LISTEN_ONLY,
        ClientMessage.UNNUMBERED: _LISTEN_ONLY,
    },
    ServerState.CLOSED: dict.fromkeys(ClientMessage, Outcome.IGNORE),
}


def _client_message(frame: Frame | None) -> ClientMessage:
    if frame is None:
        return ClientMessage.UNREADABLE
    if isinstance(frame, EventsFrame):
        if frame.kind not in (EventKind.SPIKE, EventKind.DVS):
            return ClientMessage.OUTPUT_EVENTS
        return ClientMessage.UNNUMBERED if frame.seq is None else ClientMessage.BATCH
    if isinstance(frame, ControlFrame):
        return ClientMessage.CONTROL if frame.op in CLIENT_OPS else ClientMessage.UNKNOWN_OP
    return ClientMessage.SERVER_FRAME


def _describe(frame: Frame | None) -> str:
    """The message, in words, for error texts."""
    if frame is None:
        return "an unreadable message"
    if isinstance(frame, EventsFrame):
        return f"{frame.kind.value} events"
    if isinstance(frame, ControlFrame):
        return f"control op {frame.op!r}"
    return f"{type(frame).__name__}s"


# What the server side hands its adapter.
@dataclass(frozen=True, slots=True)
class InputBatch:
    """Input events for the device, checked: spikes with ``core`` filled in, or DVS events;
    ``checked`` is the check's proof, for the device (which then does not check again)."""

    kind: EventKind
    events: np.ndarray
    seq: int | None
    checked: Checked


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

    def _decode(self, data: Any) -> tuple[Frame | None, FrameError | None]:
        """The frame, or why there is none."""
        self.counters.frames_in += 1
        try:
            return decode(data, max_bytes=self.max_frame_bytes), None
        except FrameError as fault:
            return None, fault


class ServerStream(_Endpoint):
    """The daemon's end of one stream. ``takes_input=False`` makes a listen-only (DVS) stream."""

    def __init__(
        self,
        config: ChipConfig,
        mode: StreamMode,
        *,
        takes_input: bool = True,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        max_events_per_frame: int = MAX_EVENTS_PER_FRAME,
    ) -> None:
        super().__init__(max_frame_bytes)
        self.config = config
        self.mode = mode
        self.state = ServerState.GREETING
        self.max_events_per_frame = max_events_per_frame
        self._open_state = ServerState(mode.value) if takes_input else ServerState.LISTENING
        self._check = InputCheck(config)

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
        self.state = self._open_state

    def receive_data(self, data: Any) -> list[InputBatch | ControlRequest]:
        """Interpret one client message (bytes; text is refused as ``malformed``). What the
        table refuses, and input the check refuses, queues a non-fatal error frame instead."""
        frame, fault = self._decode(data)
        outcome = SERVER_RULES[self.state][_client_message(frame)]
        if outcome is Outcome.IGNORE:
            return []
        if isinstance(outcome, Refuse):
            self.send_error(outcome.code, outcome.text.format(what=_describe(frame)))
            return []
        if fault is not None:
            self.send_error(fault.code, fault.message)
            return []
        if isinstance(frame, ControlFrame):
            return [ControlRequest(frame.op, frame.args)]
        assert isinstance(frame, EventsFrame)
        try:
            checked = self._check.checked(frame.kind, frame.events)
        except FrameError as exc:
            self.send_error(exc.code, exc.message)
            return []
        self.counters.events_in += len(checked.events)
        return [InputBatch(frame.kind, checked.events, frame.seq, checked)]

    def send_events(self, kind: EventKind, events: np.ndarray, seq: int | None = None) -> None:
        """Queue output events, split into frames of at most ``max_events_per_frame``."""
        self._outgoing.extend(map(b"".join, self.events_messages(kind, events, seq)))

    def events_messages(
        self, kind: EventKind, events: np.ndarray, seq: int | None = None
    ) -> Iterator[MessageParts]:
        """Output events as messages of at most ``max_events_per_frame`` events, each encoded
        only when asked for and in its parts (the events stay in ``events``): an adapter that
        sends one before taking the next holds one frame's head at a time, whatever the number
        of events."""
        step = self.max_events_per_frame
        for start in range(0, len(events), step):
            part = events[start : start + step]
            message = encode_parts(EventsFrame(kind, part, seq))
            self.counters.frames_out += 1
            self.counters.events_out += len(part)
            yield message

    def send_end(self, seq: int | None, counts: Mapping[str, int]) -> None:
        self._send(EndFrame(seq, counts))

    def send_error(self, code: str, message: str, fatal: bool = False, detail: Any = None) -> None:
        """Queue an error frame; a fatal one ends the stream (nothing more is read)."""
        self.counters.errors += 1
        self._send(ErrorFrame(code, message, fatal, detail))
        if fatal:
            self.state = ServerState.CLOSED

    def send_stats(self, extra: Mapping[str, int | float] | None = None) -> None:
        self._send(StatsFrame({**self.counters.as_dict(), **(extra or {})}))


# ----- the client's end -----


class ClientState(StrEnum):
    #: Waiting for ``ready`` (or a fatal refusal).
    GREETING = "greeting"
    #: Greeted by a forward stream: outputs and end frames carry their batch's ``seq``.
    FORWARD = "forward"
    #: Greeted by a continuous (or DVS) stream: outputs flow, no end frames.
    CONTINUOUS = "continuous"
    #: A fatal error frame arrived, or the server broke the protocol.
    CLOSED = "closed"


class ServerMessage(StrEnum):
    """A server message, as the client's table tells them apart."""

    UNREADABLE = "unreadable"
    READY = "ready"
    BATCH_OUTPUTS = "batch_outputs"  # events with a seq
    OUTPUTS = "outputs"  # events without a seq
    BATCH_END = "batch_end"  # end with a seq
    END = "end"  # end without a seq
    STATS = "stats"
    ERROR = "error"
    FATAL = "fatal"
    OTHER_CONTROL = "other_control"  # a control op servers do not send


_DELIVER = Outcome.ACCEPT
_BEFORE_READY = Violation("{what} before the greeting")
_NO_BATCHES = Violation("{what} on a continuous stream: end frames close forward batches")

#: What the client does with each server message in each state: the next state (None: the
#: state the greeting's mode names) and whether the message is delivered or is a violation.
CLIENT_RULES: Final[
    Mapping[ClientState, Mapping[ServerMessage, tuple[ClientState | None, Outcome | Violation]]]
] = {
    ClientState.GREETING: {
        **dict.fromkeys(ServerMessage, (ClientState.CLOSED, _BEFORE_READY)),
        ServerMessage.UNREADABLE: (ClientState.CLOSED, Outcome.FAULT),
        ServerMessage.READY: (None, _DELIVER),
        ServerMessage.FATAL: (ClientState.CLOSED, _DELIVER),
    },
    ClientState.FORWARD: {
        ServerMessage.UNREADABLE: (ClientState.CLOSED, Outcome.FAULT),
        ServerMessage.READY: (ClientState.CLOSED, Violation("a second greeting")),
        ServerMessage.BATCH_OUTPUTS: (ClientState.FORWARD, _DELIVER),
        ServerMessage.OUTPUTS: (
            ClientState.CLOSED,
            Violation("{what} without a seq on a forward stream"),
        ),
        ServerMessage.BATCH_END: (ClientState.FORWARD, _DELIVER),
        ServerMessage.END: (ClientState.CLOSED, Violation("{what} without a seq")),
        ServerMessage.STATS: (ClientState.FORWARD, _DELIVER),
        ServerMessage.ERROR: (ClientState.FORWARD, _DELIVER),
        ServerMessage.FATAL: (ClientState.CLOSED, _DELIVER),
        ServerMessage.OTHER_CONTROL: (ClientState.CLOSED, Violation("servers do not send {what}")),
    },
    ClientState.CONTINUOUS: {
        ServerMessage.UNREADABLE: (ClientState.CLOSED, Outcome.FAULT),
        ServerMessage.READY: (ClientState.CLOSED, Violation("a second greeting")),
        ServerMessage.BATCH_OUTPUTS: (ClientState.CONTINUOUS, _DELIVER),
        ServerMessage.OUTPUTS: (ClientState.CONTINUOUS, _DELIVER),
        ServerMessage.BATCH_END: (ClientState.CLOSED, _NO_BATCHES),
        ServerMessage.END: (ClientState.CLOSED, _NO_BATCHES),
        ServerMessage.STATS: (ClientState.CONTINUOUS, _DELIVER),
        ServerMessage.ERROR: (ClientState.CONTINUOUS, _DELIVER),
        ServerMessage.FATAL: (ClientState.CLOSED, _DELIVER),
        ServerMessage.OTHER_CONTROL: (ClientState.CLOSED, Violation("servers do not send {what}")),
    },
    ClientState.CLOSED: {
        **dict.fromkeys(
            ServerMessage, (ClientState.CLOSED, Violation("{what} after the stream ended"))
        ),
        ServerMessage.UNREADABLE: (ClientState.CLOSED, Outcome.FAULT),
    },
}


def _server_message(frame: Frame | None) -> ServerMessage:
    if frame is None:
        return ServerMessage.UNREADABLE
    if isinstance(frame, EventsFrame):
        return ServerMessage.OUTPUTS if frame.seq is None else ServerMessage.BATCH_OUTPUTS
    if isinstance(frame, EndFrame):
        return ServerMessage.END if frame.seq is None else ServerMessage.BATCH_END
    if isinstance(frame, StatsFrame):
        return ServerMessage.STATS
    if isinstance(frame, ErrorFrame):
        return ServerMessage.FATAL if frame.fatal else ServerMessage.ERROR
    return ServerMessage.READY if frame.op == "ready" else ServerMessage.OTHER_CONTROL


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


StreamEvent = Ready | Outputs | BatchEnd | Stats | StreamError | ProtocolViolation


@dataclass
class ForwardResult:
    """Every output of one forward batch, gathered until its ``end`` frame."""

    seq: int
    parts: dict[EventKind, list[np.ndarray]] = field(default_factory=dict)

    def add(self, kind: EventKind, events: np.ndarray) -> None:
        self.parts.setdefault(kind, []).append(events)

    def events(self, kind: EventKind) -> np.ndarray:
        parts = self.parts.get(kind)
        return concat_events(parts or [], DTYPES[kind])


_MODE_STATES: Final = {
    StreamMode.FORWARD.value: ClientState.FORWARD,
    StreamMode.CONTINUOUS.value: ClientState.CONTINUOUS,
}


class ClientStream(_Endpoint):
    """The client's end: encodes requests, interprets what the server sends."""

    def __init__(self, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        super().__init__(max_frame_bytes)
        self.state = ClientState.GREETING
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

    def receive_data(self, data: Any) -> StreamEvent:
        """What one server message means, as a value (never raises): an error frame is a
        :class:`StreamError`, a message the protocol does not allow a
        :class:`ProtocolViolation` (and the stream is then CLOSED)."""
        frame, fault = self._decode(data)
        next_state, outcome = CLIENT_RULES[self.state][_server_message(frame)]
        if isinstance(frame, ControlFrame) and next_state is None:
            next_state = _MODE_STATES.get(str(frame.args.get("mode")))
            if next_state is None:
                outcome = Violation(f"a greeting with an unknown mode {frame.args.get('mode')!r}")
                next_state = ClientState.CLOSED
        assert next_state is not None
        self.state = next_state
        if isinstance(outcome, Violation):
            return ProtocolViolation(outcome.text.format(what=_describe(frame)))
        if fault is not None:
            return ProtocolViolation(f"unreadable frame ({fault.code}): {fault.message}")
        return self._deliver(frame)

    def _deliver(self, frame: Frame | None) -> StreamEvent:
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
        assert isinstance(frame, ControlFrame)
        self.info = frame.args
        return Ready(frame.args)
