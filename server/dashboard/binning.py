"""Sensor events into images and output spikes into raster points, for the live view.

Pure numpy, no I/O: the live endpoint feeds each device output in and takes one frame per tick.
Counting uses ``np.bincount`` on flat pixel indices (one vectorised pass; ``np.add.at`` is about
ten times slower), so a tick of a 2 M events/s sensor costs about a millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specklab.schemas.chipconfig import ChipConfig

#: A pixel's count saturates here in the image sent to the browser (one byte per pixel).
MAX_PIXEL_COUNT = 255
#: Raster points sent per layer and frame at most; the rate always counts every spike.
MAX_RASTER_POINTS = 2000


class DvsBinner:
    """Event counts per pixel and polarity since the last :meth:`take`."""

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self._counts = np.zeros(2 * width * height, dtype=np.int64)
        self.events = 0

    def add(self, events: np.ndarray) -> None:
        if not len(events):
            return
        x = events["x"].astype(np.int64)
        y = events["y"].astype(np.int64)
        inside = (x < self.width) & (y < self.height)
        pixels = self.width * self.height
        # Off events fill the first image, on events the second.
        flat = (events["p"][inside] > 0) * pixels + y[inside] * self.width + x[inside]
        self._counts += np.bincount(flat, minlength=2 * pixels)
        self.events += len(events)

    def take(self) -> tuple[int, bytes]:
        """(events counted, off then on counts as ``height x width`` bytes), and start again."""
        image = np.minimum(self._counts, MAX_PIXEL_COUNT).astype(np.uint8).tobytes()
        events, self.events = self.events, 0
        self._counts[:] = 0
        return events, image


@dataclass(frozen=True, slots=True)
class RasterLayer:
    """A monitored model layer: its core and output shape (features, height, width)."""

    layer: int
    core: int
    shape: tuple[int, int, int]

    @property
    def neurons(self) -> int:
        features, height, width = self.shape
        return features * height * width


def raster_layers(config: ChipConfig) -> list[RasterLayer]:
    """The model layers whose spikes leave the chip, in model order."""
    layers = []
    for placement in sorted(config.layers, key=lambda p: p.layer):
        cnn = config.cnn_layers[placement.core]
        if cnn.monitor_enable:
            out = cnn.dimensions.output_shape
            shape = (out.feature_count, out.size.y, out.size.x)
            layers.append(RasterLayer(placement.layer, placement.core, shape))
    return layers


class RasterBinner:
    """Output spikes per monitored layer since the last :meth:`take`: every spike is counted,
    at most ``max_points`` per layer are kept (evenly spread) for drawing."""

    def __init__(self, layers: list[RasterLayer], max_points: int = MAX_RASTER_POINTS) -> None:
        self.layers = layers
        self.max_points = max_points
        self._counts = {layer.layer: 0 for layer in layers}
        self._parts: dict[int, list[np.ndarray]] = {layer.layer: [] for layer in layers}

    def add(self, spikes: np.ndarray) -> None:
        if not len(spikes):
            return
        for layer in self.layers:
            mine = spikes[spikes["layer"] == layer.layer]
            if not len(mine):
                continue
            self._counts[layer.layer] += len(mine)
            kept = sum(len(part) for part in self._parts[layer.layer])
            if kept < self.max_points:
                self._parts[layer.layer].append(_spread(mine, self.max_points - kept))

    def take(self, seconds: float) -> list[dict[str, object]]:
        """Per layer: its count, rate over ``seconds``, and the kept points (``t`` in device
        microseconds, ``n`` the neuron's flat index feature-major)."""
        out: list[dict[str, object]] = []
        for layer in self.layers:
            parts = self._parts[layer.layer]
            spikes = np.concatenate(parts) if parts else np.zeros(0, dtype=_SPIKE_FIELDS)
            _, height, width = layer.shape
            neuron = (
                spikes["feature"].astype(np.int64) * height * width
                + spikes["y"].astype(np.int64) * width
                + spikes["x"].astype(np.int64)
            )
            count = self._counts[layer.layer]
            out.append(
                {
                    "layer": layer.layer,
                    "core": layer.core,
                    "neurons": layer.neurons,
                    "count": count,
                    "rate_hz": count / seconds if seconds > 0 else 0.0,
                    "t": spikes["t"].tolist(),
                    "n": neuron.tolist(),
                }
            )
            self._counts[layer.layer] = 0
            parts.clear()
        return out


_SPIKE_FIELDS = np.dtype([("t", "<u8"), ("feature", "<u2"), ("x", "u1"), ("y", "u1")])


def _spread(events: np.ndarray, at_most: int) -> np.ndarray:
    if len(events) <= at_most:
        return events
    return events[np.linspace(0, len(events) - 1, at_most).astype(np.int64)]
