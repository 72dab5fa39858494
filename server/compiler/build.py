"""The compiled network as the two documents clients see: the ChipConfig and the report."""

from __future__ import annotations

import numpy as np
import orjson

from specklab.schemas.chipconfig import (
    XY,
    ChipConfig,
    CNNLayer,
    Destination,
    Dimensions,
    DVSLayer,
    LayerPlacement,
    Mirror,
    Readout,
    Shape,
)
from specklab.schemas.compile import (
    CompileOptions,
    DvsReport,
    LayerFit,
    LayerReport,
    ReadoutReport,
)
from specklab.server.chips import Chip

from .convert import ChipLayer, DvsInput, Network
from .quantize import Quantized
from .readout import READOUT_CHANNEL_STRIDE, classes


def layer_report(
    layer: ChipLayer, quantized: Quantized | None, fit: LayerFit, core: int | None
) -> LayerReport:
    return LayerReport(
        index=layer.index,
        kind=layer.kind,
        sources=[node.ref() for node in layer.sources],
        core=core,
        input_shape=layer.input_shape,
        output_shape=layer.output_shape,
        kernel_size=layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        pooling=[d.pooling for d in layer.destinations],
        destinations=[d.layer for d in layer.destinations],
        kernel_memory=fit.kernel_memory,
        neuron_memory=fit.neuron_memory,
        bias_memory=fit.bias_memory,
        threshold_high=quantized.threshold_high if quantized else None,
        threshold_low=quantized.threshold_low if quantized else None,
        weight_scale=quantized.scale if quantized else None,
        zero_weight_fraction=quantized.zero_fraction if quantized else None,
    )


def dvs_report(dvs: DvsInput) -> DvsReport:
    return DvsReport(
        merge_polarities=dvs.merge,
        pooling=dvs.pooling,
        origin=dvs.origin,
        cut=dvs.cut,
        flip_x=dvs.flip_x,
        flip_y=dvs.flip_y,
        swap_xy=dvs.swap_xy,
        destinations=[d.layer for d in dvs.destinations],
    )


def readout_report(network: Network) -> ReadoutReport:
    layer = network.layers[network.outputs[0]]
    return ReadoutReport(
        layer=layer.index,
        num_classes=classes(layer),
        channel_stride=READOUT_CHANNEL_STRIDE,
    )


def _xy(pair: tuple[int, int]) -> XY:
    """A ``(y, x)`` pair as samna's ``XY``."""
    return XY.model_construct(x=pair[1], y=pair[0])


def _shape(shape: tuple[int, int, int]) -> Shape:
    return Shape.model_construct(size=_xy(shape[1:]), feature_count=shape[0])


def config_json(
    network: Network,
    quantized: list[Quantized],
    mapping: dict[int, int],
    options: CompileOptions,
    chip: Chip,
) -> bytes:
    """The configuration's JSON, validated by nobody yet.

    Weights travel as nested lists, which are slow to build in Python (``tolist``) and slow to
    validate; so the document is written straight from the integer arrays (orjson) and
    validated once, by whoever needs a :class:`ChipConfig` (see ``pipeline.CompileResult``).
    """
    document = _config(network, quantized, mapping, options, chip).model_dump(mode="json")
    for layer, q in zip(network.layers, quantized, strict=True):
        core = document["cnn_layers"][str(mapping[layer.index])]
        core["weights"] = np.ascontiguousarray(q.weight)
        core["biases"] = np.ascontiguousarray(q.bias)
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def _config(
    network: Network,
    quantized: list[Quantized],
    mapping: dict[int, int],
    options: CompileOptions,
    chip: Chip,
) -> ChipConfig:
    """The configuration without weights and biases (built unvalidated, ``model_construct``)."""
    cnn_layers: dict[int, CNNLayer] = {}
    for layer, q in zip(network.layers, quantized, strict=True):
        cnn_layers[mapping[layer.index]] = CNNLayer.model_construct(
            dimensions=Dimensions.model_construct(
                input_shape=_shape(layer.input_shape),
                output_shape=_shape(layer.output_shape),
                padding=_xy(layer.padding),
                stride=_xy(layer.stride),
                kernel_size=layer.kernel_size[0],
            ),
            destinations=[
                Destination.model_construct(
                    layer=mapping[d.layer], pooling=d.pooling[0], feature_shift=d.feature_shift
                )
                for d in layer.destinations
            ],
            weights=[],
            biases=[],
            # the bias is a leak on the chip (added per slow-clock tick)
            leak_enable=layer.bias is not None,
            threshold_high=q.threshold_high,
            threshold_low=q.threshold_low,
            monitor_enable=layer.index in network.outputs,
        )
    dvs = network.dvs
    dvs_layer = None
    if dvs is not None:
        dvs_layer = DVSLayer.model_construct(
            input_size=_xy(chip.dvs_size),
            merge=dvs.merge,
            pooling=_xy(dvs.pooling),
            origin=XY.model_construct(x=dvs.origin[0], y=dvs.origin[1]),
            cut=XY.model_construct(x=dvs.cut[0], y=dvs.cut[1]),
            mirror=Mirror.model_construct(x=dvs.flip_x, y=dvs.flip_y),
            mirror_diagonal=dvs.swap_xy,
            destinations=[
                Destination.model_construct(layer=mapping[d.layer], feature_shift=d.feature_shift)
                for d in dvs.destinations
            ],
        )
    readout = None
    if options.readout is not None:
        output = network.layers[network.outputs[0]]
        readout = Readout.model_construct(
            enable=True,
            input_core=mapping[output.index],
            num_classes=classes(output),
            average_window=options.readout.average_window,
            threshold=options.readout.threshold,
            channel_stride=READOUT_CHANNEL_STRIDE,
        )
    return ChipConfig.model_construct(
        chip=options.chip,
        cnn_layers=cnn_layers,
        dvs_layer=dvs_layer,
        readout=readout,
        layers=[
            LayerPlacement.model_construct(layer=i, core=mapping[i])
            for i in range(len(network.layers))
        ],
        # with a DVS layer, input events enter through it, not through a core
        inputs=[] if dvs is not None else network.inputs,
        outputs=sorted(network.outputs),
    )
