"""The guide's network in the simulator benchmark's three activity regimes.

Two regimes are quantized by hand the way the vendor does (docs/chip.md §5-6: threshold 1,
min_v_mem -1, AvgPool -> sum pooling with the destination's weights scaled by 1/k^2, one scale
per core) from float weights ``N(mean, 1) / sqrt(fan_in)``, the means setting the activity:
"moderate" and "busy". The third, "compiled", is specklab's compiler's output for the guide's
network as a TorchScript upload, with torch's default initialisation.
"""

from __future__ import annotations

import numpy as np

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
from specklab.server.compiler import ArchiveLimits
from specklab.server.compiler.pipeline import compile_graph, import_model

from .chip_configs import GUIDE_LAYERS, GUIDE_PLACEMENT
from .fixtures_models import guide_network, torchscript_bytes

#: The weight means of each layer, per hand-quantized regime.
REGIMES = {"moderate": (-0.25, 0.1, 0.2, 0.1, 0.3), "busy": (-0.1, 0.15, 0.15, 0.15, 0.15)}


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
