"""Both stream sessions' state machines, as tables of cases: (state, message) -> (new state,
what comes out). No sockets, no event loop."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from specklab.schemas.events import READOUT_DTYPE, EventKind, spikes
from specklab.schemas.frames import (
    ControlFrame,
    EndFrame,
    ErrorFrame,
    EventsFrame,
    StatsFrame,
    encode,
)
from specklab.schemas.stream import (
    CLIENT_RULES,
    SERVER_RULES,
    BatchEnd,
    ClientMessage,
    ClientState,
    ClientStream,
    ControlRequest,
    InputBatch,
    Outputs,
    ProtocolViolation,
    Ready,
    ServerMessage,
    ServerState,
    ServerStream,
    Stats,
    StreamError,
    StreamMode,
)

from .chip_configs import guide_network

CONFIG = guide_network()
ONE_SPIKE = spikes(t=5, layer=0, feature=0, x=1, y=1)


def test_every_state_has_a_rule_for_every_message() -> None:
    assert set(SERVER_RULES) == set(ServerState)
    assert all(set(rules) == set(ClientMessage) for rules in SERVER_RULES.values())
    assert set(CLIENT_RULES) == set(ClientState)
    assert all(set(rules) == set(ServerMessage) for rules in CLIENT_RULES.values())


# ----- the server -----


def server_in(state: ServerState) -> ServerStream:
    mode = StreamMode.CONTINUOUS if state is ServerState.CONTINUOUS else StreamMode.FORWARD
    server = ServerStream(CONFIG, mode, takes_input=state is not ServerState.LISTENING)
    if state is not ServerState.GREETING:
        server.start({})
    if state is ServerState.CLOSED:
        server.send_error("booking_ended", "over", fatal=True)
    server.data_to_send()
    assert server.state is state
    return server


CLIENT_MESSAGES: dict[str, bytes | str] = {
    "batch": encode(EventsFrame(EventKind.SPIKE, ONE_SPIKE, seq=3)),
    "unnumbered": encode(EventsFrame(EventKind.SPIKE, ONE_SPIKE)),
    "readout": encode(EventsFrame(EventKind.READOUT, np.zeros(1, READOUT_DTYPE), seq=3)),
    "heartbeat": encode(ControlFrame("heartbeat")),
    "unknown op": encode(ControlFrame("self_destruct")),
    "end": encode(EndFrame(1)),
    "stats": encode(StatsFrame({"a": 1})),
    "error": encode(ErrorFrame("x", "y")),
    "garbage": b"\xc1garbage",
    "text": "text is not a frame",
}

#: What the server hands its adapter (a type), or the code of the error frame it answers
#: with, or None for nothing at all.
G, F, C, L, X = (
    ServerState.GREETING,
    ServerState.FORWARD,
    ServerState.CONTINUOUS,
    ServerState.LISTENING,
    ServerState.CLOSED,
)
SERVER_CASES: list[tuple[ServerState, str, type | str | None]] = [
    *((G, message, "not_ready") for message in CLIENT_MESSAGES),
    (F, "batch", InputBatch),
    (F, "unnumbered", "missing_seq"),
    (F, "readout", "bad_input"),
    (F, "heartbeat", ControlRequest),
    (F, "unknown op", "unknown_op"),
    (F, "end", "unexpected_frame"),
    (F, "stats", "unexpected_frame"),
    (F, "error", "unexpected_frame"),
    (F, "garbage", "malformed"),
    (F, "text", "malformed"),
    (C, "batch", InputBatch),
    (C, "unnumbered", InputBatch),
    (C, "readout", "bad_input"),
    (C, "heartbeat", ControlRequest),
    (C, "unknown op", "unknown_op"),
    (C, "end", "unexpected_frame"),
    (C, "garbage", "malformed"),
    (L, "batch", "bad_input"),  # DVS streams take no input
    (L, "unnumbered", "bad_input"),
    (L, "readout", "bad_input"),
    (L, "heartbeat", ControlRequest),
    (L, "unknown op", "unknown_op"),
    (L, "stats", "unexpected_frame"),
    (L, "text", "malformed"),
    *((X, message, None) for message in CLIENT_MESSAGES),  # after a fatal error: not read
]


@pytest.mark.parametrize(("state", "message", "expected"), SERVER_CASES)
def test_server_rules(state: ServerState, message: str, expected: type | str | None) -> None:
    server = server_in(state)
    handed = server.receive_data(CLIENT_MESSAGES[message])
    replies = server.data_to_send()
    assert server.state is state  # messages never move the server
    if isinstance(expected, type):
        [request] = handed
        assert isinstance(request, expected) and replies == []
        return
    assert handed == []
    if expected is None:
        assert replies == []
        return
    [reply] = replies
    error = client_in(ClientState.CONTINUOUS).receive_data(reply)
    assert isinstance(error, StreamError)
    assert (error.code, error.fatal) == (expected, False) and error.message


def test_listening_refuses_input_with_the_reason() -> None:
    server = server_in(ServerState.LISTENING)
    server.receive_data(CLIENT_MESSAGES["batch"])
    error = client_in(ClientState.CONTINUOUS).receive_data(server.data_to_send()[0])
    assert isinstance(error, StreamError) and "send input on /stream" in error.message


@pytest.mark.parametrize(
    ("mode", "takes_input", "state"),
    [
        (StreamMode.FORWARD, True, ServerState.FORWARD),
        (StreamMode.CONTINUOUS, True, ServerState.CONTINUOUS),
        (StreamMode.CONTINUOUS, False, ServerState.LISTENING),
    ],
)
def test_the_greeting_moves_the_server_to_its_mode(
    mode: StreamMode, takes_input: bool, state: ServerState
) -> None:
    server = ServerStream(CONFIG, mode, takes_input=takes_input)
    assert server.state is ServerState.GREETING
    server.start({})
    assert server.state is state


@pytest.mark.parametrize("fatal,state", [(False, ServerState.FORWARD), (True, ServerState.CLOSED)])
def test_only_a_fatal_error_closes_the_server(fatal: bool, state: ServerState) -> None:
    server = server_in(ServerState.FORWARD)
    server.send_error("device_timeout", "slow", fatal=fatal)
    assert server.state is state


# ----- the client -----

SERVER_MESSAGES: dict[str, Callable[[], bytes]] = {
    "ready forward": lambda: encode(ControlFrame("ready", {"mode": "forward"})),
    "ready continuous": lambda: encode(ControlFrame("ready", {"mode": "continuous"})),
    "ready unknown mode": lambda: encode(ControlFrame("ready", {"mode": "sideways"})),
    "batch outputs": lambda: encode(EventsFrame(EventKind.SPIKE, ONE_SPIKE, seq=0)),
    "outputs": lambda: encode(EventsFrame(EventKind.SPIKE, ONE_SPIKE)),
    "batch end": lambda: encode(EndFrame(0, {"spike": 1})),
    "end": lambda: encode(EndFrame(None)),
    "stats": lambda: encode(StatsFrame({"frames_in": 1})),
    "error": lambda: encode(ErrorFrame("bad_input", "x=99")),
    "fatal": lambda: encode(ErrorFrame("booking_ended", "over", fatal=True)),
    "other control": lambda: encode(ControlFrame("heartbeat")),
    "garbage": lambda: b"\xc1garbage",
}

CG, CF, CC, CX = (
    ClientState.GREETING,
    ClientState.FORWARD,
    ClientState.CONTINUOUS,
    ClientState.CLOSED,
)
V = ProtocolViolation
CLIENT_CASES: list[tuple[ClientState, str, ClientState, type]] = [
    (CG, "ready forward", CF, Ready),
    (CG, "ready continuous", CC, Ready),
    (CG, "ready unknown mode", CX, V),
    (CG, "fatal", CX, StreamError),  # a refusal
    (CG, "error", CX, V),
    (CG, "batch outputs", CX, V),
    (CG, "stats", CX, V),
    (CG, "garbage", CX, V),
    (CF, "ready forward", CX, V),  # a second greeting
    (CF, "batch outputs", CF, Outputs),
    (CF, "outputs", CX, V),  # forward outputs carry their batch's seq
    (CF, "batch end", CF, BatchEnd),
    (CF, "end", CX, V),
    (CF, "stats", CF, Stats),
    (CF, "error", CF, StreamError),
    (CF, "fatal", CX, StreamError),
    (CF, "other control", CX, V),
    (CF, "garbage", CX, V),
    (CC, "ready continuous", CX, V),
    (CC, "batch outputs", CC, Outputs),
    (CC, "outputs", CC, Outputs),
    (CC, "batch end", CX, V),  # end frames close forward batches only
    (CC, "end", CX, V),
    (CC, "stats", CC, Stats),
    (CC, "error", CC, StreamError),
    (CC, "fatal", CX, StreamError),
    (CC, "garbage", CX, V),
    *((CX, message, CX, V) for message in SERVER_MESSAGES),  # nothing after the end
]


def client_in(state: ClientState) -> ClientStream:
    client = ClientStream()
    greeting = {CF: "ready forward", CC: "ready continuous", CX: "fatal"}.get(state)
    if greeting is not None:
        client.receive_data(SERVER_MESSAGES[greeting]())
    assert client.state is state
    return client


@pytest.mark.parametrize(("state", "message", "new_state", "expected"), CLIENT_CASES)
def test_client_rules(
    state: ClientState, message: str, new_state: ClientState, expected: type
) -> None:
    client = client_in(state)
    value = client.receive_data(SERVER_MESSAGES[message]())  # never raises
    assert isinstance(value, expected), value
    assert client.state is new_state


def test_a_violation_says_what_came_when() -> None:
    client = client_in(ClientState.CONTINUOUS)
    value = client.receive_data(SERVER_MESSAGES["batch end"]())
    assert isinstance(value, ProtocolViolation)
    assert "EndFrames on a continuous stream" in value.message
    garbage = client_in(ClientState.FORWARD).receive_data(b"\xc1garbage")
    assert isinstance(garbage, ProtocolViolation) and "malformed" in garbage.message


def test_the_greeting_is_kept_as_the_streams_info() -> None:
    client = client_in(ClientState.GREETING)
    ready = client.receive_data(SERVER_MESSAGES["ready forward"]())
    assert isinstance(ready, Ready) and client.info == {"mode": "forward"}
