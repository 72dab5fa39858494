"""The compiled engine against the slow reference, spike for spike, on random small chips."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from specklab.server.simulator import ChipSimulator, SimOutput

from .random_chips import random_chip, random_inputs
from .simref import SlowChip

SEEDS = range(150)
END_US = 12_000


def _joined(parts: list[SimOutput]) -> SimOutput:
    return SimOutput(
        spikes=np.concatenate([p.spikes for p in parts]),
        dvs=np.concatenate([p.dvs for p in parts]),
        readout=np.concatenate([p.readout for p in parts]),
    )


def _engine(seed: int, cuts: list[int] | None = None) -> tuple[ChipSimulator, SimOutput]:
    """Run a random chip on its inputs, in one call or split at the given indices."""
    config = random_chip(seed)
    spikes, dvs = random_inputs(config, seed)
    sim = ChipSimulator(config)
    if cuts is None:
        parts = [sim.run(spikes, dvs)]
    else:
        t_cuts = np.sort(np.concatenate([spikes["t"], dvs["t"]]))[cuts]
        bounds = [0, *t_cuts.tolist(), END_US + 1]
        parts = [
            sim.run(
                spikes[(spikes["t"] >= lo) & (spikes["t"] < hi)],
                dvs[(dvs["t"] >= lo) & (dvs["t"] < hi)],
            )
            for lo, hi in itertools.pairwise(bounds)
        ]
    parts.append(sim.advance_to(END_US))
    return sim, _joined(parts)


@pytest.mark.parametrize("seed", SEEDS)
def test_engine_matches_the_reference(seed: int) -> None:
    sim, out = _engine(seed)
    config = random_chip(seed)
    spikes, dvs = random_inputs(config, seed)
    ref = SlowChip(config)
    ref.run(spikes, dvs)
    ref.advance_to(END_US)
    assert np.array_equal(out.spikes, ref.output_spikes())
    assert np.array_equal(out.dvs, ref.output_dvs())
    assert np.array_equal(out.readout, ref.output_readout())
    for core in config.cnn_layers:
        assert np.array_equal(sim.states(core), ref.states(core)), core
    assert sim.counters["dropped_out_of_range"] == ref.dropped
    assert sim.counters["dropped_overflow"] == 0


def test_the_random_chips_exercise_every_path() -> None:
    """Guards the comparison above against comparing silent networks."""
    totals = {"spikes": 0, "readout": 0, "dvs": 0, "dropped": 0, "spiking_chips": 0}
    for seed in SEEDS:
        sim, out = _engine(seed)
        totals["spikes"] += out.spikes.size
        totals["readout"] += out.readout.size
        totals["dvs"] += out.dvs.size
        totals["dropped"] += sim.counters["dropped_out_of_range"]
        totals["spiking_chips"] += out.spikes.size > 0
    assert totals["spiking_chips"] > 0.8 * len(SEEDS)
    assert min(totals.values()) > 100, totals


@pytest.mark.parametrize("seed", range(0, 150, 7))
def test_splitting_the_input_into_batches_changes_nothing(seed: int) -> None:
    _, whole = _engine(seed)
    rng = np.random.default_rng(seed)
    n = random_inputs(random_chip(seed), seed)[0].size
    cuts = sorted(set(rng.integers(1, n, 4).tolist()))
    _, split = _engine(seed, cuts)
    for name in ("spikes", "dvs", "readout"):
        assert np.array_equal(getattr(whole, name), getattr(split, name)), name


def test_runs_are_deterministic() -> None:
    for seed in range(0, 150, 11):
        _, first = _engine(seed)
        _, second = _engine(seed)
        assert np.array_equal(first.spikes, second.spikes)
        assert np.array_equal(first.readout, second.readout)
