"""Chip configuration documents built by hand, for tests that must not depend on the compiler."""

from __future__ import annotations

import numpy as np

from specklab.schemas.chipconfig import (
    XY,
    ChipConfig,
    CNNLayer,
    Destination,
    Dimensions,
    DVSLayer,
    LayerPlacement,
    Shape,
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


def cnn_layer(
    c_in: int,
    size_in: int,
    kernel: int,
    c_out: int,
    weights: np.ndarray,
    destinations: list[Destination],
    threshold_high: int = 64,
    threshold_low: int = -64,
) -> CNNLayer:
    size_out = size_in - kernel + 1
    return CNNLayer(
        dimensions=Dimensions(
            input_shape=Shape(size=XY(x=size_in, y=size_in), feature_count=c_in),
            output_shape=Shape(size=XY(x=size_out, y=size_out), feature_count=c_out),
            padding=XY(x=0, y=0),
            stride=XY(x=1, y=1),
            kernel_size=kernel,
        ),
        destinations=destinations,
        weights=weights.tolist(),
        biases=[0] * c_out,
        threshold_high=threshold_high,
        threshold_low=threshold_low,
    )


def guide_network(seed: int = 0, *, dvs_input: bool = False) -> ChipConfig:
    """The guide's network with random int8 weights, placed as the vendor places it."""
    rng = np.random.default_rng(seed)
    cores = [GUIDE_PLACEMENT[i] for i in range(len(GUIDE_LAYERS))]
    layers = {}
    for index, (c_in, size_in, kernel, c_out, pooling) in enumerate(GUIDE_LAYERS):
        weights = rng.integers(-20, 40, size=(c_out, c_in, kernel, kernel))
        last = index == len(GUIDE_LAYERS) - 1
        destinations = [] if last else [Destination(layer=cores[index + 1], pooling=pooling)]
        layer = cnn_layer(c_in, size_in, kernel, c_out, weights, destinations)
        layer.monitor_enable = last
        layers[cores[index]] = layer
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
