"""``VirtualDevkit.forward_quick``: a small batch answered on the caller's thread is the
batch ``forward`` answers, with the device left as ``forward`` leaves it; any other batch is
declined (None) with nothing changed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.events import spikes
from specklab.server.devices import virtual
from specklab.server.devices.base import DeviceOutput
from specklab.server.devices.manager import DeviceHold, DeviceManager
from specklab.server.devices.samna_loader import SamnaLoader
from specklab.server.devices.samna_probe import SamnaState, SamnaStatus
from specklab.server.devices.virtual import QUICK_EVENTS, VirtualDevkit
from specklab.server.simulator import ChipSimulator, SimOutput

from ..chip_configs import chip, layer, to
from ..guide_inputs import guide_spikes
from ..simulator.outcomes import assert_same, assert_same_outputs
from .networks import guide_network, tiny_network
from .test_virtual import DESCRIPTION, FakeTime


def _devkit(config: ChipConfig) -> tuple[VirtualDevkit, FakeTime]:
    time = FakeTime()
    devkit = VirtualDevkit(DESCRIPTION, clock=time.clock, sleep=time.sleep)
    devkit.open()
    devkit.apply(config)
    return devkit, time


def _moderate_guide() -> ChipConfig:
    config = guide_network(seed=3)
    for cnn in config.cnn_layers.values():
        cnn.threshold_high = 300
        cnn.neurons_initial_value = None
    return config


def _device_now(devkit: VirtualDevkit, config: ChipConfig) -> dict[str, object]:
    health = devkit.health()
    return {
        **{f"core {core}": devkit.read_states(core) for core in config.cnn_layers},
        "counters": health.counters,
        "detail": health.detail,
        "stopwatch_us": devkit._watch.now_us(),
        "stopwatch_running": devkit._watch.running,
    }


def _small_batches(rng: np.random.Generator) -> list[np.ndarray]:
    """Guide-network input spikes: batches of 1 to 30 spikes at 1 M spikes/s."""
    return [
        guide_spikes(rng, int(rng.integers(1, 30)), 1_000_000, start=int(rng.integers(0, 10**6)))
        for _ in range(30)
    ]


def test_quick_batches_are_forward_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(virtual, "QUICK_PAUSE", 0)  # every batch is tried
    config = _moderate_guide()
    quick, quick_time = _devkit(config)
    plain, plain_time = _devkit(config)
    answered = 0
    batches = _small_batches(np.random.default_rng(0))
    for batch in batches:
        out = quick.forward_quick(batch)
        expected = plain.forward(batch, timeout=0)
        if out is None:
            out = quick.forward(batch, timeout=0)
        else:
            answered += 1
        assert_same_outputs(out, expected)
        assert out.complete == expected.complete
        assert_same(_device_now(quick, config), _device_now(plain, config))
        for time in (quick_time, plain_time):
            time.sleep(0.001)  # the stopwatch runs on between batches, as it does for real
    # Most of them here; the rest declined (their cascades would not fit), each checked the same.
    assert answered >= len(batches) // 2


def _declining(name: str) -> tuple[ChipConfig, Callable[[VirtualDevkit], None], np.ndarray]:
    """A configuration, a set-up of the device and a batch that forward_quick declines."""
    one = spikes(t=[0], layer=0, core=2, feature=0, x=1, y=1)
    if name == "too many events":
        many = spikes(t=np.arange(QUICK_EVENTS + 1), layer=0, core=2, feature=0, x=1, y=1)
        return tiny_network(), lambda d: None, many
    if name == "a slow-clock tick in its span":
        config = tiny_network()
        config.slow_clock_hz = 1000.0  # a tick every 1000 us
        config.cnn_layers[2].leak_enable = True
        return config, lambda d: None, spikes(t=[0, 1000], layer=0, core=2, feature=0, x=1, y=1)
    if name == "the sensor on":
        return tiny_network(), lambda d: d.set_sensor(True), one
    if name == "continuous input queued":
        later = spikes(t=[10**7], layer=0, core=2, feature=0, x=1, y=1)
        return tiny_network(), lambda d: d.write(later), one
    if name == "a runaway cascade":
        loop = layer([[[[20]]]], monitor_enable=True, destinations=[to(0), to(0)])
        return chip({0: loop}), lambda d: None, spikes(t=[0], layer=0, core=0, feature=0, x=0, y=0)
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name",
    [
        "too many events",
        "a slow-clock tick in its span",
        "the sensor on",
        "continuous input queued",
        "a runaway cascade",
    ],
)
def test_declined_batches_change_nothing(name: str) -> None:
    config, set_up, batch = _declining(name)
    declined, _ = _devkit(config)
    plain, _ = _devkit(config)
    for devkit in (declined, plain):
        set_up(devkit)
    before = _device_now(declined, config)
    assert declined.forward_quick(batch) is None
    assert_same(_device_now(declined, config), before)
    assert_same_outputs(declined.forward(batch, timeout=0), plain.forward(batch, timeout=0))
    assert_same(_device_now(declined, config), _device_now(plain, config))


def test_a_batch_over_the_work_bound_is_declined(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound is what forward_quick passes the simulator: 10 spikes fit in the default and
    not in a bound of a few neuron updates."""
    config = _moderate_guide()
    batch = guide_spikes(np.random.default_rng(1), 10, 1_000_000)
    devkit, _ = _devkit(config)
    assert devkit.forward_quick(batch) is not None
    monkeypatch.setattr(virtual, "QUICK_WORK", 10)
    before = _device_now(devkit, config)
    assert devkit.forward_quick(batch) is None
    assert_same(_device_now(devkit, config), before)


def test_after_a_batch_that_did_not_fit_the_next_ones_are_not_tried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, _, batch = _declining("a runaway cascade")
    devkit, _ = _devkit(config)
    assert devkit._sim is not None
    tries: list[int] = []
    run_within = devkit._sim.run_within
    monkeypatch.setattr(
        devkit._sim, "run_within", lambda *args: tries.append(1) or run_within(*args)
    )
    answers = [devkit.forward_quick(batch) for _ in range(2 + 2 * virtual.QUICK_PAUSE)]
    assert answers == [None] * len(answers)
    assert len(tries) == 2  # the first batch, then the one after the pause, then a pause again


def test_a_closed_or_empty_device_declines() -> None:
    devkit = VirtualDevkit(DESCRIPTION)
    one = spikes(t=[0], layer=0, core=2, feature=0, x=1, y=1)
    assert devkit.forward_quick(one) is None  # not open
    devkit.open()
    assert devkit.forward_quick(one) is None  # nothing applied
    devkit.apply(tiny_network())
    assert devkit.forward_quick(one[:0]) is None  # nothing to run
    assert devkit.forward_quick(one) is not None


def _threads_of_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the threads the simulator runs batches on, from now on."""
    names: list[str] = []
    run = ChipSimulator.run

    def recorded(self: ChipSimulator, *args: Any, **kwargs: Any) -> SimOutput:
        names.append(threading.current_thread().name)
        return run(self, *args, **kwargs)

    monkeypatch.setattr(ChipSimulator, "run", recorded)
    return names


class HangingDevkit(VirtualDevkit):
    """A test double whose forward would hang (here it only counts its calls): nothing bounds
    it on the event loop."""

    calls = 0

    def forward(self, *args: Any, **kwargs: Any) -> DeviceOutput:
        HangingDevkit.calls += 1
        return DeviceOutput()


def test_another_forward_is_never_run_quick(monkeypatch: pytest.MonkeyPatch) -> None:
    one = spikes(t=[0], layer=0, core=2, feature=0, x=1, y=1)
    double = HangingDevkit(DESCRIPTION)
    double.open()
    double.apply(tiny_network())
    assert double.forward_quick(one) is None
    devkit, _ = _devkit(tiny_network())
    assert devkit.forward_quick(one) is not None
    monkeypatch.setattr(VirtualDevkit, "forward", HangingDevkit.forward)
    assert devkit.forward_quick(one) is None
    assert HangingDevkit.calls == 0


@pytest.fixture
async def hold(samna: ModuleType) -> AsyncIterator[DeviceHold]:
    """A hold of a virtual devkit of a started manager, with ``tiny_network`` applied."""
    loader = SamnaLoader(timeout_s=5.0, probe=lambda: SamnaStatus(SamnaState.INSTALLED, "double"))
    manager = DeviceManager(host="lab-1", samna=loader, virtual=["speck2fdevkit=1"])
    await manager.start()
    try:
        hold = await manager.open_hold("virtual-speck2fdevkit:0", owner="alice")
        await hold.apply(tiny_network())
        yield hold
    finally:
        await manager.stop()


async def test_the_manager_answers_small_batches_on_the_event_loop_when_the_device_is_idle(
    hold: DeviceHold, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = _threads_of_runs(monkeypatch)
    one = spikes(t=[0], layer=0, core=2, feature=0, x=1, y=1)
    many = spikes(t=np.arange(QUICK_EVENTS + 1), layer=0, core=2, feature=0, x=1, y=1)
    loop_thread = threading.current_thread().name

    await hold.forward(one)
    await hold.forward(many)
    assert threads[0] == loop_thread and threads[1] != loop_thread

    started, release = threading.Event(), threading.Event()

    def blocking(device: object) -> None:
        started.set()
        release.wait(10)

    busy = asyncio.ensure_future(hold.call(blocking, timeout=10))
    assert await asyncio.to_thread(started.wait, 10)
    waiting = asyncio.ensure_future(hold.forward(one))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # behind the running call, not answered here
    release.set()
    await busy
    await waiting
    assert threads[2] != loop_thread


async def test_quick_batches_one_after_another_let_the_loops_other_tasks_run_between(
    hold: DeviceHold,
) -> None:
    """A client sending many small batches at once, or a job, gets its next batch at once: it
    must not keep the event loop from everyone else for all of them."""
    one = spikes(t=[0], layer=0, core=2, feature=0, x=1, y=1)
    turns: list[int] = []
    answered: list[DeviceOutput] = []

    async def another_task() -> None:
        for _ in range(3):
            turns.append(len(answered))
            await asyncio.sleep(0)

    other = asyncio.ensure_future(another_task())
    for _ in range(3):
        answered.append(await hold.forward(one))
    await other
    # The first batch at once (nothing ran this turn), then the other task before each.
    assert turns == [1, 2, 3]
