"""The chip's readout on the model's output layer, with the 2e/2f channel erratum.

On these chips readout class ``k`` reads feature ``4 * k`` of its core, so, as the vendor does,
the output layer is widened: class ``k``'s weights move to feature ``4k`` and the features in
between stay silent (zero weights). The readout counts fewer than 16 classes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from specklab.schemas.chipconfig import Readout
from specklab.server.chips import Chip

from .convert import ChipLayer, Network, fail
from .errors import HardwareLimit, InvalidOptions

#: Readout class k sits on feature ``READOUT_CHANNEL_STRIDE * k``.
READOUT_CHANNEL_STRIDE: int = Readout.model_fields["channel_stride"].default


def classes(layer: ChipLayer) -> int:
    """Classes of a layer widened for the readout."""
    return (layer.output_shape[0] - 1) // READOUT_CHANNEL_STRIDE + 1


def widen_for_readout(network: Network, chip: Chip) -> Network:
    if len(network.outputs) != 1:
        fail(
            InvalidOptions,
            f"the readout reads one output layer; the model has {len(network.outputs)}",
        )
    layer = network.layers[network.outputs[0]]
    count = layer.output_shape[0]
    if count > chip.limits.max_readout_classes:
        fail(
            HardwareLimit,
            f"model layer {layer.index} has {count} outputs; the readout takes at most "
            f"{chip.limits.max_readout_classes} classes",
            layer.sources[0],
            f"readout classes <= {chip.limits.max_readout_classes}",
        )
    if layer.destinations:
        fail(
            InvalidOptions,
            f"model layer {layer.index} feeds other layers, so it cannot be widened for the "
            "readout",
            layer.sources[0],
        )
    width = READOUT_CHANNEL_STRIDE * (count - 1) + 1
    weight = np.zeros((width, *layer.weight.shape[1:]), dtype=np.float32)
    weight[::READOUT_CHANNEL_STRIDE] = layer.weight
    bias = None
    if layer.bias is not None:
        bias = np.zeros(width, dtype=np.float32)
        bias[::READOUT_CHANNEL_STRIDE] = layer.bias
    widened = replace(
        layer, weight=weight, bias=bias, output_shape=(width, *layer.output_shape[1:])
    )
    layers = [widened if other is layer else other for other in network.layers]
    return replace(network, layers=layers)
