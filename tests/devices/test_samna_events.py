"""numpy event arrays <-> samna events (the double's classes mimic samna's)."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from specklab.schemas.events import SPIKE_DTYPE, dvs_events, spikes
from specklab.server.devices.samna_events import from_samna, to_samna


def _random_spikes(rng: np.random.Generator, n: int) -> np.ndarray:
    return spikes(
        t=np.sort(rng.integers(0, 10**9, n)),
        layer=0,
        core=rng.integers(0, 9, n),
        feature=rng.integers(0, 1024, n),
        x=rng.integers(0, 128, n),
        y=rng.integers(0, 128, n),
    )


def test_spikes_become_samna_spikes_addressing_cores(samna: ModuleType) -> None:
    chip = samna.speck2f
    events = to_samna(
        chip, spikes(t=[5], layer=3, core=6, feature=9, x=1, y=2), dvs_events([], [], [], [])
    )
    assert events == [chip.event.Spike(layer=6, x=1, y=2, feature=9, timestamp=5)]


def test_round_trip_of_many_spikes(samna: ModuleType) -> None:
    chip = samna.speck2f
    original = _random_spikes(np.random.default_rng(3), 5000)
    decoded = from_samna(
        chip, to_samna(chip, original, np.zeros(0, dtype=dvs_events([], [], [], []).dtype))
    )
    for name in ("t", "core", "feature", "x", "y"):
        assert np.array_equal(decoded.spikes[name], original[name]), name
    assert decoded.spikes.dtype == SPIKE_DTYPE


def test_spikes_and_dvs_are_merged_in_time_order_and_shifted(samna: ModuleType) -> None:
    chip = samna.speck2f
    s = spikes(t=[30, 10], layer=0, core=0, feature=0, x=[3, 1], y=0)
    d = dvs_events(t=[20, 10], x=[2, 0], y=1, p=[1, 0])
    events = to_samna(chip, s, d, shift=10)
    assert [(type(e).__name__, e.timestamp) for e in events] == [
        ("Spike", 0),  # equal times: spikes first (stable order, spikes listed first)
        ("DvsEvent", 0),
        ("DvsEvent", 10),
        ("Spike", 20),
    ]
    assert [e.p for e in events if type(e) is chip.event.DvsEvent] == [False, True]
    decoded = from_samna(chip, events)
    assert decoded.dvs["t"].tolist() == [0, 10]
    assert decoded.dvs["p"].tolist() == [0, 1]
    assert decoded.dvs["x"].tolist() == [0, 2]


def test_readout_bits_and_other_events(samna: ModuleType) -> None:
    event = samna.speck2f.event
    valid = 1 << 20
    events = [
        event.Spike(layer=1, x=0, y=0, feature=0, timestamp=100),
        event.ReadoutValue(value=valid | (7 << 16) | 1234),
        event.ReadoutValue(value=(5 << 16) | 99),  # no valid bit: dropped
        event.DvsEvent(x=1, y=1, p=True, timestamp=250),
        event.ReadoutValue(value=valid | (15 << 16) | 0xFFFF),
        event.NeuronValue(layer=3, address=17, neuron_state=-5),
        event.ReadoutPinValue(index=2, timestamp=300),
    ]
    decoded = from_samna(samna.speck2f, events)
    # Readouts carry no timestamp: each takes the newest timed event's before it.
    assert decoded.readout["t"].tolist() == [100, 250]
    assert decoded.readout["class_id"].tolist() == [7, 15]
    assert decoded.readout["value"].tolist() == [1234, 0xFFFF]
    assert decoded.neurons == [(3, 17, -5)]
    assert decoded.ignored == {"ReadoutPinValue": 1, "ReadoutValue without valid bit": 1}
    assert decoded.spikes["t"].tolist() == [100]


def test_empty_batches(samna: ModuleType) -> None:
    decoded = from_samna(samna.speck2f, [])
    assert len(decoded.spikes) == len(decoded.dvs) == len(decoded.readout) == 0
    empty = np.zeros(0, dtype=SPIKE_DTYPE)
    assert to_samna(samna.speck2f, empty, dvs_events([], [], [], [])) == []


def test_the_double_refuses_events_built_by_position(samna: ModuleType) -> None:
    # The driver must never depend on samna's argument order, which cannot be checked here.
    with pytest.raises(TypeError):
        samna.speck2f.event.Spike(1, 2, 3, 4, 5)
