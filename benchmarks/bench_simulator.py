"""Virtual devkit engine throughput on the guide's network, against a time-stepped dense simulation.

Prints one JSON object. The network is the vendor guide's LeNet (Conv2d(1,20,5)-ReLU-AvgPool2 /
Conv2d(20,32,5)-ReLU-AvgPool2 / Conv2d(32,128,3)-ReLU-AvgPool2 / Flatten / Linear(128,500)-ReLU /
Linear(500,10), no bias, input 1x28x28), placed {0:0, 1:3, 2:5, 3:6, 4:1}, last core monitored.

A trained network's activity depends on its data, which random weights do not have, so the
activity is set on purpose and reported. Two regimes are quantized here by hand the way the
vendor does (docs/chip.md §5-6: threshold 1, min_v_mem -1, AvgPool -> sum pooling with the
destination's weights scaled by 1/k^2, one scale per core) from float weights
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
the best run is the least disturbed one), numba compile excluded.
Goals (issue 19): >= 2 M input events/s in every regime and >= 5 M at moderate activity, on one
core (stretch 10 M).
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

from specklab.schemas.chipconfig import (
    XY,
    ChipConfig,
    CNNLayer,
    Destination,
    Dimensions,
    LayerPlacement,
    Shape,
)
from specklab.schemas.compile import CompileOptions
from specklab.schemas.events import SPIKE_DTYPE
from specklab.server.compiler import ArchiveLimits
from specklab.server.compiler.pipeline import compile_graph, import_model
from specklab.server.simulator import ChipSimulator

# The guide's network, from the tests' fixtures (run from a checkout).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.chip_configs import GUIDE_LAYERS, GUIDE_PLACEMENT
from tests.fixtures_models import guide_network, torchscript_bytes

REGIMES = {"moderate": (-0.25, 0.1, 0.2, 0.1, 0.3), "busy": (-0.1, 0.15, 0.15, 0.15, 0.15)}
STREAM_RATES_HZ = (100_000, 1_000_000)
GOALS = {"moderate": 5_000_000, "busy": 2_000_000, "compiled": 2_000_000}
STRETCH = 10_000_000


def _scale(x: np.ndarray, bits: int) -> float:
    """The vendor's per-tensor scale (docs/chip.md §6)."""
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    lo, hi = float(x.min()), float(x.max())
    if abs(lo) <= abs(hi) * abs(low / high):
        return abs(high / hi)
    return abs(low / lo)


def hand_quantized(seed: int, means: tuple[float, ...]) -> ChipConfig:
    """The guide's network with random weights of the given means, quantized by hand."""
    rng = np.random.default_rng(seed)
    cnn = {}
    rescale = 1.0
    cores = GUIDE_PLACEMENT
    shapes = zip(GUIDE_LAYERS, means, strict=True)
    for i, ((c_in, size, k, c_out, pooling), mean) in enumerate(shapes):
        w = rng.normal(mean, 1.0, size=(c_out, c_in, k, k)) / np.sqrt(c_in * k * k)
        w = (w * rescale).astype(np.float32)  # the previous AvgPool's 1/k^2
        s = min(_scale(w, 8), _scale(np.array([-1.0, 1.0]), 16))
        threshold = round(s)
        last = i == len(GUIDE_LAYERS) - 1
        cnn[cores[i]] = CNNLayer(
            dimensions=Dimensions(
                input_shape=Shape(size=XY(x=size, y=size), feature_count=c_in),
                output_shape=Shape(size=XY(x=size - k + 1, y=size - k + 1), feature_count=c_out),
                padding=XY(x=0, y=0),
                stride=XY(x=1, y=1),
                kernel_size=k,
            ),
            destinations=[] if last else [Destination(layer=cores[i + 1], pooling=pooling)],
            weights=np.round(w * s).astype(np.int64).tolist(),
            biases=[0] * c_out,
            threshold_high=threshold,
            threshold_low=-threshold,
            monitor_enable=last,
        )
        rescale = 1.0 / pooling**2
    return ChipConfig(
        cnn_layers=cnn,
        layers=[LayerPlacement(layer=i, core=c) for i, c in GUIDE_PLACEMENT.items()],
        inputs=[0],
    )


def compiled(seed: int) -> ChipConfig:
    """The guide's network through specklab's compiler, as an uploaded TorchScript model."""
    network = guide_network(seed)
    # Our own model: importing it in this process is fine (the daemon uses worker processes).
    graph = import_model(torchscript_bytes(network), ArchiveLimits())
    config = compile_graph(graph, CompileOptions(input_shape=(1, 28, 28))).config
    if config.core_of_layer != GUIDE_PLACEMENT:
        raise RuntimeError(f"the compiler placed the network as {config.core_of_layer}")
    return config


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


def engine_rate(config: ChipConfig, events: np.ndarray) -> tuple[float, int]:
    """Input events/s (best of five fresh runs) and spikes out of the monitored last core."""
    ChipSimulator(config).run(events[:10])  # compile, or load the compiled code
    best = float("inf")
    for _ in range(5):
        sim = ChipSimulator(config)
        start = time.perf_counter()
        out = sim.run(events)
        best = min(best, time.perf_counter() - start)
    return events.size / best, int(out.spikes.size)


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
            engine, engine_spikes = engine_rate(config, events)
            dense, dense_spikes, steps = dense_rate(config, events)
            slowest = min(slowest, engine)
            entry[f"stream_{rate}_events_per_s"] = {
                "simulated_s": round(float(events["t"][-1]) / 1e6, 2),
                "engine_events_per_s": round(engine),
                "engine_spikes_out": engine_spikes,
                "dense_1ms_steps": steps,
                "dense_events_per_s": round(dense),
                "dense_spikes_out": dense_spikes,
                "engine_over_dense": round(engine / dense, 2),
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
