"""Chip configuration documents built by hand, for tests that must not depend on the compiler."""

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
)

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
) -> CNNLayer:
    """A core with ``weights`` ``[out][in][k][k]`` on an input of ``size`` (height, width)."""
    w = np.asarray(weights)
    c_out, c_in, k, _ = w.shape
    return CNNLayer(
        dimensions=Dimensions.convolution(c_in, size, c_out, k, stride, padding),
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


def guide_network(seed: int = 0, *, dvs_input: bool = False) -> ChipConfig:
    """The guide's network with random int8 weights, placed as the vendor places it."""
    rng = np.random.default_rng(seed)
    cores = [GUIDE_PLACEMENT[i] for i in range(len(GUIDE_LAYERS))]
    layers = {}
    for index, (c_in, size_in, kernel, c_out, pooling) in enumerate(GUIDE_LAYERS):
        weights = rng.integers(-20, 40, size=(c_out, c_in, kernel, kernel))
        last = index == len(GUIDE_LAYERS) - 1
        destinations = [] if last else [Destination(layer=cores[index + 1], pooling=pooling)]
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
        dvs = DVSLayer(
            merge=True,
            pooling=XY(x=4, y=4),
            origin=XY(x=2, y=2),
            cut=XY(x=29, y=29),
            destinations=[Destination(layer=cores[0])],
        )
    return ChipConfig(
        cnn_layers=layers,
        dvs_layer=dvs,
        layers=[LayerPlacement(layer=i, core=c) for i, c in enumerate(cores)],
        inputs=[] if dvs_input else [0],
    )
