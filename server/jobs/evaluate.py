"""One sample through a virtual chip, and what is measured of it.

Pure work on a :class:`ChipSimulator` (no database, no processes): the worker processes of
``pool.py`` call :func:`run_chunk`, and so could anyone who wants the same numbers. Every
layer is monitored while a job runs (on the virtual devkit monitoring costs nothing and
changes nothing the chip computes), so the spikes arriving at each core are known and the
synaptic operations are counted as sinabs' ``SNNAnalyzer`` counts them: every input spike
times the number of neurons it reaches (its fan-out through the core's kernel, stride and
padding, times the output features).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from specklab.schemas.chipconfig import ChipConfig, Dimensions
from specklab.schemas.events import DVS_CORE, SPIKE_DTYPE
from specklab.schemas.jobs import JobOptions, Readout
from specklab.schemas.patch import ConfigPatch, apply_patch

from ..simulator import ChipSimulator
from ..simulator.engine import Cancelled

#: ``first spike`` latency and prediction of a sample whose output never spiked.
NONE = -1


def job_config(config: ChipConfig, options: JobOptions) -> ChipConfig:
    """The configuration a job runs: every layer (and the DVS layer) monitored, the job's
    slow clock. Raises ``PatchError`` (a ValueError) for monitor layers the model lacks."""
    monitored: list[int | str] = list(range(len(config.layers)))
    if config.dvs_layer is not None:
        monitored.append("dvs")
    patch = ConfigPatch(monitor_layers=monitored)
    if options.slow_clock_hz is not None:
        patch.slow_clock_hz = options.slow_clock_hz
    return apply_patch(config, patch)


def counted_layers(config: ChipConfig, options: JobOptions) -> list[int]:
    """The model layers whose spikes and synops are reported, in model order."""
    if options.monitor_layers is None:
        return list(range(len(config.layers)))
    return sorted({config.resolve_layer(layer) for layer in options.monitor_layers})


def _fan_1d(size_in: int, size_out: int, kernel: int, stride: int, padding: int) -> np.ndarray:
    """For each input position, how many output positions its kernel window reaches."""
    positions = np.arange(size_in)[:, None] + padding - stride * np.arange(size_out)[None, :]
    return ((positions >= 0) & (positions < kernel)).sum(axis=1)


def fan_out(dimensions: Dimensions) -> np.ndarray:
    """Neurons reached by one input spike at ``[y, x]`` (any input feature)."""
    d = dimensions
    fan_y = _fan_1d(
        d.input_shape.size.y, d.output_shape.size.y, d.kernel_size, d.stride.y, d.padding.y
    )
    fan_x = _fan_1d(
        d.input_shape.size.x, d.output_shape.size.x, d.kernel_size, d.stride.x, d.padding.x
    )
    return np.outer(fan_y, fan_x).astype(np.int64) * d.output_shape.feature_count


@dataclass(frozen=True, slots=True)
class Plan:
    """What every sample of a job needs, worked out once per configuration."""

    config: ChipConfig
    options: JobOptions
    layers: list[int]
    input_core: int
    output_layer: int
    #: Output-layer features per class (the readout reads every ``stride``-th feature).
    class_stride: int
    fan_outs: dict[int, np.ndarray]
    #: For each core, the cores (13: the DVS layer) sending to it and their pooling.
    sources: dict[int, list[tuple[int, int]]]

    @classmethod
    def of(cls, config: ChipConfig, options: JobOptions) -> Plan:
        sources: dict[int, list[tuple[int, int]]] = {core: [] for core in config.cnn_layers}
        senders = [(core, layer.destinations) for core, layer in config.cnn_layers.items()]
        if config.dvs_layer is not None:
            senders.append((DVS_CORE, config.dvs_layer.destinations))
        for source, destinations in senders:
            for dest in destinations:
                if dest.enable:
                    sources[dest.layer].append((source, dest.pooling))
        output_layer = config.outputs[0]
        output_core = config.core(output_layer)
        readout = config.readout
        reads_output = readout is not None and readout.enable and readout.input_core == output_core
        return cls(
            config=config,
            options=options,
            layers=counted_layers(config, options),
            input_core=config.core(config.inputs[0]) if config.inputs else 0,
            output_layer=output_layer,
            class_stride=readout.channel_stride if reads_output and readout else 1,
            fan_outs={core: fan_out(layer.dimensions) for core, layer in config.cnn_layers.items()},
            sources=sources,
        )

    @property
    def dvs_input(self) -> bool:
        return self.config.dvs_layer is not None

    def input_spikes(self, events: np.ndarray) -> np.ndarray:
        spikes = np.zeros(len(events), SPIKE_DTYPE)
        spikes["t"] = events["t"]
        spikes["layer"] = self.config.inputs[0] if self.config.inputs else 0
        spikes["core"] = self.input_core
        spikes["feature"] = events["p"]
        spikes["x"] = events["x"]
        spikes["y"] = events["y"]
        return spikes

    def cut(self, events: np.ndarray) -> tuple[np.ndarray, int]:
        """The events a sample sends (those before ``duration_us``) and its end time."""
        if self.options.duration_us is not None:
            return events[events["t"] < self.options.duration_us], self.options.duration_us
        return events, int(events["t"][-1]) + 1 if len(events) else 0

    def row(
        self,
        events: np.ndarray,
        label: int,
        spikes: np.ndarray,
        readout: np.ndarray,
        started: float,
    ) -> dict[str, Any]:
        """A sample's row from what it sent and what came out: prediction, output counts,
        latency, spikes and synops per layer; ``started``: its ``perf_counter`` start."""
        out = spikes[spikes["layer"] == self.output_layer]
        features = self.config.cnn_layers[self.config.core(self.output_layer)]
        n_features = features.dimensions.output_shape.feature_count
        counts = np.bincount(out["feature"], minlength=n_features)[:: self.class_stride]
        if self.options.readout is Readout.SPIKE_COUNT:
            prediction = int(np.argmax(counts)) if counts.any() else NONE
        elif self.options.readout is Readout.FIRST_SPIKE:
            prediction = int(out["feature"][0]) // self.class_stride if len(out) else NONE
        else:
            reported = np.bincount(readout["class_id"]) if len(readout) else np.zeros(0, np.int64)
            prediction = int(np.argmax(reported)) if reported.any() else NONE
        per_core = _spikes_by_core(spikes)
        return {
            "label": int(label),
            "prediction": prediction,
            "counts": counts.tolist(),
            "latency_us": int(out["t"][0]) if len(out) else NONE,
            "spikes": [len(per_core.get(self.config.core(layer), ())) for layer in self.layers],
            "synops": [
                _synops(self, self.config.core(layer), per_core, events) for layer in self.layers
            ],
            "time_s": time.perf_counter() - started,
        }


def evaluate_sample(
    sim: ChipSimulator,
    plan: Plan,
    events: np.ndarray,
    label: int,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """One sample's row (:meth:`Plan.row`) on a virtual chip."""
    started = time.perf_counter()
    if plan.options.reset:
        sim.reset_states()
    sim.reset_clock(0)
    events, end = plan.cut(events)
    if plan.dvs_input:
        first = sim.run(dvs=events, cancel=cancel)
    else:
        first = sim.run(spikes=plan.input_spikes(events), cancel=cancel)
    rest = sim.advance_to(end, cancel=cancel)
    spikes = np.concatenate([first.spikes, rest.spikes])
    readout = np.concatenate([first.readout, rest.readout])
    return plan.row(events, label, spikes, readout, started)


def _spikes_by_core(spikes: np.ndarray) -> dict[int, np.ndarray]:
    if not len(spikes):  # a sample that made no spike at all
        return {}
    order = np.argsort(spikes["core"], kind="stable")
    cores, starts = np.unique(spikes["core"][order], return_index=True)
    bounds = [*starts[1:], len(order)]
    return {int(c): spikes[order[s:e]] for c, s, e in zip(cores, starts, bounds, strict=True)}


def _synops(plan: Plan, core: int, per_core: dict[int, np.ndarray], events: np.ndarray) -> int:
    fan = plan.fan_outs[core]
    if core == plan.input_core and not plan.dvs_input:
        return int(fan[events["y"], events["x"]].sum())
    total = 0
    for source, pooling in plan.sources[core]:
        arriving = per_core.get(source)
        if arriving is not None and len(arriving):
            total += int(fan[arriving["y"] // pooling, arriving["x"] // pooling].sum())
    return total


def run_samples(
    sim: ChipSimulator,
    plan: Plan,
    samples: Any,
    start: int,
    stop: int,
    cancel: threading.Event | None = None,
) -> list[dict[str, Any]]:
    """Rows of samples ``start`` to ``stop``; :class:`Cancelled` once ``cancel`` is set."""
    rows = []
    for index in range(start, stop):
        if cancel is not None and cancel.is_set():
            raise Cancelled("the chunk was cancelled")
        rows.append(
            evaluate_sample(sim, plan, samples.sample(index), samples.labels[index], cancel)
        )
    return rows
