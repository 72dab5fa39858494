"""The virtual DVS sensor."""

from __future__ import annotations

import numpy as np
import pytest

from specklab.schemas.chipconfig import XY, DVSLayer
from specklab.schemas.events import DVS_DTYPE
from specklab.server.simulator import (
    ChipSimulator,
    Pattern,
    ReplaySensor,
    SimulatorError,
    SyntheticSensor,
)

from ..chip_configs import chip
from .handmade import dvs_events


@pytest.mark.parametrize("pattern", list(Pattern))
def test_synthetic_scene_is_seeded_sorted_and_on_the_sensor(pattern: Pattern) -> None:
    sensor = SyntheticSensor(rate_hz=200_000, seed=3, pattern=pattern)
    events = sensor.events(0, 100_000)
    assert events.dtype == DVS_DTYPE
    assert abs(events.size - 20_000) < 1_000  # Poisson around rate x duration
    assert np.all(np.diff(events["t"].astype(np.int64)) >= 0)
    assert events["x"].max() < 128 and events["y"].max() < 128
    assert set(np.unique(events["p"]).tolist()) == {0, 1}
    again = SyntheticSensor(rate_hz=200_000, seed=3, pattern=pattern).events(0, 100_000)
    assert np.array_equal(events, again)
    other = SyntheticSensor(rate_hz=200_000, seed=4, pattern=pattern).events(0, 100_000)
    assert not np.array_equal(events[:100], other[:100])


def test_synthetic_windows_do_not_depend_on_how_time_is_cut() -> None:
    sensor = SyntheticSensor(rate_hz=50_000, seed=1, pattern="dots")
    whole = sensor.events(1_234, 57_891)
    assert np.array_equal(np.concatenate(list(sensor.windows(777, 1_234, 57_891))), whole)
    assert whole["t"].min() >= 1_234 and whole["t"].max() < 57_891


def test_edges_scene_shows_a_moving_bar_with_on_ahead_of_off() -> None:
    events = SyntheticSensor(rate_hz=500_000, seed=0, pattern="edges", noise_fraction=0).events(
        100_000, 110_000
    )
    # A bar moving along one axis: ON events sit on one edge, OFF events a bar width behind.
    on, off = events[events["p"] == 1], events[events["p"] == 0]
    spread = {axis: np.ptp(on[axis].astype(int)) for axis in ("x", "y")}
    across = min(spread, key=spread.get)
    gap = np.median(on[across].astype(int)) - np.median(off[across].astype(int))
    assert spread[across] <= 8
    assert 8 <= gap <= 16


def test_bad_sensor_settings_are_refused() -> None:
    with pytest.raises(SimulatorError, match="pattern"):
        SyntheticSensor(pattern="waves")
    with pytest.raises(SimulatorError, match="rate"):
        SyntheticSensor(rate_hz=0)
    with pytest.raises(SimulatorError, match="window"):
        next(SyntheticSensor().windows(0))


def test_replay_slices_and_ends_with_the_recording() -> None:
    recording = dvs_events((30, 1, 1, 1), (10, 0, 0, 0), (20, 2, 2, 0))
    sensor = ReplaySensor(recording)
    assert sensor.events(10, 30)["t"].tolist() == [10, 20]
    assert [w["t"].tolist() for w in sensor.windows(15)] == [[10], [20], [30]]
    assert sensor.end_us == 31


def test_replay_can_loop() -> None:
    sensor = ReplaySensor(dvs_events((0, 1, 1, 1), (5, 2, 2, 0)), loop=True)
    # Period 6 (last timestamp + 1): 0, 5 | 6, 11 | 12, 17 | 18, 23
    assert sensor.events(3, 20)["t"].tolist() == [5, 6, 11, 12, 17, 18]
    assert sensor.end_us is None


def test_sensor_events_drive_the_dvs_layer_and_raw_monitor() -> None:
    dvs = DVSLayer(
        merge=True,
        pooling=XY(x=4, y=4),
        cut=XY(x=31, y=31),
        raw_monitor_enable=True,
        monitor_enable=True,
    )
    sim = ChipSimulator(chip({}, dvs=dvs))
    events = SyntheticSensor(rate_hz=100_000, seed=2).events(0, 20_000)
    out = sim.run(dvs=events)
    assert np.array_equal(out.dvs, events)  # a recording, the vendor's way
    assert out.spikes.size == events.size
    assert np.array_equal(out.spikes["x"], events["x"] // 4)
