"""The virtual DVS sensor and the real-time pacing helper."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from specklab.schemas.chipconfig import XY, DVSLayer
from specklab.schemas.events import DVS_DTYPE
from specklab.server.simulator import (
    ChipSimulator,
    Pattern,
    ReplaySensor,
    SimulatorError,
    Stopwatch,
    SyntheticSensor,
    due_slices,
)

from .handmade import chip, dvs_events


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


def test_due_slices_release_events_as_the_stopwatch_reaches_them() -> None:
    now = [0]
    watch = Stopwatch(clock_ns=lambda: now[0])
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += int(seconds * 1e9)

    t = np.array([0, 0, 10, 25, 200_000], dtype=np.uint64)
    slices = list(due_slices(t, watch, sleep=sleep))
    assert [t[s].tolist() for s in slices] == [[0, 0], [10], [25], [200_000]]
    assert waits[:2] == [10e-6, 15e-6]
    assert max(waits) <= 0.05  # long waits are cut so a stop is noticed


def test_due_slices_give_past_events_at_once_and_stop_on_request() -> None:
    t = np.array([5, 6, 2 * 10**6], dtype=np.uint64)
    stop = threading.Event()
    slices = due_slices(t, Stopwatch(clock_ns=lambda: 0), stop=stop)
    stop.set()
    assert list(slices) == []  # nothing was due; the stop ends the wait
    now = [0]
    watch = Stopwatch(clock_ns=lambda: now[0])
    now[0] = 10**6  # 1 ms after the start: both early events are in the past
    assert [t[s].tolist() for s in due_slices(t[:2], watch)] == [[5, 6]]
