"""The simulator on two threads (``pipeline``) against one thread: every output, every final
membrane and counter equal, whatever the cut and the windows (compiled calls) are."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from specklab.schemas import chipconfig
from specklab.schemas.events import DVS_DTYPE, SPIKE_DTYPE, spikes
from specklab.server.simulator import ChipSimulator, SimOutput, engine, pipeline
from specklab.server.simulator.engine import Cancelled, OutputLimit
from specklab.server.simulator.pipeline import interleaved
from specklab.server.simulator.stages import topological_order

from ..chip_configs import chip, layer, to
from ..guide_inputs import guide_spikes
from ..guide_regimes import REGIMES, compiled, hand_quantized
from .outcomes import assert_same, chip_now
from .random_chips import random_chip, random_inputs

END_US = 40_000


@pytest.fixture
def small_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiled calls of 8 input events, so a short input crosses many pipeline windows."""
    monkeypatch.setattr(engine, "CHUNK_EVENTS", 8)


@pytest.fixture
def no_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs stay on two threads even where the machine's second CPU is busy (see SERIAL_OVERLAP),
    for the tests that check the path taken, which must not depend on the machine's load."""
    monkeypatch.setattr(pipeline, "SERIAL_OVERLAP", float("-inf"))


def _outcome(sim: ChipSimulator, outputs: list[SimOutput]) -> dict[str, object]:
    """What left the chip in ``outputs``, joined, and the chip as it is now."""
    return {
        "spikes": np.concatenate([out.spikes for out in outputs]),
        "dvs": np.concatenate([out.dvs for out in outputs]),
        "readout": np.concatenate([out.readout for out in outputs]),
        **chip_now(sim),
    }


def _both_paths(
    config: chipconfig.ChipConfig,
    batches: list[tuple[np.ndarray, np.ndarray]],
    end_us: int | None = END_US,
    cut: int | None = None,
) -> tuple[dict[str, object], ChipSimulator]:
    """Run ``batches`` (then the ticks to ``end_us``) on one thread and on two; assert the
    outcomes equal and return it, with the two-thread simulator."""
    outcomes = []
    for pipelined in (False, True):
        sim = ChipSimulator(config, pipelined=pipelined)
        if cut is not None:
            assert sim._stages is not None
            sim._stages._set_cut(cut)  # the tests pick it; measurement would move it
            sim._stages._settled = True
        outputs = [sim.run(spike_batch, dvs_batch) for spike_batch, dvs_batch in batches]
        if end_us is not None:
            outputs.append(sim.advance_to(end_us))
        outcomes.append(_outcome(sim, outputs))
    assert_same(*outcomes)
    return outcomes[1], sim


def _cuts(config: chipconfig.ChipConfig) -> range:
    """Every cut of the chip: how many of its cores (in topological order) run upstream."""
    order = topological_order(ChipSimulator(config)._packed)
    assert order is not None
    return range(1, len(order))


def _halves(spike_in: np.ndarray, dvs_in: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    middle = 5_000
    return [
        (spike_in[spike_in["t"] < middle], dvs_in[dvs_in["t"] < middle]),
        (spike_in[spike_in["t"] >= middle], dvs_in[dvs_in["t"] >= middle]),
    ]


@pytest.mark.parametrize("seed", range(150))
def test_random_chips_run_the_same_on_two_threads(seed: int, small_windows: None) -> None:
    config = random_chip(seed)
    spike_in, dvs_in = random_inputs(config, seed, n=200)
    _both_paths(config, _halves(spike_in, dvs_in))


def _spikes_into(config: chipconfig.ChipConfig, core: int, seed: int, n: int) -> np.ndarray:
    """Random input spikes straight into ``core`` (a downstream one, for the cut chips)."""
    rng = np.random.default_rng(seed)
    shape = config.cnn_layers[core].dimensions.input_shape
    into = np.zeros(n, SPIKE_DTYPE)
    into["t"] = np.sort(rng.integers(0, 10_000, n))
    into["core"] = core
    into["feature"] = rng.integers(0, shape.feature_count, n)
    into["y"] = rng.integers(0, shape.size.y, n)
    into["x"] = rng.integers(0, shape.size.x, n)
    return into


@pytest.mark.parametrize("seed", [s for s in range(60) if len(random_chip(s).cnn_layers) > 1])
def test_inputs_straight_into_downstream_cores_and_a_reset_run_the_same(
    seed: int, small_windows: None
) -> None:
    config = random_chip(seed)
    spike_in, dvs_in = random_inputs(config, seed, n=100)
    for core in config.cnn_layers:
        spike_in = np.concatenate([spike_in, _spikes_into(config, core, seed + core, 50)])
    spike_in = spike_in[np.argsort(spike_in["t"], kind="stable")]
    outcomes = []
    for pipelined in (False, True):
        sim = ChipSimulator(config, pipelined=pipelined)
        first = sim.run(spike_in[::2], dvs_in)
        sim.reset_states()
        outcomes.append(_outcome(sim, [first, sim.run(spike_in[1::2]), sim.advance_to(END_US)]))
    assert_same(*outcomes)


def test_the_random_chips_take_the_two_thread_path(small_windows: None, no_fall_back: None) -> None:
    two_threads = 0
    for seed in range(150):
        config = random_chip(seed)
        sim = ChipSimulator(config, pipelined=True)
        sim.run(*random_inputs(config, seed))
        two_threads += sim.last_run_pipelined
        assert sim.last_run_pipelined == (len(config.cnn_layers) > 1)
    assert two_threads > 100


@pytest.mark.parametrize("seed", [s for s in range(40) if len(random_chip(s).cnn_layers) > 2])
def test_every_cut_runs_the_same(seed: int, small_windows: None) -> None:
    config = random_chip(seed)
    spike_in, dvs_in = random_inputs(config, seed, n=200)
    for cut in _cuts(config):
        _both_paths(config, _halves(spike_in, dvs_in), cut=cut)


def _monitor_all(config: chipconfig.ChipConfig) -> chipconfig.ChipConfig:
    config = config.model_copy(deep=True)
    for core in config.cnn_layers.values():
        core.monitor_enable = True
    return config


def _guide_regimes() -> dict[str, chipconfig.ChipConfig]:
    regimes = {name: hand_quantized(0, means) for name, means in REGIMES.items()}
    regimes["compiled"] = compiled(0)
    return regimes


GUIDE_REGIMES = _guide_regimes()


def _guide_inputs(config: chipconfig.ChipConfig, seed: int, n: int, span_us: int) -> np.ndarray:
    return config.spikes_to_cores(guide_spikes(np.random.default_rng(seed), n, span_us))


@pytest.mark.parametrize("regime", sorted(GUIDE_REGIMES))
def test_the_guide_network_runs_the_same_on_two_threads(
    regime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "CHUNK_EVENTS", 512)
    config = _monitor_all(GUIDE_REGIMES[regime])
    inputs = _guide_inputs(config, seed=1, n=6_000, span_us=6_000)
    outcome, _ = _both_paths(config, [(inputs, np.zeros(0, DVS_DTYPE))], end_us=None)
    per_layer = np.bincount(outcome["spikes"]["layer"], minlength=5)  # type: ignore[index]
    assert (per_layer[:3] > 0).all(), per_layer  # "compiled"'s last layers are nearly silent


def _leaky_guide(config: chipconfig.ChipConfig) -> chipconfig.ChipConfig:
    """The guide network with leaks (biases that make neurons fire on their own), an output
    decimator, and a readout on the last core, on a 2 kHz slow clock."""
    config = _monitor_all(config)
    for index, core in enumerate(config.cnn_layers.values()):
        features = core.dimensions.output_shape.feature_count
        core.leak_enable = index % 2 == 0
        core.biases = [(f % 3) * max(1, core.threshold_high // 3) for f in range(features)]
    config.cnn_layers[3].output_decimator_enable = True
    config.cnn_layers[3].output_decimator_interval = 3
    config.readout = chipconfig.Readout(enable=True, input_core=1, num_classes=3, threshold=0)
    config.slow_clock_hz = 2_000.0
    return config


@pytest.mark.parametrize("regime", sorted(GUIDE_REGIMES))
def test_leak_ticks_decimator_and_readout_run_the_same_on_two_threads(
    regime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "CHUNK_EVENTS", 256)
    config = _leaky_guide(GUIDE_REGIMES[regime])
    inputs = _guide_inputs(config, seed=2, n=3_000, span_us=20_000)
    no_dvs = np.zeros(0, DVS_DTYPE)
    batches = [(inputs[:1000], no_dvs), (inputs[1000:], no_dvs)]
    for cut in _cuts(config):
        outcome, _ = _both_paths(config, batches, end_us=30_000, cut=cut)
        assert len(outcome["readout"]) > 0  # type: ignore[arg-type]


def _fan_out_chain() -> chipconfig.ChipConfig:
    """Four cores of 128 neurons, each firing all of them on every input event: one input
    event's cascade would pop 1 + 128 + 128**2 + 128**3 events, past the runaway guard."""
    width = 128
    return chip(
        {
            0: layer(np.ones((width, 1, 1, 1)), high=1, low=-1, destinations=[to(1)]),
            1: layer(np.ones((width, width, 1, 1)), high=1, low=-1, destinations=[to(2)]),
            2: layer(np.ones((width, width, 1, 1)), high=1, low=-1, destinations=[to(3)]),
            3: layer(np.ones((1, width, 1, 1)), high=1, low=-1),
        }
    )


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_a_cascade_past_the_runaway_guard_is_cut_off_as_on_one_thread(
    cut: int, monkeypatch: pytest.MonkeyPatch, no_fall_back: None
) -> None:
    monkeypatch.setattr(engine, "CHUNK_EVENTS", 1)
    inputs = spikes(t=[10, 20, 30], layer=0, feature=0, x=0, y=0)
    _, sim = _both_paths(_fan_out_chain(), [(inputs, np.zeros(0, DVS_DTYPE))], cut=cut)
    assert sim.last_run_pipelined
    assert sim.counters["dropped_overflow"] > 0


def test_an_output_limit_stops_both_paths_after_the_same_window(small_windows: None) -> None:
    config = _monitor_all(GUIDE_REGIMES["busy"])
    inputs = _guide_inputs(config, seed=3, n=400, span_us=4_000)
    outcomes = []
    for pipelined in (False, True):
        sim = ChipSimulator(config, pipelined=pipelined)
        with pytest.raises(OutputLimit):
            sim.run(inputs, max_events=500)
        outcomes.append(chip_now(sim))
    assert_same(*outcomes)


def test_a_cancelled_run_on_two_threads_leaves_a_whole_chip(small_windows: None) -> None:
    config = _monitor_all(GUIDE_REGIMES["busy"])
    inputs = _guide_inputs(config, seed=4, n=400, span_us=4_000)
    cancel = threading.Event()
    sim = ChipSimulator(config, pipelined=True)
    made = []
    real_fit = sim._fit_chunk

    def cancel_after_three_windows(seconds: float) -> None:
        real_fit(seconds)
        made.append(seconds)
        if len(made) == 3:
            cancel.set()

    sim._fit_chunk = cancel_after_three_windows  # type: ignore[method-assign]
    with pytest.raises(Cancelled):
        sim.run(inputs, cancel=cancel)
    # Whatever window it stopped after, the chip is where one thread leaves it after the
    # inputs before that window's end.
    done = inputs[inputs["t"] <= sim.time_us]
    assert 0 < done.size < inputs.size
    one_thread = ChipSimulator(config, pipelined=False)
    one_thread.run(done)
    assert_same(chip_now(sim), chip_now(one_thread))


def test_a_run_whose_stages_cannot_overlap_goes_on_on_one_thread(
    small_windows: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stages overlap by at most the lighter one's time: every step now counts as serial.
    monkeypatch.setattr(pipeline, "SERIAL_OVERLAP", 2.0)
    config = _monitor_all(GUIDE_REGIMES["moderate"])
    inputs = _guide_inputs(config, seed=5, n=400, span_us=4_000)
    steps = []
    real_step = pipeline.TwoStages._step

    def counted_step(self: pipeline.TwoStages, *args: Any) -> Any:
        steps.append(args[0])
        return real_step(self, *args)

    monkeypatch.setattr(pipeline.TwoStages, "_step", counted_step)
    _both_paths(config, [(inputs, np.zeros(0, DVS_DTYPE))], end_us=None, cut=2)  # not moving
    windows = [window for window in steps if window is not None]
    assert len(windows) == pipeline.SERIAL_STEPS + 1  # then the rest on one thread


def test_outputs_interleave_in_queue_order() -> None:
    upstream = np.zeros(4, SPIKE_DTYPE)
    upstream["x"] = [0, 1, 2, 3]
    downstream = np.zeros(3, SPIKE_DTYPE)
    downstream["x"] = [10, 11, 12]
    queue = np.zeros(3, engine.kernel.QUEUE_DTYPE)
    queue["position"] = [0, 2, 2]  # before upstream spike 0, then two entries before spike 2
    queue["b_start"] = [0, 1, 1]  # the second entry made nothing
    merged = interleaved(upstream, downstream, queue)
    assert merged["x"].tolist() == [10, 0, 1, 11, 12, 2, 3]
