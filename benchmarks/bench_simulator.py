"""Virtual devkit engine throughput on the guide's network, against a time-stepped dense simulation.

Prints one JSON object. The network is the vendor guide's LeNet (Conv2d(1,20,5)-ReLU-AvgPool2 /
Conv2d(20,32,5)-ReLU-AvgPool2 / Conv2d(32,128,3)-ReLU-AvgPool2 / Flatten / Linear(128,500)-ReLU /
Linear(500,10), no bias, input 1x28x28), placed {0:0, 1:3, 2:5, 3:6, 4:1}, last core monitored.

A trained network's activity depends on its data, which random weights do not have, so the
activity is set on purpose and reported. Two regimes are quantized by hand the way the
vendor does (tests/guide_regimes.py) from float weights
``N(mean, 1) / sqrt(fan_in)``, the means setting the activity: "moderate" (each layer emits
about one spike or fewer per input event) and "busy" (about three times as many spikes in the
first layers). A third, "compiled", is what the daemon would run: specklab's compiler on the
guide's network as a TorchScript upload, with torch's default initialisation (whose first layer
turns out busier than "moderate"'s, and whose later layers are nearly silent).
Input: uniformly random single-channel events on the 28x28 input with Poisson timing.

The baseline is the vendor's kind of software simulation: dense and time-stepped (1 ms), one
torch conv per layer per step with multi-spike integrate-and-fire (v += input; n = floor(v/thr)
where v > 0; v -= n*thr; v = max(v, low)), one thread. Its cost grows with simulated time, the
engine's with events, so the ratio depends on the input's event rate: two stream rates are
measured. Rates are wall-clock, best of five runs from a fresh state (the machines are shared:
the best run is the least disturbed one), numba compile excluded. The engine runs as the daemon
runs it (on two threads when the input is long enough, ``engine_threads``), alternating with
runs kept on one thread (``engine_one_thread_events_per_s``), the baseline of the same run.
Goals (issue 19): >= 2 M input events/s in every regime and >= 5 M at moderate activity
(stretch 10 M).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from specklab.schemas.chipconfig import ChipConfig, CNNLayer
from specklab.schemas.events import SPIKE_DTYPE
from specklab.server.simulator import ChipSimulator

# The guide's network and its regimes, from the tests' fixtures (run from a checkout).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.guide_regimes import REGIMES, compiled, hand_quantized

STREAM_RATES_HZ = (100_000, 1_000_000)
GOALS = {"moderate": 5_000_000, "busy": 2_000_000, "compiled": 2_000_000}
STRETCH = 10_000_000


def _cores_in_order(config: ChipConfig) -> list[CNNLayer]:
    return [config.cnn_layers[config.core_of_layer[i]] for i in range(len(config.layers))]


def _pooling(layer: CNNLayer) -> int:
    return layer.destinations[0].pooling if layer.destinations else 1


def input_events(n: int, rate_hz: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    events = np.zeros(n, SPIKE_DTYPE)
    events["t"] = np.cumsum(rng.exponential(1e6 / rate_hz, n)).astype(np.uint64)
    events["x"] = rng.integers(0, 28, n)
    events["y"] = rng.integers(0, 28, n)
    return events


def engine_rates(config: ChipConfig, events: np.ndarray) -> dict[str, object]:
    """Wall-clock input events/s of the engine as the daemon runs it (two threads when the
    input is long enough and the chip can be cut, see docs/simulator.md) and of the engine kept
    on one thread, best of five fresh runs each, the two alternating; spikes out of the
    monitored last core (the same on both paths, or this raises)."""
    for pipelined in (None, False):  # compile, or load the compiled code
        ChipSimulator(config, pipelined=pipelined).run(events[:10])
    best = {None: float("inf"), False: float("inf")}
    spikes_out: dict[bool | None, np.ndarray] = {}
    best_on_two_threads = False
    for _ in range(5):
        for pipelined in (None, False):
            sim = ChipSimulator(config, pipelined=pipelined)
            start = time.perf_counter()
            out = sim.run(events)
            took = time.perf_counter() - start
            if took < best[pipelined]:
                best[pipelined] = took
                if pipelined is None:
                    best_on_two_threads = sim.last_run_pipelined
            spikes_out[pipelined] = out.spikes
    if not np.array_equal(spikes_out[None], spikes_out[False]):
        raise RuntimeError("the two-thread engine's spikes differ from the one-thread engine's")
    return {
        "engine_events_per_s": round(events.size / best[None]),
        "engine_threads": 2 if best_on_two_threads else 1,
        "engine_one_thread_events_per_s": round(events.size / best[False]),
        "engine_spikes_out": int(spikes_out[None].size),
    }


def _touched(coordinate: np.ndarray, size_out: int, k: int) -> np.ndarray:
    """Output rows (or columns) one input at ``coordinate`` reaches (stride 1, no padding)."""
    c = coordinate.astype(np.int64)
    return np.minimum(c, size_out - 1) - np.maximum(0, c - k + 1) + 1


def activity(config: ChipConfig, events: np.ndarray) -> dict[str, object]:
    """Spikes per input event of every layer and synaptic operations per input event.

    From a separate run with every core monitored (not timed).
    """
    monitored = config.model_copy(deep=True)
    for layer in monitored.cnn_layers.values():
        layer.monitor_enable = True
    out = ChipSimulator(monitored).run(events).spikes
    spikes_per_event, synops = [], 0
    arriving_y, arriving_x = events["y"], events["x"]
    for i, layer in enumerate(_cores_in_order(config)):
        d = layer.dimensions
        touched = _touched(arriving_y, d.output_shape.size.y, d.kernel_size) * _touched(
            arriving_x, d.output_shape.size.x, d.kernel_size
        )
        synops += int(touched.sum()) * d.output_shape.feature_count
        emitted = out[out["layer"] == i]
        spikes_per_event.append(round(emitted.size / events.size, 3))
        pooling = _pooling(layer)
        arriving_y, arriving_x = emitted["y"] // pooling, emitted["x"] // pooling
    return {
        "spikes_per_input_event_by_layer": spikes_per_event,
        "synaptic_ops_per_input_event": round(synops / events.size),
    }


def dense_rate(config: ChipConfig, events: np.ndarray) -> tuple[float, int, int]:
    """Input events/s of the time-stepped simulation, its spikes out, and its step count."""
    layers = _cores_in_order(config)
    weights = [torch.tensor(layer.weight_array(), dtype=torch.float32) for layer in layers]
    step = (events["t"] // 1000).astype(np.int64)
    steps = int(step[-1]) + 1
    bounds = np.searchsorted(step, np.arange(steps + 1))
    v: list[torch.Tensor | None] = [None] * len(layers)
    spikes_out = 0
    size = layers[0].dimensions.input_shape.size
    start = time.perf_counter()
    with torch.no_grad():
        for s in range(steps):
            chunk = events[bounds[s] : bounds[s + 1]]
            frame = np.zeros((1, 1, size.y, size.x), dtype=np.float32)
            np.add.at(frame[0, 0], (chunk["y"], chunk["x"]), 1.0)
            x = torch.from_numpy(frame)
            for i, (layer, weight) in enumerate(zip(layers, weights, strict=True)):
                current = F.conv2d(x, weight)
                v[i] = current if v[i] is None else v[i] + current
                n = torch.floor(torch.clamp(v[i], min=0) / layer.threshold_high)
                v[i] = torch.clamp(v[i] - n * layer.threshold_high, min=layer.threshold_low)
                pooling = _pooling(layer)
                x = F.avg_pool2d(n, pooling, divisor_override=1) if pooling > 1 else n
            spikes_out += int(x.sum())
    return events.size / (time.perf_counter() - start), spikes_out, steps


def main() -> None:
    n = int(os.environ.get("BENCH_SIM_EVENTS", 1_000_000))
    torch.set_num_threads(1)
    result: dict[str, object] = {
        "benchmark": "simulator",
        "network": "guide LeNet 1x28x28, placement {0:0,1:3,2:5,3:6,4:1}",
        "input_events": n,
        "load_average_before": round(os.getloadavg()[0], 2),
        "stretch_events_per_s": STRETCH,
        "regimes": {},
    }
    configs: dict[str, tuple[ChipConfig, dict[str, object]]] = {
        name: (hand_quantized(seed=0, means=means), {"weight_means": means})
        for name, means in REGIMES.items()
    }
    configs["compiled"] = (compiled(seed=0), {"compiler": "specklab, TorchScript upload"})
    for regime, (config, entry) in configs.items():
        entry["thresholds"] = [layer.threshold_high for layer in _cores_in_order(config)]
        slowest = float("inf")
        for rate in STREAM_RATES_HZ:
            events = input_events(n, rate, seed=1)
            engine = engine_rates(config, events)
            dense, dense_spikes, steps = dense_rate(config, events)
            engine_rate = float(engine["engine_events_per_s"])  # type: ignore[arg-type]
            slowest = min(slowest, engine_rate)
            entry[f"stream_{rate}_events_per_s"] = {
                "simulated_s": round(float(events["t"][-1]) / 1e6, 2),
                **engine,
                "dense_1ms_steps": steps,
                "dense_events_per_s": round(dense),
                "dense_spikes_out": dense_spikes,
                "engine_over_dense": round(engine_rate / dense, 2),
            }
        entry.update(activity(config, events))
        entry["goal_events_per_s"] = GOALS[regime]
        entry["goal_met"] = slowest >= GOALS[regime]
        entry["stretch_met"] = slowest >= STRETCH
        result["regimes"][regime] = entry
    result["load_average_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
