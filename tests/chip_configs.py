"""Chip configuration documents built by hand, for tests that must not depend on the compiler."""

from __future__ import annotations

from typing import Any

import numpy as np

from specklab.schemas import chipconfig

#: The guide's network after conversion: (c_in, size_in, kernel, c_out, pooling) per layer.
GUIDE_LAYERS = [
    (1, 28, 5, 20, 2),
    (20, 12, 5, 32, 2),
    (32, 4, 3, 128, 2),
    (128, 1, 1, 500, 1),
    (500, 1, 1, 10, 1),
]
#: The vendor's auto placement of the guide's network.
GUIDE_PLACEMENT = {0: 0, 1: 3, 2: 5, 3: 6, 4: 1}


def layer(
    weights: Any,
    *,
    size: tuple[int, int] = (1, 1),
    stride: int = 1,
    padding: int = 0,
    high: int = 10,
    low: int = -10,
    **fields: Any,
) -> chipconfig.CNNLayer:
    """A core with ``weights`` ``[out][in][k][k]`` on an input of ``size`` (height, width)."""
    w = np.asarray(weights)
    c_out, c_in, k, _ = w.shape
    return chipconfig.CNNLayer(
        dimensions=chipconfig.Dimensions.convolution(c_in, size, c_out, k, stride, padding),
        weights=w.tolist(),
        biases=fields.pop("biases", [0] * c_out),
        threshold_high=high,
        threshold_low=low,
        monitor_enable=fields.pop("monitor_enable", True),
        **fields,
    )


def chip(
    cores: dict[int, chipconfig.CNNLayer],
    *,
    dvs: chipconfig.DVSLayer | None = None,
    readout: chipconfig.Readout | None = None,
    slow_clock_hz: float | None = None,
) -> chipconfig.ChipConfig:
    """Cores in the given order become model layers 0, 1, ...; the first takes input."""
    return chipconfig.ChipConfig(
        cnn_layers=cores,
        dvs_layer=dvs,
        readout=readout,
        layers=[chipconfig.LayerPlacement(layer=i, core=c) for i, c in enumerate(cores)],
        inputs=[0] if cores else [],
        slow_clock_hz=slow_clock_hz,
    )


def to(core: int, pooling: int = 1, feature_shift: int = 0) -> chipconfig.Destination:
    return chipconfig.Destination(layer=core, pooling=pooling, feature_shift=feature_shift)


def guide_network(seed: int = 0, *, dvs_input: bool = False) -> chipconfig.ChipConfig:
    """The guide's network with random int8 weights, placed as the vendor places it."""
    rng = np.random.default_rng(seed)
    cores = [GUIDE_PLACEMENT[i] for i in range(len(GUIDE_LAYERS))]
    layers = {}
    for index, (c_in, size_in, kernel, c_out, pooling) in enumerate(GUIDE_LAYERS):
        weights = rng.integers(-20, 40, size=(c_out, c_in, kernel, kernel))
        last = index == len(GUIDE_LAYERS) - 1
        destinations = (
            [] if last else [chipconfig.Destination(layer=cores[index + 1], pooling=pooling)]
        )
        layers[cores[index]] = layer(
            weights,
            size=(size_in, size_in),
            high=64,
            low=-64,
            destinations=destinations,
            monitor_enable=last,
        )
    dvs = None
    if dvs_input:
        dvs = chipconfig.DVSLayer(
            merge=True,
            pooling=chipconfig.XY(x=4, y=4),
            origin=chipconfig.XY(x=2, y=2),
            cut=chipconfig.XY(x=29, y=29),
            destinations=[chipconfig.Destination(layer=cores[0])],
        )
    return chipconfig.ChipConfig(
        cnn_layers=layers,
        dvs_layer=dvs,
        layers=[chipconfig.LayerPlacement(layer=i, core=c) for i, c in enumerate(cores)],
        inputs=[] if dvs_input else [0],
    )
