"""Tiny hand-built chip configurations for the rule-by-rule tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from specklab.schemas.chipconfig import (
    XY,
    ChipConfig,
    CNNLayer,
    Destination,
    Dimensions,
    DVSLayer,
    LayerPlacement,
    Readout,
    Shape,
)
from specklab.schemas.events import DVS_DTYPE, SPIKE_DTYPE


def layer(
    weights: Any,
    *,
    size: tuple[int, int] = (1, 1),
    stride: int = 1,
    padding: int = 0,
    high: int = 10,
    low: int = -10,
    **fields: Any,
) -> CNNLayer:
    """A core with ``weights`` ``[out][in][k][k]`` on an input of ``size`` (height, width)."""
    w = np.asarray(weights)
    c_out, c_in, k, _ = w.shape
    out_h = (size[0] + 2 * padding - k) // stride + 1
    out_w = (size[1] + 2 * padding - k) // stride + 1
    return CNNLayer(
        dimensions=Dimensions(
            input_shape=Shape(size=XY(x=size[1], y=size[0]), feature_count=c_in),
            output_shape=Shape(size=XY(x=out_w, y=out_h), feature_count=c_out),
            padding=XY(x=padding, y=padding),
            stride=XY(x=stride, y=stride),
            kernel_size=k,
        ),
        weights=w.tolist(),
        biases=fields.pop("biases", [0] * c_out),
        threshold_high=high,
        threshold_low=low,
        monitor_enable=fields.pop("monitor_enable", True),
        **fields,
    )


def chip(
    cores: dict[int, CNNLayer],
    *,
    dvs: DVSLayer | None = None,
    readout: Readout | None = None,
    slow_clock_hz: float | None = None,
) -> ChipConfig:
    """Cores in the given order become model layers 0, 1, ...; the first takes input."""
    return ChipConfig(
        cnn_layers=cores,
        dvs_layer=dvs,
        readout=readout,
        layers=[LayerPlacement(layer=i, core=c) for i, c in enumerate(cores)],
        inputs=[0] if cores else [],
        slow_clock_hz=slow_clock_hz,
    )


def to(core: int, pooling: int = 1, feature_shift: int = 0) -> Destination:
    return Destination(layer=core, pooling=pooling, feature_shift=feature_shift)


def spikes(*events: tuple[int, int, int, int, int]) -> np.ndarray:
    """Input spikes from ``(t, core, feature, y, x)`` tuples."""
    out = np.zeros(len(events), SPIKE_DTYPE)
    for i, (t, core, feature, y, x) in enumerate(events):
        out[i] = (t, 0, core, feature, x, y)
    return out


def dvs_events(*events: tuple[int, int, int, int]) -> np.ndarray:
    """DVS events from ``(t, x, y, p)`` tuples."""
    return np.array(list(events), dtype=DVS_DTYPE)


def rows(spike_array: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """Output spikes as ``(t, core, feature, y, x)`` tuples, for readable assertions."""
    return [
        (int(s["t"]), int(s["core"]), int(s["feature"]), int(s["y"]), int(s["x"]))
        for s in spike_array
    ]
