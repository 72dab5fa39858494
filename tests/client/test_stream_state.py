"""The client's stream logic driven against the schemas' ServerStream, in process."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from specklab.client import ProtocolError, StreamError
from specklab.client._stream import (
    CLOSED,
    EXHAUSTED,
    Emit,
    InputOptions,
    Pull,
    Receive,
    Send,
    StreamOp,
    StreamState,
)
from specklab.schemas.events import READOUT_DTYPE, EventKind, spikes
from specklab.schemas.stream import InputBatch, ServerStream, StreamMode

from ..chip_configs import guide_network

CONFIG = guide_network()


class FakeDaemon:
    """A ServerStream whose 'device' answers each spike with a spike on the last layer."""

    def __init__(self, mode: StreamMode, max_events_per_frame: int = 2) -> None:
        self.server = ServerStream(CONFIG, mode, max_events_per_frame=max_events_per_frame)
        self.server.start({"device": "virtual-speck2fdevkit:0"})
        self.inbox: deque[bytes] = deque(self.server.data_to_send())
        self.received: list[InputBatch] = []
        self.closed = False

    def accept(self, message: bytes) -> None:
        for item in self.server.receive_data(message):
            if isinstance(item, InputBatch):
                self.received.append(item)
                out = spikes(t=item.events["t"], layer=4, feature=item.events["x"], x=0, y=0)
                self.server.send_events(EventKind.SPIKE, out, item.seq)
                if self.server.mode is StreamMode.FORWARD:
                    self.server.send_end(item.seq, {"events_in": len(item.events)})
            elif item.op == "stats":
                self.server.send_stats()
        self.inbox.extend(self.server.data_to_send())

    def reply(self) -> Any:
        if self.inbox:
            return self.inbox.popleft()
        return CLOSED if self.closed else None


def run(daemon: FakeDaemon, op: StreamOp[Any], source: Iterator[Any] | None = None) -> tuple:
    emitted: list[Any] = []
    reply: Any = None
    while True:
        try:
            step = op.send(reply)
        except StopIteration as done:
            return done.value, emitted
        reply = None
        if isinstance(step, Send):
            for message in step.messages:
                daemon.accept(message)
        elif isinstance(step, Receive):
            reply = daemon.reply()
        elif isinstance(step, Pull):
            reply = EXHAUSTED if source is None else next(source, EXHAUSTED)
        elif isinstance(step, Emit):
            emitted.append(step.value)


def connected(mode: StreamMode) -> tuple[FakeDaemon, StreamState]:
    daemon, state = FakeDaemon(mode), StreamState(mode)
    info, _ = run(daemon, state.greet())
    assert info["inputs"] == [0] and info["mode"] == mode.value
    return daemon, state


def batch(*xs: int) -> np.ndarray:
    return spikes(t=np.arange(len(xs)), layer=0, feature=0, x=list(xs), y=0)


def test_forward_gathers_every_frame_of_a_batch_until_its_end() -> None:
    daemon, state = connected(StreamMode.FORWARD)
    output, _ = run(daemon, state.forward(batch(1, 2, 3, 4, 5), InputOptions()))
    # Five outputs over three frames of at most two events, closed by one end frame.
    assert output.spikes["feature"].tolist() == [1, 2, 3, 4, 5]
    assert output.counts == {"events_in": 5}
    assert len(output.readout) == 0 and output.readout.dtype == READOUT_DTYPE


def test_forward_fills_in_the_input_layer_from_the_greeting() -> None:
    daemon, state = connected(StreamMode.FORWARD)
    raster = np.zeros((2, 1, 28, 28), dtype=np.int64)
    raster[1, 0, 3, 4] = 2
    output, _ = run(daemon, state.forward(raster, InputOptions(dt=50)))
    assert daemon.received[0].events["t"].tolist() == [50, 50]
    assert output.spikes["feature"].tolist() == [4, 4]


def test_forward_many_keeps_a_window_in_flight_and_yields_in_order() -> None:
    daemon, state = connected(StreamMode.FORWARD)
    batches = iter([batch(1), batch(2, 3), batch(4)])
    _, outputs = run(daemon, state.forward_many(InputOptions(), window=2), batches)
    assert [o.spikes["feature"].tolist() for o in outputs] == [[1], [2, 3], [4]]
    assert [o.seq for o in outputs] == [0, 1, 2]


def test_bad_input_raises_a_non_fatal_stream_error_and_the_stream_goes_on() -> None:
    daemon, state = connected(StreamMode.FORWARD)
    bad = spikes(t=0, layer=3, feature=0, x=0, y=0)  # layer 3 takes no input
    with pytest.raises(StreamError) as raised:
        run(daemon, state.forward(bad, InputOptions()))
    assert raised.value.code == "bad_input" and not raised.value.fatal
    assert "model layer 3 takes no input" in raised.value.message
    output, _ = run(daemon, state.forward(batch(7), InputOptions()))
    assert output.spikes["feature"].tolist() == [7]


def test_a_fatal_error_frame_is_kept_as_the_reason_the_stream_ended() -> None:
    daemon, state = connected(StreamMode.CONTINUOUS)
    daemon.server.send_error("booking_ended", "your booking ended", fatal=True)
    daemon.inbox.extend(daemon.server.data_to_send())
    daemon.closed = True
    with pytest.raises(StreamError, match="your booking ended") as raised:
        run(daemon, state.outputs(idle=None))
    assert raised.value.fatal and state.failure is raised.value


def test_continuous_outputs_flow_until_idle() -> None:
    daemon, state = connected(StreamMode.CONTINUOUS)
    sent, _ = run(daemon, state.send_all(InputOptions()), iter([batch(1, 2, 3), batch(4)]))
    assert sent == 2
    _, outputs = run(daemon, state.outputs(idle=0.01))
    assert np.concatenate(outputs)["feature"].tolist() == [1, 2, 3, 4]


def test_large_continuous_batches_are_split_but_forward_batches_stay_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("specklab.client._stream.SPLIT_EVENTS", 2)
    state = StreamState(StreamMode.CONTINUOUS)
    assert len(state.encode_batch(batch(1, 2, 3, 4, 5), InputOptions())[1]) == 3
    state = StreamState(StreamMode.FORWARD)
    assert len(state.encode_batch(batch(1, 2, 3, 4, 5), InputOptions())[1]) == 1


def test_a_batch_larger_than_a_frame_is_refused_before_sending() -> None:
    state = StreamState(StreamMode.FORWARD, max_frame_bytes=100)
    with pytest.raises(ValueError, match="several batches"):
        state.encode_batch(batch(*range(20)), InputOptions())


def test_stats_keeps_outputs_that_arrive_meanwhile() -> None:
    daemon, state = connected(StreamMode.CONTINUOUS)
    run(daemon, state.send_all(InputOptions()), iter([batch(9)]))
    stats, _ = run(daemon, state.stats(timeout=1))
    assert stats["events_in"] == 1
    _, outputs = run(daemon, state.outputs(idle=0.01))
    assert np.concatenate(outputs)["feature"].tolist() == [9]


def test_a_stream_without_a_greeting_is_a_protocol_error() -> None:
    daemon, state = FakeDaemon(StreamMode.FORWARD), StreamState(StreamMode.FORWARD)
    daemon.inbox.clear()
    daemon.inbox.append(b"\x93\x01\x02\x03")  # msgpack, but not a frame
    with pytest.raises(ProtocolError, match="unreadable frame"):
        run(daemon, state.greet())


def test_tuples_sent_to_a_spike_network_are_told_what_a_spike_needs() -> None:
    _, state = connected(StreamMode.FORWARD)
    with pytest.raises(TypeError, match="spikes must be objects with the attributes") as raised:
        state.to_events([(0, 1, 2, 3, 4)], InputOptions())
    assert "feature" in str(raised.value) and "'p'" not in str(raised.value)
