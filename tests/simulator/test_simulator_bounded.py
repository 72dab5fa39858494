"""``ChipSimulator.run_within``: runs bounded in work, which either are the unbounded run or
change nothing (what lets the event loop answer a small batch itself, ``forward_quick``)."""

from __future__ import annotations

import pytest

from specklab.schemas.chipconfig import ChipConfig
from specklab.server.simulator import ChipSimulator, SimOutput

from ..chip_configs import chip, layer, to
from .handmade import spikes
from .outcomes import assert_same, assert_same_outputs, chip_now
from .random_chips import random_chip, random_inputs

SEEDS = range(40)
#: Plenty for the random chips' 20-event batches: their cascades fit.
AMPLE = 1 << 30


def _twins(config: ChipConfig, seed: int) -> tuple[ChipSimulator, ChipSimulator]:
    """Two simulators of ``config`` in the same state, not the initial one."""
    sims = ChipSimulator(config), ChipSimulator(config)
    for sim in sims:
        sim.run(*random_inputs(config, seed + 1000, n=30))
    return sims


@pytest.mark.parametrize("seed", SEEDS)
def test_a_bounded_run_that_fits_is_the_unbounded_run(seed: int) -> None:
    config = random_chip(seed)
    bounded, unbounded = _twins(config, seed)
    inputs = random_inputs(config, seed, n=20)
    events = sum(len(a) for a in inputs)
    out = bounded.run_within(AMPLE, events, lambda: bounded.run(*inputs))
    assert out is not None
    assert_same_outputs(out, unbounded.run(*inputs))
    assert_same(chip_now(bounded), chip_now(unbounded))


def _bounded_or_nothing(seed: int, per_cascade: int) -> bool:
    """Runs a random chip's batch bounded to about ``per_cascade`` events per cascade; checks
    that it is the unbounded run or changed nothing. Whether it ran."""
    config = random_chip(seed)
    bounded, unbounded = _twins(config, seed)
    inputs = random_inputs(config, seed, n=20)
    events = sum(len(a) for a in inputs)
    before = chip_now(bounded)
    expected = unbounded.run(*inputs)
    widest = max(
        layer.dimensions.kernel_size**2 * layer.dimensions.output_shape.feature_count
        for layer in config.cnn_layers.values()
    )
    out = bounded.run_within(per_cascade * events * widest, events, lambda: bounded.run(*inputs))
    if out is None:
        assert_same(chip_now(bounded), before)
        # Unbounded afterwards, it is the same run as the twin's.
        assert_same_outputs(bounded.run(*inputs), expected)
    else:
        assert_same_outputs(out, expected)
    assert_same(chip_now(bounded), chip_now(unbounded))
    return out is not None


def test_a_bounded_run_either_is_the_unbounded_run_or_changes_nothing() -> None:
    ran = [_bounded_or_nothing(seed, per_cascade) for seed in SEEDS for per_cascade in (1, 4)]
    assert any(ran) and not all(ran)  # both outcomes, each checked


def test_a_runaway_recurrent_network_is_declined_and_left_as_it_was() -> None:
    loop = layer([[[[20]]]], monitor_enable=False, destinations=[to(0), to(0)])
    sim = ChipSimulator(chip({0: loop}))
    before = chip_now(sim)
    assert sim.run_within(1 << 18, 1, lambda: sim.run(spikes((1, 0, 0, 0, 0)))) is None
    assert_same(chip_now(sim), before)
    sim.run(spikes((1, 0, 0, 0, 0)))  # unbounded: the guard cuts it off, as always
    assert sim.counters["dropped_overflow"] > 0


def test_a_bounded_run_that_raises_is_undone() -> None:
    config = random_chip(3)
    sim = _twins(config, 3)[0]
    before = chip_now(sim)

    def run_then_fail() -> SimOutput:
        sim.run(*random_inputs(config, 3, n=20))
        raise ValueError("the caller's own failure")

    assert sim.run_within(AMPLE, 40, run_then_fail) is None
    assert_same(chip_now(sim), before)


def test_the_bound_does_not_outlive_the_bounded_run() -> None:
    loop = layer([[[[20]]]], monitor_enable=False, destinations=[to(0), to(0)])
    sim = ChipSimulator(chip({0: loop}))
    sim.run_within(1 << 10, 1, lambda: sim.run(spikes((1, 0, 0, 0, 0))))
    sim.run(spikes((2, 0, 0, 0, 0)))
    dropped = sim.counters["dropped_overflow"]
    reference = ChipSimulator(chip({0: loop}))
    reference.run(spikes((2, 0, 0, 0, 0)))
    assert dropped == reference.counters["dropped_overflow"]  # the guard's full 2^20 again
