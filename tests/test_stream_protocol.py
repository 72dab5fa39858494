"""Both ends of the stream session, driven by feeding frames: no sockets, no event loop."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specklab.schemas.events import (
    DVS_DTYPE,
    READOUT_DTYPE,
    SPIKE_DTYPE,
    EventKind,
    dvs_events,
    spikes,
)
from specklab.schemas.frames import (
    MAX_FRAME_BYTES,
    ControlFrame,
    EndFrame,
    EventsFrame,
    StatsFrame,
    encode,
)
from specklab.schemas.inputs import MAX_TIMESTAMP_US
from specklab.schemas.stream import (
    BatchEnd,
    ClientStream,
    ControlRequest,
    ForwardResult,
    InputBatch,
    Outputs,
    Ready,
    ServerStream,
    Stats,
    StreamError,
    StreamMode,
)

from .chip_configs import guide_network


@pytest.fixture(scope="module")
def config():
    return guide_network()


@pytest.fixture
def server(config) -> ServerStream:
    stream = ServerStream(config, StreamMode.FORWARD, max_events_per_frame=4)
    stream.start({"device": "virtual-speck2fdevkit:0"})
    return stream


def connect(server: ServerStream) -> ClientStream:
    client = ClientStream()
    [greeting] = server.data_to_send()
    ready = client.receive_data(greeting)
    assert isinstance(ready, Ready)
    return client


def test_greeting_describes_the_deployment(server: ServerStream) -> None:
    client = connect(server)
    assert client.info == {
        "mode": "forward",
        "layers": {"0": 0, "1": 3, "2": 5, "3": 6, "4": 1},
        "inputs": [0],
        "dvs_input": False,
        "device": "virtual-speck2fdevkit:0",
    }


def test_input_spikes_reach_the_device_on_their_core(server: ServerStream) -> None:
    client = connect(server)
    seq = client.send_events("spike", spikes(t=[1, 2, 2], layer=0, feature=0, x=[0, 27, 5], y=3))
    [message] = client.data_to_send()
    [batch] = server.receive_data(message)
    assert isinstance(batch, InputBatch) and batch.seq == seq == 0
    assert batch.events["core"].tolist() == [0, 0, 0]
    assert batch.events["x"].tolist() == [0, 27, 5]
    assert server.counters.events_in == 3
    assert server.data_to_send() == []


def test_outputs_are_split_into_frames_and_closed_by_end(server: ServerStream) -> None:
    client = connect(server)
    out = np.zeros(10, SPIKE_DTYPE)
    out["t"] = np.arange(10)
    server.send_events(EventKind.SPIKE, out, seq=7)
    server.send_end(7, {"spike": 10})
    messages = server.data_to_send()
    assert len(messages) == 4  # 4 + 4 + 2 events, then the end frame
    result = ForwardResult(seq=7)
    for message in messages[:-1]:
        event = client.receive_data(message)
        assert isinstance(event, Outputs) and event.seq == 7
        result.add(event.kind, event.events)
    assert client.receive_data(messages[-1]) == BatchEnd(7, {"spike": 10})
    np.testing.assert_array_equal(result.events(EventKind.SPIKE), out)
    assert len(result.events(EventKind.READOUT)) == 0


def batch(kind: EventKind, events: np.ndarray) -> EventsFrame:
    """An input batch as a client sends it: numbered."""
    return EventsFrame(kind, events, seq=0)


def spike_input(t: np.typing.ArrayLike = 0, layer: int = 0, feature: int = 0, x: int = 0) -> bytes:
    """An input batch of spikes (``y`` = 0), encoded."""
    return encode(batch(EventKind.SPIKE, spikes(t=t, layer=layer, feature=feature, x=x, y=0)))


BAD_INPUT = {
    "not msgpack": (b"\x00\xff", "malformed"),
    "unknown frame type": (b"\x82\xa1v\x01\xa4type\xa3foo", "unknown_type"),
    "layer that takes no input": (spike_input(layer=2), "bad_input"),
    "layer beyond the model": (spike_input(layer=9), "bad_input"),
    "x out of range": (spike_input(x=28), "bad_input"),
    "feature out of range": (spike_input(feature=1), "bad_input"),
    "timestamp of 2^63 us": (spike_input(t=1 << 63), "bad_input"),
    "timestamp past the largest": (spike_input(t=[0, MAX_TIMESTAMP_US + 1]), "bad_input"),
    "frame over the size limit": (b"\x00" * (MAX_FRAME_BYTES + 1), "too_large"),
    "events out of order": (spike_input(t=[5, 4]), "bad_input"),
    "dvs without a dvs layer": (
        encode(batch(EventKind.DVS, dvs_events(t=0, x=0, y=0, p=0))),
        "bad_input",
    ),
    "readout events as input": (
        encode(batch(EventKind.READOUT, np.zeros(1, READOUT_DTYPE))),
        "bad_input",
    ),
    "unknown control op": (encode(ControlFrame("self_destruct")), "unknown_op"),
    "end frame from a client": (encode(EndFrame(1)), "unexpected_frame"),
    "stats frame from a client": (encode(StatsFrame({"a": 1})), "unexpected_frame"),
}


@pytest.mark.parametrize("message,code", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_gets_a_non_fatal_error_and_the_session_goes_on(
    server: ServerStream, message: bytes, code: str
) -> None:
    client = connect(server)
    assert server.receive_data(message) == []
    [reply] = server.data_to_send()
    error = client.receive_data(reply)
    assert isinstance(error, StreamError)
    assert (error.code, error.fatal) == (code, False)
    assert error.message
    # the session still works
    client.send_events("spike", spikes(t=0, layer=0, feature=0, x=1, y=1))
    [batch] = server.receive_data(client.data_to_send()[0])
    assert isinstance(batch, InputBatch)


def test_error_message_names_the_offending_event(server: ServerStream) -> None:
    client = connect(server)
    client.send_events("spike", spikes(t=[0, 1, 2], layer=0, feature=0, x=[1, 40, 50], y=0))
    server.receive_data(client.data_to_send()[0])
    error = client.receive_data(server.data_to_send()[0])
    assert isinstance(error, StreamError)
    assert "event 1: x=40" in error.message and "x < 28" in error.message
    assert "2 such events" in error.message


@pytest.mark.parametrize("times", [[0, MAX_TIMESTAMP_US + 1], [MAX_TIMESTAMP_US + 1, 0]])
def test_a_timestamp_past_the_largest_is_named_sorted_or_not(
    server: ServerStream, times: list[int]
) -> None:
    """Sorted times are checked in one pass (their largest is the last); unsorted ones still
    get the timestamp fault first."""
    client = connect(server)
    client.send_events("spike", spikes(t=times, layer=0, feature=0, x=0, y=0))
    assert server.receive_data(client.data_to_send()[0]) == []
    error = client.receive_data(server.data_to_send()[0])
    assert isinstance(error, StreamError)
    index = times.index(MAX_TIMESTAMP_US + 1)
    assert f"event {index}: t={MAX_TIMESTAMP_US + 1} is beyond the largest" in error.message


def test_dvs_input_is_checked_against_the_sensor(config) -> None:
    dvs_config = guide_network(dvs_input=True)
    server = ServerStream(dvs_config, StreamMode.CONTINUOUS)
    server.start({})
    client = connect(server)
    client.send_events("dvs", dvs_events(t=[0, 1], x=[0, 127], y=[127, 0], p=[0, 1]))
    [batch] = server.receive_data(client.data_to_send()[0])
    assert isinstance(batch, InputBatch) and batch.events.dtype == DVS_DTYPE
    client.send_events("dvs", dvs_events(t=0, x=128, y=0, p=0))
    assert server.receive_data(client.data_to_send()[0]) == []
    assert "x=128" in client.receive_data(server.data_to_send()[0]).message
    client.send_events("spike", spikes(t=0, layer=0, feature=0, x=0, y=0))
    assert server.receive_data(client.data_to_send()[0]) == []
    assert "takes no input spikes" in client.receive_data(server.data_to_send()[0]).message


def test_control_requests_and_stats(server: ServerStream) -> None:
    client = connect(server)
    client.send_control("reset_states")
    client.send_control("heartbeat")
    requests = [server.receive_data(m)[0] for m in client.data_to_send()]
    assert requests == [ControlRequest("reset_states", {}), ControlRequest("heartbeat", {})]
    server.send_stats({"queue_depth": 3})
    stats = client.receive_data(server.data_to_send()[0])
    assert isinstance(stats, Stats)
    assert stats.counters["frames_in"] == 2 and stats.counters["queue_depth"] == 3


def test_fatal_errors_reach_the_client_as_fatal(server: ServerStream) -> None:
    client = connect(server)
    server.send_error("device_offline", "virtual-speck2fdevkit:0 was unplugged", fatal=True)
    error = client.receive_data(server.data_to_send()[0])
    assert isinstance(error, StreamError) and error.fatal and error.code == "device_offline"


frame_like = st.dictionaries(
    st.sampled_from(["v", "type", "kind", "dtype", "bin", "seq", "op", "args", "code"]),
    st.one_of(
        st.integers(-2, 3),
        st.sampled_from(["events", "control", "end", "stats", "spike", "dvs", "readout", "stats"]),
        st.binary(max_size=64),
        st.dictionaries(st.text(max_size=4), st.integers(-(2**31), 2**31), max_size=2),
    ),
    max_size=7,
)


#: Spike batches of any timestamps (up to 2^64 - 1) and coordinates, in and out of range.
spike_batches = st.lists(
    st.tuples(
        st.integers(0, (1 << 64) - 1), st.integers(0, 3), st.integers(0, 2), st.integers(0, 40)
    ),
    min_size=1,
    max_size=8,
).map(
    lambda rows: encode(
        batch(
            EventKind.SPIKE,
            spikes(
                t=np.array([r[0] for r in rows], dtype=np.uint64),
                layer=[r[1] for r in rows],
                feature=[r[2] for r in rows],
                x=[r[3] for r in rows],
                y=0,
            ),
        )
    )
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    message=st.binary(max_size=120)
    | frame_like.map(lambda body: msgpack.packb(body))
    | spike_batches
)
def test_fuzzed_messages_never_break_the_server_session(config, message: bytes) -> None:
    server = ServerStream(config, StreamMode.FORWARD)
    server.start({})
    client = connect(server)
    requests = server.receive_data(message)
    replies = server.data_to_send()
    if requests:  # a well-formed request: nothing to complain about
        assert replies == []
        for request in requests:
            if isinstance(request, InputBatch):  # what reaches a device is in range
                assert int(request.events["t"].max()) <= MAX_TIMESTAMP_US
    else:
        [reply] = replies
        error = client.receive_data(reply)
        assert isinstance(error, StreamError) and not error.fatal and error.message
