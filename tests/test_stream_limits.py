"""Every stream and device call has a bounded cost (issue 13): chunked and interruptible
simulator runs, devices restarted when a call does not stop, batch limits, bounded output
memory, bounded continuous input, bad input that never ends a stream, token re-checks and
the shutdown frame."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

import numpy as np
import pytest

from specklab.schemas.events import spikes
from specklab.server.devices.base import DeviceDescription, DeviceOutput
from specklab.server.devices.errors import (
    DeviceStateError,
    DeviceTimeout,
    DeviceUnresponsive,
    OutputTooLarge,
)
from specklab.server.devices.manager import DeviceManager
from specklab.server.devices.samna_loader import SamnaLoader
from specklab.server.devices.samna_probe import SamnaState, SamnaStatus
from specklab.server.devices.virtual import VirtualDevkit
from specklab.server.simulator import ChipSimulator, engine

from .chip_configs import guide_network
from .simulator.random_chips import random_chip, random_inputs

DEVICE = "virtual-speck2fdevkit:0"


def leaky_guide(slow_clock_hz: float = 1_000_000.0):
    config = guide_network()
    for core in config.cnn_layers.values():
        core.leak_enable = True
    config.slow_clock_hz = slow_clock_hz
    return config


def guide_input(n: int, span_us: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return guide_network().spikes_to_cores(
        spikes(
            t=np.sort(rng.integers(0, span_us, n)),
            layer=0,
            feature=0,
            x=rng.integers(0, 28, n),
            y=rng.integers(0, 28, n),
        )
    )


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


# ----- device calls that overrun their timeout -----


class StuckDevkit(VirtualDevkit):
    """A virtual devkit whose forward hangs, deaf to interrupts, until ``release`` is set."""

    release = threading.Event()

    def forward(self, spikes=None, dvs=None, *, timeout: float) -> DeviceOutput:
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
        session = await devices.open_session(DEVICE, owner="ada")
        await session.apply(leaky_guide())
        long_batch = guide_input(10, 10**9)  # 10^9 leak ticks: hours of work
        with pytest.raises(DeviceTimeout, match="forward") as timed_out:
            await session.forward(long_batch, timeout=0.2)
        assert not isinstance(timed_out.value, DeviceUnresponsive)
        # the same session and thread answer the next calls at once
        await session.apply(random_chip(1))
        output = await session.forward(random_inputs(random_chip(1), 1)[0], timeout=60)
        assert output.count > 0
        assert devices.state(DEVICE).busy
    finally:
        await devices.stop()


async def test_a_device_stuck_in_a_call_is_restarted_for_the_next_user(
    manager: DeviceManager,
) -> None:
    session = await manager.open_session(DEVICE, owner="ada")
    await session.apply(leaky_guide())
    with pytest.raises(DeviceUnresponsive, match="did not stop"):
        await session.forward(guide_input(10, 1000), timeout=0.1)
    assert session.ended.is_set() and isinstance(session.end_error, DeviceTimeout)
    with pytest.raises(DeviceTimeout):
        await session.read(0.01)
    state = manager.state(DEVICE)
    assert state.online and not state.busy
    # bob gets a fresh driver on a fresh thread, without a daemon restart
    again = await manager.open_session(DEVICE, owner="bob")
    await again.apply(random_chip(1))
    output = await again.forward(random_inputs(random_chip(1), 1)[0], timeout=60)
    assert output.count > 0
    assert [type(d) for d in manager.made] == [StuckDevkit, VirtualDevkit]  # type: ignore[attr-defined]
    await again.close()
    with pytest.raises(DeviceStateError):
        await again.read(0.01)
