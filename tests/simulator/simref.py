"""A slow, obvious model of the chip, written independently of the engine, to check it against.

Plain Python over ``[feature][y][x]`` arrays: receptive fields are found by testing every
output neuron, cascades by recursion. It follows docs/simulator.md and nothing else.
It does not model the engine's overflow guards (tests only use feed-forward networks).
"""

from __future__ import annotations

import math

import numpy as np

from specklab.schemas.chipconfig import ChipConfig, Destination
from specklab.schemas.events import DVS_CORE, DVS_DTYPE, READOUT_DTYPE, SPIKE_DTYPE

STATE_MAX = 32767


class SlowChip:
    def __init__(self, config: ChipConfig, slow_clock_hz: float | None = None) -> None:
        self.config = config
        self.v = {
            c: layer.initial_state().astype(np.int64) for c, layer in config.cnn_layers.items()
        }
        self.decimator = dict.fromkeys(config.cnn_layers, 0)
        hz = slow_clock_hz if slow_clock_hz is not None else config.slow_clock_hz
        readout = config.readout
        self.readout = readout if readout is not None and readout.enable else None
        ticking = self.readout is not None or any(
            layer.leak_enable for layer in config.cnn_layers.values()
        )
        self.period = 1e6 / hz if hz is not None and ticking else None
        self.clock = 0
        self.ticks = 0
        classes = self.readout.num_classes if self.readout else 0
        self.window = [
            [0] * classes for _ in range(self.readout.average_window if self.readout else 0)
        ]
        self.counts = [0] * classes
        self.spikes_out: list[tuple[int, int, int, int, int]] = []
        self.dvs_out: list[tuple[int, int, int, int]] = []
        self.readout_out: list[tuple[int, int, int]] = []
        self.dropped = 0

    # ---- inputs ------------------------------------------------------------------------
    def run(self, spikes: np.ndarray | None = None, dvs: np.ndarray | None = None) -> None:
        events = []
        for i, s in enumerate(spikes if spikes is not None else []):
            events.append(
                (
                    int(s["t"]),
                    0,
                    i,
                    ("spike", int(s["core"]), int(s["feature"]), int(s["y"]), int(s["x"])),
                )
            )
        for i, e in enumerate(dvs if dvs is not None else []):
            events.append((int(e["t"]), 1, i, ("dvs", int(e["x"]), int(e["y"]), int(e["p"]))))
        for t, _, _, event in sorted(events):
            if t > self.clock:
                self.advance_to(t)
            if event[0] == "spike":
                self.input_event(*event[1:], self.clock)
            else:
                self.dvs_event(*event[1:], self.clock)

    def advance_to(self, t: int) -> None:
        while self.period is not None and math.floor((self.ticks + 1) * self.period) <= t:
            self.tick(math.floor((self.ticks + 1) * self.period))
        self.clock = max(self.clock, t)

    def dvs_event(self, x: int, y: int, p: int, t: int) -> None:
        layer = self.config.dvs_layer
        assert layer is not None
        if layer.raw_monitor_enable:
            self.dvs_out.append((t, x, y, p))
        if not layer.pass_sensor_events:
            return
        feature = 0 if layer.merge else p
        px, py = x // layer.pooling.x, y // layer.pooling.y
        if not (layer.origin.x <= px <= layer.cut.x and layer.origin.y <= py <= layer.cut.y):
            return
        width = layer.cut.x - layer.origin.x
        height = layer.cut.y - layer.origin.y
        px, py = px - layer.origin.x, py - layer.origin.y
        if layer.mirror.x:
            px = width - px
        if layer.mirror.y:
            py = height - py
        if layer.mirror_diagonal:
            px, py = py, px
        if layer.monitor_enable:
            self.spikes_out.append((t, DVS_CORE, feature, px, py))
        pending = self.fan_out(layer.destinations, feature, py, px)
        for event in pending:
            self.input_event(*event, t)

    # ---- the chip ----------------------------------------------------------------------
    def input_event(self, core: int, fin: int, y: int, x: int, t: int) -> None:
        layer = self.config.cnn_layers[core]
        d = layer.dimensions
        w = layer.weight_array()
        v = self.v[core]
        pending = []
        cout, hout, wout = layer.neuron_shape
        for oy in range(hout):
            ky = y + d.padding.y - oy * d.stride.y
            if not 0 <= ky < d.kernel_size:
                continue
            for ox in range(wout):
                kx = x + d.padding.x - ox * d.stride.x
                if not 0 <= kx < d.kernel_size:
                    continue
                for f in range(cout):
                    v[f, oy, ox] = min(v[f, oy, ox] + int(w[f, fin, ky, kx]), STATE_MAX)
                    pending += self.threshold(core, f, oy, ox, t)
        for event in pending:
            self.input_event(*event, t)

    def threshold(
        self, core: int, f: int, y: int, x: int, t: int
    ) -> list[tuple[int, int, int, int]]:
        layer = self.config.cnn_layers[core]
        v = self.v[core]
        pending = []
        if v[f, y, x] >= layer.threshold_high:
            pending = self.spike(core, f, y, x, t)
            v[f, y, x] = 0 if layer.return_to_zero else v[f, y, x] - layer.threshold_high
        v[f, y, x] = max(v[f, y, x], layer.threshold_low)
        return pending

    def spike(self, core: int, f: int, y: int, x: int, t: int) -> list[tuple[int, int, int, int]]:
        layer = self.config.cnn_layers[core]
        if layer.output_decimator_enable:
            self.decimator[core] += 1
            if self.decimator[core] < layer.output_decimator_interval:
                return []
            self.decimator[core] = 0
        if layer.monitor_enable:
            self.spikes_out.append((t, core, f, x, y))
        readout = self.readout
        if readout is not None and core == readout.input_core:
            k, rest = divmod(f, readout.channel_stride)
            if rest == 0 and k < readout.num_classes:
                self.counts[k] += 1
        return self.fan_out(layer.destinations, f, y, x)

    def fan_out(
        self, destinations: list[Destination], f: int, y: int, x: int
    ) -> list[tuple[int, int, int, int]]:
        pending = []
        for dest in destinations:
            if not dest.enable:
                continue
            target = self.config.cnn_layers[dest.layer].dimensions.input_shape
            ff, yy, xx = f + dest.feature_shift, y // dest.pooling, x // dest.pooling
            if ff < target.feature_count and yy < target.size.y and xx < target.size.x:
                pending.append((dest.layer, ff, yy, xx))
            else:
                self.dropped += 1
        return pending

    def tick(self, t: int) -> None:
        for core in sorted(self.config.cnn_layers):
            layer = self.config.cnn_layers[core]
            if not layer.leak_enable:
                continue
            v = self.v[core]
            cout, hout, wout = layer.neuron_shape
            pending = []
            for y in range(hout):
                for x in range(wout):
                    for f in range(cout):
                        v[f, y, x] = min(v[f, y, x] + layer.biases[f], STATE_MAX)
                        pending += self.threshold(core, f, y, x, t)
            for event in pending:
                self.input_event(*event, t)
        readout = self.readout
        if readout is not None:
            self.window[self.ticks % readout.average_window] = self.counts
            self.counts = [0] * readout.num_classes
            sums = [sum(row[k] for row in self.window) for k in range(readout.num_classes)]
            best = max(range(readout.num_classes), key=lambda k: (sums[k], -k))
            value = min(sums[best] // readout.average_window, 2**16 - 1)
            if readout.monitor_enable and value >= readout.threshold:
                self.readout_out.append((t, best, value))
        self.ticks += 1

    # ---- results -----------------------------------------------------------------------
    def output_spikes(self) -> np.ndarray:
        out = np.zeros(len(self.spikes_out), SPIKE_DTYPE)
        for i, (t, core, f, x, y) in enumerate(self.spikes_out):
            out[i] = (t, 0, core, f, x, y)
        return self.config.spikes_to_layers(out)

    def output_dvs(self) -> np.ndarray:
        return np.array(self.dvs_out, dtype=DVS_DTYPE) if self.dvs_out else np.zeros(0, DVS_DTYPE)

    def output_readout(self) -> np.ndarray:
        if not self.readout_out:
            return np.zeros(0, READOUT_DTYPE)
        return np.array(self.readout_out, dtype=READOUT_DTYPE)

    def states(self, core: int) -> np.ndarray:
        return self.v[core]
