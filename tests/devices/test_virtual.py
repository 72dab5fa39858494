"""The virtual devkit: the simulator behind the device interface, paced like a stopwatch."""

from __future__ import annotations

import itertools
from typing import ClassVar

import numpy as np
import pytest

from specklab.schemas.chipconfig import XY, ChipConfig, Destination, DVSLayer
from specklab.schemas.events import DVS_LAYER, dvs_events, spikes
from specklab.server.devices.base import DeviceDescription
from specklab.server.devices.errors import (
    ConfigRejected,
    DeviceStateError,
    InvalidArgument,
    InvalidEvents,
)
from specklab.server.devices.manager import DeviceManager
from specklab.server.devices.samna_loader import SamnaLoader
from specklab.server.devices.samna_probe import SamnaState, SamnaStatus
from specklab.server.devices.virtual import DEFAULT_SENSOR_RATE_HZ, VirtualDevkit
from specklab.server.simulator import ChipSimulator, SyntheticSensor

from ..guide_inputs import guide_spikes
from .networks import guide_network, tiny_network

DESCRIPTION = DeviceDescription("virtual-speck2fdevkit:0", "speck2fdevkit", "speck2f", True)


class FakeTime:
    """A clock that moves only when the device sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _devkit(time: FakeTime | None = None) -> VirtualDevkit:
    options = {} if time is None else {"clock": time.clock, "sleep": time.sleep}
    devkit = VirtualDevkit(DESCRIPTION, **options)
    devkit.open()
    return devkit


def _known_weights() -> ChipConfig:
    """Core 2, 1x1 kernel: out 0 <- in 0 (100), out 1 <- in 1 (100), out 2 <- both (50 each);
    threshold 64, so one input spike fires out 0 or 1, and out 2 needs both."""
    config = tiny_network()
    config.cnn_layers[2].weights = [[[[100]], [[0]]], [[[0]], [[100]]], [[[50]], [[50]]]]
    config.cnn_layers[2].neurons_initial_value = None
    return ChipConfig.model_validate(config.model_dump())


def _with_dvs(pass_sensor_events: bool) -> ChipConfig:
    config = _known_weights()
    config.dvs_layer = DVSLayer(
        input_size=XY(x=4, y=4),
        cut=XY(x=3, y=3),
        pass_sensor_events=pass_sensor_events,
        raw_monitor_enable=True,
        destinations=[Destination(layer=2)],
    )
    return ChipConfig.model_validate(config.model_dump())


def test_forward_is_exact_and_in_the_inputs_time_base() -> None:
    devkit = _devkit()
    devkit.apply(_known_weights())
    out = devkit.forward(
        spikes(t=[5000, 5040], layer=0, core=2, feature=[0, 1], x=1, y=2), timeout=0
    )
    assert out.complete
    got = sorted(zip(out.spikes["t"].tolist(), out.spikes["feature"].tolist(), strict=True))
    assert got == [(5000, 0), (5040, 1), (5040, 2)]
    assert set(out.spikes["core"].tolist()) == {2} and set(out.spikes["layer"].tolist()) == {0}
    assert set(zip(out.spikes["x"].tolist(), out.spikes["y"].tolist(), strict=True)) == {(1, 2)}


def test_forward_matches_the_simulator_on_the_guide_network() -> None:
    config = guide_network(seed=3)
    for layer in config.cnn_layers.values():  # thresholds that keep the activity moderate
        layer.threshold_high = 1000
        layer.neurons_initial_value = None
    rng = np.random.default_rng(0)
    n = 2500
    batch = guide_spikes(rng, n, 50_000, start=10_000)
    devkit = _devkit()
    devkit.apply(config)
    out = devkit.forward(batch, timeout=0)
    reference = ChipSimulator(config).run(_shifted(batch, -int(batch["t"][0])))
    assert len(reference.spikes) > 0
    assert np.array_equal(out.spikes["t"], reference.spikes["t"] + batch["t"][0])
    for name in ("core", "layer", "feature", "x", "y"):
        assert np.array_equal(out.spikes[name], reference.spikes[name]), name
    # The same batch again from the same state: forward restarts the clock, states carry on.
    devkit.reset_states()
    again = devkit.forward(batch, timeout=0)
    assert np.array_equal(again.spikes, out.spikes)


def _shifted(events: np.ndarray, delta: int) -> np.ndarray:
    out = events.copy()
    out["t"] = (out["t"].astype(np.int64) + delta).astype(np.uint64)
    return out


def test_continuous_mode_follows_the_stopwatch() -> None:
    time = FakeTime()
    devkit = _devkit(time)
    devkit.apply(_known_weights())
    devkit.write(spikes(t=[200_000, 300_000], layer=0, core=2, feature=[0, 1], x=0, y=0))
    assert devkit.read(0.5).count == 0  # the stopwatch is not running: nothing is due
    devkit.start_stopwatch()
    assert devkit.read(0.1).count == 0  # at 100 ms
    first = devkit.read(0.15)  # the first input is due at 200 ms
    assert first.spikes["t"].tolist() == [200_000] and first.spikes["feature"].tolist() == [0]
    devkit.stop_stopwatch()
    assert devkit.read(1.0).count == 0  # frozen before 300 ms
    devkit.start_stopwatch()
    second = devkit.read(0.5)
    assert sorted(second.spikes["feature"].tolist()) == [1, 2]
    assert set(second.spikes["t"].tolist()) == {300_000}
    # Events written in the past go at once, stamped with the stopwatch's time.
    devkit.write(spikes(t=[0], layer=0, core=2, feature=0, x=3, y=3))
    late = devkit.read(0.01)
    assert late.spikes["x"].tolist() == [3]
    assert int(late.spikes["t"][0]) >= 300_000
    devkit.reset_stopwatch()
    devkit.write(spikes(t=[1000], layer=0, core=2, feature=0, x=2, y=2))
    assert devkit.read(0.01).spikes["t"].tolist() == [1000]


def test_host_dvs_input_passes_and_is_not_raw_monitored() -> None:
    devkit = _devkit()
    devkit.apply(_with_dvs(pass_sensor_events=False))
    out = devkit.forward(dvs=dvs_events(t=[10, 20], x=1, y=3, p=[0, 1]), timeout=0)
    assert len(out.dvs) == 0
    assert sorted(out.spikes["feature"].tolist()) == [0, 1, 2]
    assert set(out.spikes["layer"].tolist()) == {0}
    # Checked before a device, once; a caller that skipped the check meets the simulator's
    # own guard as a device error.
    with pytest.raises(InvalidEvents, match="outside the sensor"):
        devkit.forward(dvs=dvs_events(t=[0], x=4, y=0, p=0), timeout=0)


def test_neuron_states_reset_and_clear() -> None:
    devkit = _devkit()
    config = _known_weights()
    config.cnn_layers[2].neurons_initial_value = np.full((3, 4, 4), 5).tolist()
    devkit.apply(config)
    assert devkit.read_states(2).tolist() == np.full((3, 4, 4), 5).tolist()
    devkit.forward(spikes(t=[0], layer=0, core=2, feature=0, x=0, y=1), timeout=0)
    states = devkit.read_states(2)
    assert (states.dtype, states.shape) == (np.int32, (3, 4, 4))
    assert states[2, 1, 0] == 55
    assert states[2, 0, 0] == 5
    devkit.reset_states()
    assert devkit.read_states(2)[2, 1, 0] == 5
    with pytest.raises(InvalidArgument, match="core 3"):
        devkit.read_states(3)
    devkit.clear()
    with pytest.raises(DeviceStateError, match="apply a configuration"):
        devkit.read_states(2)
    with pytest.raises(DeviceStateError, match="apply a configuration"):
        devkit.write(spikes(t=[0], layer=0, core=2, feature=0, x=0, y=0))


def test_leak_runs_with_the_stopwatch() -> None:
    time = FakeTime()
    devkit = _devkit(time)
    config = _known_weights()
    config.cnn_layers[2].leak_enable = True
    config.cnn_layers[2].biases = [-3, 0, 0]
    config.slow_clock_hz = 1000.0
    devkit.apply(config)
    devkit.start_stopwatch()
    devkit.read(0.0105)  # 10.5 ms: ten or eleven ticks, depending on a tick at 0
    after = devkit.read_states(2)[0, 0, 0]
    assert after in (-30, -33)
    devkit.stop_stopwatch()
    time.sleep(1.0)
    assert devkit.read_states(2)[0, 0, 0] == after
    assert devkit.read_states(2)[1, 0, 0] == 0


def test_wrong_chip_and_closed_device() -> None:
    devkit = _devkit()
    with pytest.raises(ConfigRejected, match="speck2e"):
        devkit.apply(tiny_network("speck2e"))
    devkit.close()
    with pytest.raises(DeviceStateError, match="not open"):
        devkit.apply(tiny_network())
    health = devkit.health()
    assert health.ok and health.detail.startswith("closed")


def test_dvs_layer_spikes_are_the_dvs_layer() -> None:
    devkit = _devkit()
    config = _with_dvs(pass_sensor_events=True)
    config.dvs_layer.monitor_enable = True  # type: ignore[union-attr]
    devkit.apply(config)
    out = devkit.forward(dvs=dvs_events(t=[7], x=2, y=2, p=1), timeout=0)
    dvs_spikes = out.spikes[out.spikes["core"] == 13]
    assert dvs_spikes["layer"].tolist() == [DVS_LAYER]
    assert dvs_spikes["t"].tolist() == [7]


async def test_the_manager_runs_a_virtual_devkit_session() -> None:
    manager = DeviceManager(
        host="h",
        virtual=["speck2fdevkit=1"],
        samna=SamnaLoader(timeout_s=1, probe=lambda: SamnaStatus(SamnaState.NOT_INSTALLED)),
    )
    await manager.start()
    hold = await manager.open_hold("virtual-speck2fdevkit:0", owner="alice")
    await hold.apply(_known_weights())
    out = await hold.forward(spikes(t=[3], layer=0, core=2, feature=0, x=0, y=0))
    assert out.spikes["feature"].tolist() == [0]
    await hold.close()
    await manager.stop()


class TickingSensor:
    """A sensor that sees one ON event at (1, 2) every 10 ms, and one outside a 4x4 crop."""

    made: ClassVar[list[TickingSensor]] = []

    def __init__(self, rate_hz: float, seed: int) -> None:
        self.windows: list[tuple[int, int]] = []
        TickingSensor.made.append(self)

    def events(self, t0_us: int, t1_us: int) -> np.ndarray:
        self.windows.append((t0_us, t1_us))
        ticks = np.arange((t0_us + 9_999) // 10_000 * 10_000, t1_us, 10_000)
        inside = dvs_events(t=ticks, x=1, y=2, p=1)
        outside = dvs_events(t=ticks, x=100, y=2, p=1)
        both = np.concatenate([inside, outside])
        return both[np.argsort(both["t"], kind="stable")]


@pytest.fixture
def ticking_sensor(monkeypatch: pytest.MonkeyPatch) -> type[TickingSensor]:
    from specklab.server.devices import virtual

    TickingSensor.made = []
    monkeypatch.setattr(virtual, "SyntheticSensor", TickingSensor)
    return TickingSensor


@pytest.mark.parametrize("pass_sensor_events", [True, False])
def test_sensor_events_follow_the_switch_and_the_dvs_layer(
    ticking_sensor: type[TickingSensor], pass_sensor_events: bool
) -> None:
    time = FakeTime()
    devkit = _devkit(time)
    devkit.apply(_with_dvs(pass_sensor_events=pass_sensor_events))
    devkit.start_stopwatch()
    assert devkit.read(0.05).count == 0  # the sensor is off
    devkit.set_sensor(True)
    outputs = [devkit.read(0.0)]
    while time.now < 1000.2:
        outputs.append(devkit.read(0.01))
    raw = np.concatenate([out.dvs for out in outputs])
    fired = np.concatenate([out.spikes for out in outputs])
    # Raw monitor: every sensor event inside the DVS layer's input, each once, in time order.
    assert len(raw) >= 14
    assert set(raw["x"].tolist()) == {1} and set(raw["p"].tolist()) == {1}
    assert np.all(np.diff(raw["t"].astype(np.int64)) == 10_000)
    # Through the DVS layer into core 2 only when the layer passes sensor events.
    assert (len(fired[fired["core"] == 2]) > 0) is pass_sensor_events
    devkit.set_sensor(False)
    devkit.read(0.0)
    assert devkit.read(0.1).count == 0
    windows = ticking_sensor.made[0].windows
    assert all(a < b for a, b in windows)
    assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(windows))


def test_the_synthetic_sensor_feeds_the_raw_monitor() -> None:
    time = FakeTime()
    devkit = _devkit(time)
    config = _known_weights()
    config.dvs_layer = DVSLayer(raw_monitor_enable=True, pass_sensor_events=False)
    devkit.apply(config)
    devkit.set_sensor(True)
    devkit.start_stopwatch()
    devkit.read(0.1)
    raw = [devkit.read(0.001).dvs for _ in range(100)]
    events = np.concatenate(raw)
    # 20 k events/s for about 0.1 s, in time order, inside the 128x128 sensor.
    assert 1000 < len(events) < 3000
    assert np.all(np.diff(events["t"].astype(np.int64)) >= 0)
    assert events["x"].max() < 128 and events["y"].max() < 128
    assert set(np.unique(events["p"]).tolist()) <= {0, 1}


def test_a_forward_batch_sees_the_sensor_from_the_restarted_stopwatch() -> None:
    devkit = _devkit()
    config = _known_weights()
    config.dvs_layer = DVSLayer(raw_monitor_enable=True, pass_sensor_events=False)
    devkit.apply(config)
    devkit.set_sensor(True)
    origin = 7_000_000_000  # batch times far from 0: the stopwatch still restarts at 0
    batch = spikes(t=[origin, origin + 50_000], layer=0, core=2, feature=0, x=0, y=0)
    raw = devkit.forward(batch, timeout=0).dvs
    expected = SyntheticSensor(rate_hz=DEFAULT_SENSOR_RATE_HZ).events(0, 50_001)
    assert len(expected) > 100
    assert raw["t"].tolist() == (expected["t"] + origin).tolist()
    assert raw[["x", "y", "p"]].tolist() == expected[["x", "y", "p"]].tolist()


def test_the_dvs_layer_pools_x_and_y_separately() -> None:
    devkit = _devkit()
    config = ChipConfig(
        dvs_layer=DVSLayer(pooling=XY(x=4, y=2), cut=XY(x=31, y=63), monitor_enable=True)
    )
    devkit.apply(config)
    out = devkit.forward(dvs=dvs_events(t=[5, 6], x=[7, 127], y=[3, 127], p=1), timeout=0)
    dvs_spikes = out.spikes[out.spikes["core"] == 13]
    assert list(zip(dvs_spikes["x"].tolist(), dvs_spikes["y"].tolist(), strict=True)) == [
        (1, 1),
        (31, 63),
    ]
