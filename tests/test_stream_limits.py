"""Every stream and device call has a bounded cost (issue 13): chunked and interruptible
simulator runs, devices restarted when a call does not stop, batch limits, bounded output
memory, bounded continuous input, bad input that never ends a stream, token re-checks and
the shutdown frame."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from specklab.schemas.events import SPIKE_DTYPE, EventKind, spikes
from specklab.schemas.frames import EventsFrame, encode
from specklab.schemas.stream import (
    CLOSE_ENDED,
    CLOSE_TOKEN_INVALID,
    MAX_EVENTS_PER_FRAME,
    BatchEnd,
    ClientStream,
    Outputs,
    ServerStream,
    Stats,
    StreamError,
    StreamMode,
)
from specklab.server.api.streams import _Connection
from specklab.server.devices.base import DeviceDescription, DeviceOutput
from specklab.server.devices.errors import (
    DeviceStateError,
    DeviceTimeout,
    DeviceUnresponsive,
    InputQueueFull,
    InvalidEvents,
    OutputTooLarge,
)
from specklab.server.devices.manager import DeviceManager
from specklab.server.devices.samna_loader import SamnaLoader
from specklab.server.devices.samna_probe import SamnaState, SamnaStatus
from specklab.server.devices.shared import InputQueue
from specklab.server.devices.virtual import VirtualDevkit
from specklab.server.simulator import ChipSimulator, engine
from specklab.server.transport import SEND_PARTS

from .chip_configs import guide_network
from .guide_inputs import guide_spikes
from .simulator.random_chips import random_chip, random_inputs
from .stream_lab import DEVICE, StreamLab, open_stream, stream_lab


def leaky_guide(slow_clock_hz: float = 1_000_000.0):
    config = guide_network()
    for core in config.cnn_layers.values():
        core.leak_enable = True
    config.slow_clock_hz = slow_clock_hz
    return config


def guide_input(n: int, span_us: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return guide_network().spikes_to_cores(guide_spikes(rng, n, span_us))


# ----- the simulator runs in chunks, and stops between them when asked -----


@pytest.mark.parametrize("seed", range(12))
def test_a_run_in_small_chunks_is_the_run_in_one_call(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = random_chip(seed)
    spike_in, dvs_in = random_inputs(config, seed, n=300)
    whole = ChipSimulator(config)
    expected = [whole.run(spike_in, dvs_in), whole.advance_to(int(spike_in["t"].max()) + 50_000)]
    monkeypatch.setattr(engine, "CHUNK_EVENTS", 3)
    monkeypatch.setattr(engine, "MAX_CHUNK_TICKS", 2)
    chunked = ChipSimulator(config)
    got = [chunked.run(spike_in, dvs_in), chunked.advance_to(int(spike_in["t"].max()) + 50_000)]
    for want, have in zip(expected, got, strict=True):
        for name in ("spikes", "dvs", "readout"):
            np.testing.assert_array_equal(getattr(have, name), getattr(want, name))
    for core in config.cnn_layers:
        np.testing.assert_array_equal(chunked.states(core), whole.states(core))
    assert chunked.time_us == whole.time_us


def test_a_cancelled_run_stops_between_chunks() -> None:
    simulator = ChipSimulator(leaky_guide())
    cancel = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            simulator.advance_to(10**10, cancel=cancel)  # ~10^10 leak ticks: hours
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    while simulator.time_us == 0:  # the first chunk has run
        worker.join(0.01)
    cancel.set()
    worker.join(60)
    assert not worker.is_alive()
    assert len(failure) == 1 and isinstance(failure[0], engine.Cancelled)
    assert 0 < simulator.time_us < 10**10


def test_the_virtual_devkit_stops_a_call_whose_answer_grows_too_large() -> None:
    description = DeviceDescription(DEVICE, "speck2fdevkit", "speck2f", virtual=True)
    devkit = VirtualDevkit(description, max_output_events=10_000)
    devkit.open()
    devkit.apply(guide_network())  # random weights: one input spike can cause 10^6 spikes
    with pytest.raises(OutputTooLarge, match="10000"):
        devkit.forward(guide_input(20, 20_000), timeout=1.0)
    small = random_chip(1)
    devkit.apply(small)
    spike_in, _ = random_inputs(small, 1)
    assert 0 < devkit.forward(spike_in, timeout=1.0).count <= 10_000


# ----- continuous-mode input waits in a bounded queue -----


def two_runs_in_order() -> tuple[InputQueue, np.ndarray, np.ndarray]:
    queue = InputQueue(SPIKE_DTYPE, max_events=100, horizon_us=1_000)
    first, second = guide_input(10, 100), guide_input(10, 100, seed=1)
    second["t"] += 100
    queue.add(first, now_us=0)
    queue.add(second, now_us=0)
    return queue, first, second


def test_the_input_queue_keeps_time_order_without_resorting_in_order_writes() -> None:
    queue, first, second = two_runs_in_order()
    late = guide_input(5, 200, seed=2)  # goes back in time: merged with what it overlaps
    queue.add(late, now_us=0)
    assert len(queue) == 25
    everything = np.concatenate([first, second, late])
    expected = everything[np.argsort(everything["t"], kind="stable")]
    due, _ = queue.pop_due(int(first["t"].max()))
    assert len(due) and int(due["t"].max()) <= int(first["t"].max())
    rest, _ = queue.pop_due(10_000)
    np.testing.assert_array_equal(np.concatenate([due, rest]), expected)
    assert len(queue) == 0 and len(queue.pop_due(10**9)[0]) == 0


def test_an_in_order_write_is_queued_as_it_is() -> None:
    queue, first, second = two_runs_in_order()
    assert np.shares_memory(queue.pop_due(99)[0], first)
    assert np.shares_memory(queue.pop_due(199)[0], second)


def test_what_the_queue_hands_out_is_checked_only_if_every_part_of_it_was() -> None:
    queue = InputQueue(SPIKE_DTYPE, max_events=100, horizon_us=10_000)

    def run(first_us: int) -> np.ndarray:
        events = guide_input(10, 100)
        events["t"] = first_us + 10 * np.arange(10)
        return events

    queue.add(run(0), now_us=0, checked=True)
    queue.add(run(1_000), now_us=0)
    assert queue.pop_due(50)[1]  # a slice of the checked run
    assert not queue.pop_due(1_050)[1]  # the rest of it and a part of the unchecked one
    assert not queue.pop_due(10_000)[1]
    queue.add(run(2_000), now_us=0, checked=True)
    queue.add(run(2_005), now_us=0, checked=True)  # merged with the run it overlaps
    due, checked = queue.pop_due(10_000)
    assert checked and len(due) == 20 and bool((np.diff(due["t"].astype(np.int64)) >= 0).all())
    for first_checked in (True, False):  # merged: not all of it was checked
        queue.add(run(3_000), now_us=0, checked=first_checked)
        queue.add(run(3_005), now_us=0, checked=not first_checked)
        assert not queue.pop_due(10_000)[1]


def test_the_input_queue_refuses_far_future_and_too_many_events() -> None:
    queue = InputQueue(SPIKE_DTYPE, max_events=30, horizon_us=1_000)
    far = guide_input(3, 10)
    far["t"][-1] = 5_001
    with pytest.raises(InvalidEvents, match="ahead"):
        queue.add(far, now_us=4_000)
    assert len(queue) == 0
    queue.add(far, now_us=4_001)
    with pytest.raises(InputQueueFull, match="30"):
        queue.add(guide_input(28, 10), now_us=0)
    assert len(queue) == 3


# ----- device calls that overrun their timeout -----


class StuckDevkit(VirtualDevkit):
    """A virtual devkit whose forward hangs, deaf to interrupts, until ``release`` is set."""

    release = threading.Event()

    def forward(self, spikes=None, dvs=None, *, timeout: float, checked=None) -> DeviceOutput:
        self.release.wait(60)
        return DeviceOutput()


def no_samna() -> SamnaLoader:
    return SamnaLoader(
        timeout_s=5.0, probe=lambda: SamnaStatus(SamnaState.NOT_INSTALLED, "no samna")
    )


@pytest.fixture
async def manager() -> AsyncIterator[DeviceManager]:
    made: list[VirtualDevkit] = []

    def factory(description: DeviceDescription) -> VirtualDevkit:
        kind = StuckDevkit if not made else VirtualDevkit  # the first driver hangs
        made.append(kind(description))
        return made[-1]

    devices = DeviceManager(
        host="lab", virtual=["speck2fdevkit=1"], samna=no_samna(), virtual_factory=factory
    )
    devices.made = made  # type: ignore[attr-defined]
    await devices.start()
    yield devices
    StuckDevkit.release.set()
    await devices.stop()


async def test_an_overrunning_forward_is_interrupted_and_the_device_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    devices = DeviceManager(host="lab", virtual=["speck2fdevkit=1"], samna=no_samna())
    await devices.start()
    try:
        hold = await devices.open_hold(DEVICE, owner="ada")
        await hold.apply(leaky_guide())
        long_batch = guide_input(10, 10**9)  # 10^9 leak ticks: hours of work
        with pytest.raises(DeviceTimeout, match="forward") as timed_out:
            await hold.forward(long_batch, timeout=0.2)
        assert not isinstance(timed_out.value, DeviceUnresponsive)
        # the same hold and thread answer the next calls at once
        await hold.apply(random_chip(1))
        output = await hold.forward(random_inputs(random_chip(1), 1)[0], timeout=60)
        assert output.count > 0
        assert devices.state(DEVICE).busy
    finally:
        await devices.stop()


async def test_a_device_stuck_in_a_call_is_restarted_for_the_next_user(
    manager: DeviceManager,
) -> None:
    hold = await manager.open_hold(DEVICE, owner="ada")
    await hold.apply(leaky_guide())
    with pytest.raises(DeviceUnresponsive, match="did not stop"):
        await hold.forward(guide_input(10, 1000), timeout=0.1)
    assert hold.ended.is_set() and isinstance(hold.end_error, DeviceTimeout)
    with pytest.raises(DeviceTimeout):
        await hold.read(0.01)
    state = manager.state(DEVICE)
    assert state.online and not state.busy
    # bob gets a fresh driver on a fresh thread, without a daemon restart
    again = await manager.open_hold(DEVICE, owner="bob")
    await again.apply(random_chip(1))
    output = await again.forward(random_inputs(random_chip(1), 1)[0], timeout=60)
    assert output.count > 0
    assert [type(d) for d in manager.made] == [StuckDevkit, VirtualDevkit]  # type: ignore[attr-defined]
    await again.close()
    with pytest.raises(DeviceStateError):
        await again.read(0.01)


# ----- through a real daemon -----


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamLab]:
    env = {"SPECKLAB_TOKEN_RECHECK_S": "0.5", "SPECKLAB_MAX_BATCH_OUTPUT_EVENTS": "2000000"}
    with stream_lab(tmp_path_factory.mktemp("limits") / "data", env=env) as running:
        yield running


@pytest.fixture(scope="module")
def deployed(lab: StreamLab) -> dict:
    """ada deploys the guide's network on the virtual devkit, with a 1 MHz slow clock."""
    return lab.book_and_deploy_guide("ada", monitor_layers="all", slow_clock_hz=1_000_000)


def model_spikes(t: np.typing.ArrayLike, seed: int = 0) -> np.ndarray:
    t = np.asarray(t, dtype=np.uint64)
    rng = np.random.default_rng(seed)
    return spikes(
        t=t, layer=0, feature=0, x=rng.integers(0, 28, t.size), y=rng.integers(0, 28, t.size)
    )


def send(websocket: ClientConnection, client: ClientStream) -> None:
    for message in client.data_to_send():
        websocket.send(message)


def reply(websocket: ClientConnection, client: ClientStream) -> object:
    return client.receive_data(websocket.recv(timeout=120))


def run_batch(websocket: ClientConnection, client: ClientStream, events: np.ndarray) -> int:
    """Forward a batch and read its answer to the end; returns the number of output frames."""
    client.send_events("spike", events)
    send(websocket, client)
    frames = 0
    while not isinstance(event := reply(websocket, client), BatchEnd):
        assert isinstance(event, Outputs), event
        frames += 1
    return frames


@pytest.mark.parametrize(
    "times,limit",
    [([0, 10**10], "max_batch_span_s"), ([0, 2_000_000], "max_batch_ticks")],
    ids=["two spikes 10^10 us apart", "2 M ticks of the 1 MHz slow clock"],
)
def test_batches_over_the_limits_are_refused_before_the_device_starts(
    lab: StreamLab, deployed: dict, times: list[int], limit: str
) -> None:
    with lab.websocket("ada", f"/v1/devices/{DEVICE}/stream") as websocket:
        client = open_stream(websocket)
        client.send_events("spike", model_spikes(times))
        send(websocket, client)
        error = reply(websocket, client)
        assert isinstance(error, StreamError) and not error.fatal
        assert error.code == "batch_too_long" and limit in error.message
        assert run_batch(websocket, client, model_spikes(np.arange(0, 500, 50))) >= 0
    # the device is free for the next call at once
    with lab.http("ada") as http:
        assert http.post(f"/v1/devices/{DEVICE}/reset-states").status_code in (200, 204)


def test_bad_timestamps_and_oversized_messages_get_error_frames(
    lab: StreamLab, deployed: dict
) -> None:
    with lab.websocket("ada", f"/v1/devices/{DEVICE}/stream") as websocket:
        client = open_stream(websocket)
        websocket.send(encode(EventsFrame(EventKind.SPIKE, model_spikes([1 << 63]), seq=0)))
        error = reply(websocket, client)
        assert isinstance(error, StreamError) and not error.fatal and error.code == "bad_input"
        websocket.send(b"\x00" * (65 * 1024 * 1024))
        error = reply(websocket, client)
        assert isinstance(error, StreamError) and not error.fatal and error.code == "too_large"
        run_batch(websocket, client, model_spikes(np.arange(0, 500, 50)))


class UnreadSocket:
    """A WebSocket whose client never reads: the first send waits forever (the transport's
    backpressure), the ones before it are counted. ``sends_parts``: whether its server takes
    messages in their parts (the daemon's transport does, Starlette's test client does not)."""

    def __init__(self, sends_parts: bool) -> None:
        self.scope = {"extensions": {SEND_PARTS: {}} if sends_parts else {}}
        self.sent: list[bytes] = []
        self.blocked = asyncio.Event()

    async def send_bytes(self, message: bytes) -> None:
        if self.sent:
            self.blocked.set()
            await asyncio.Event().wait()
        self.sent.append(message)

    async def send(self, message: dict) -> None:
        assert message["type"] == "websocket.send" and message["bytes"] is None
        await self.send_bytes(b"".join(message[SEND_PARTS]))


@pytest.mark.parametrize("sends_parts", [True, False])
async def test_a_client_that_does_not_read_holds_one_frame_of_the_daemons_memory(
    sends_parts: bool,
) -> None:
    stream = ServerStream(guide_network(), StreamMode.FORWARD)
    socket = UnreadSocket(sends_parts)
    conn = _Connection(socket, stream, hub=None)  # type: ignore[arg-type]
    answer = np.zeros(5_400_000, dtype=SPIKE_DTYPE)  # the 5.4 M output spikes
    sending = asyncio.create_task(conn.send_events(EventKind.SPIKE, answer, 0))
    await socket.blocked.wait()
    one_frame = MAX_EVENTS_PER_FRAME * SPIKE_DTYPE.itemsize + 1024
    assert len(socket.sent) == 1 and stream.counters.frames_out == 2  # one sent, one waiting
    assert 0 < conn.buffered_bytes_peak <= one_frame
    assert stream.data_to_send() == []
    sending.cancel()


def test_far_future_continuous_input_gets_an_error_frame(lab: StreamLab, deployed: dict) -> None:
    with lab.websocket("ada", f"/v1/devices/{DEVICE}/stream?mode=continuous") as websocket:
        client = open_stream(websocket)
        client.send_events("spike", model_spikes([10**9]))  # 1000 s ahead
        send(websocket, client)
        while not isinstance(event := reply(websocket, client), StreamError):
            assert isinstance(event, Outputs | Stats), event
        assert not event.fatal and event.code == "invalid_events" and "ahead" in event.message
        client.send_events("spike", model_spikes(np.arange(0, 500, 50)))
        client.send_control("stats")
        send(websocket, client)
        while not isinstance(event := reply(websocket, client), Stats):
            assert isinstance(event, Outputs), event
        assert event.counters["errors"] == 1


def new_token(lab: StreamLab, user: str) -> tuple[int, str]:
    with lab.http("admin") as http:
        users = {u["name"]: u["id"] for u in http.get("/v1/users").json()}
        response = http.post("/v1/tokens", json={"name": "short", "user_id": users[user]})
        assert response.status_code == 201, response.text
        return response.json()["id"], response.json()["token"]


@pytest.mark.parametrize("then", ["wait", "heartbeat"])
def test_a_revoked_token_ends_its_open_stream(lab: StreamLab, deployed: dict, then: str) -> None:
    token_id, secret = new_token(lab, "ada")
    lab.tokens["ada-short"] = secret
    with lab.websocket("ada-short", f"/v1/devices/{DEVICE}/stream") as websocket:
        client = open_stream(websocket)
        run_batch(websocket, client, model_spikes([0, 10]))
        with lab.http("ada") as http:
            assert http.delete(f"/v1/tokens/{token_id}").status_code == 200
        if then == "heartbeat":
            client.send_control("heartbeat")
            send(websocket, client)
        error = reply(websocket, client)
        assert isinstance(error, StreamError) and error.fatal and error.code == "token_revoked"
        with pytest.raises(ConnectionClosed) as closed:
            websocket.recv(timeout=30)
        assert closed.value.rcvd.code == CLOSE_TOKEN_INVALID


def test_sigterm_sends_daemon_stopping_on_every_open_stream(tmp_path: Path) -> None:
    with stream_lab(tmp_path / "data", users=("ada",)) as lab:
        lab.book("ada")
        with lab.websocket("ada", f"/v1/devices/{DEVICE}/dvs?raw=true") as websocket:
            client = open_stream(websocket)
            lab.daemon.process.send_signal(signal.SIGTERM)
            while not isinstance(event := reply(websocket, client), StreamError):
                assert isinstance(event, Outputs | Stats), event
            assert event.fatal and event.code == "daemon_stopping"
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    websocket.recv(timeout=30)
            assert closed.value.rcvd.code == CLOSE_ENDED
