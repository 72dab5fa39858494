"""What speck2e and speck2f share: configuration structs, events and the validator.

Each chip module subclasses these so that, as in samna, a speck2e Spike is not a speck2f Spike.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, ClassVar

from ._double import STATE
from ._structs import Fields, Struct

NUM_CORES = 9


def _vec(x: int = 0, y: int = 0) -> Any:
    return lambda: Vec2(x, y)


class Vec2(Struct):
    FIELDS: ClassVar[Fields] = {"x": (int, int), "y": (int, int)}


class MirrorVec(Struct):
    FIELDS: ClassVar[Fields] = {"x": (bool, bool), "y": (bool, bool)}


class Shape(Struct):
    FIELDS: ClassVar[Fields] = {"size": (Vec2, _vec()), "feature_count": (int, int)}


class Dimensions(Struct):
    FIELDS: ClassVar[Fields] = {
        "input_shape": (Shape, Shape),
        "output_shape": (Shape, Shape),
        "padding": (Vec2, _vec()),
        "stride": (Vec2, _vec(1, 1)),
        "kernel_size": (int, lambda: 1),
    }


class Destination(Struct):
    FIELDS: ClassVar[Fields] = {
        "layer": (int, int),
        "enable": (bool, bool),
        "pooling": (int, lambda: 1),
        "feature_shift": (int, int),
    }


def _two_destinations() -> list[Destination]:
    return [Destination(), Destination()]


class CnnLayerConfig(Struct):
    FIELDS: ClassVar[Fields] = {
        "dimensions": (Dimensions, Dimensions),
        "destinations": (list, _two_destinations),
        "weights": (list, list),
        "biases": (list, list),
        "leak_enable": (bool, bool),
        "leak_internal_slow_clk_enable": (bool, bool),
        "threshold_high": (int, int),
        "threshold_low": (int, int),
        "return_to_zero": (bool, bool),
        "neurons_initial_value": (list, list),
        "monitor_enable": (bool, bool),
        "output_decimator_enable": (bool, bool),
        "output_decimator_interval": (int, int),
        "input_congestion_balancer_enable": (bool, bool),
    }


class DvsLayerConfig(Struct):
    FIELDS: ClassVar[Fields] = {
        "merge": (bool, bool),
        "pooling": (Vec2, _vec(1, 1)),
        "origin": (Vec2, _vec()),
        "cut": (Vec2, _vec(127, 127)),
        "mirror": (MirrorVec, MirrorVec),
        "mirror_diagonal": (bool, bool),
        "pass_sensor_events": (bool, lambda: True),
        "destinations": (list, _two_destinations),
        "monitor_enable": (bool, bool),
        "raw_monitor_enable": (bool, bool),
        "on_channel": (bool, lambda: True),
        "off_channel": (bool, lambda: True),
    }


class ReadoutConfig(Struct):
    FIELDS: ClassVar[Fields] = {
        "enable": (bool, bool),
        "internal_slow_clk": (bool, bool),
        "low_pass_filter32_not16": (bool, bool),
        "low_pass_filter_disable": (bool, bool),
        "monitor_enable": (bool, bool),
        "output_mode_sel": (int, int),
        "output_neuron_num": (int, int),
        "override_threshold_max": (bool, bool),
        "readout_configuration_sel": (int, int),
        "readout_pin_monitor_enable": (bool, bool),
        "threshold": (int, int),
    }


class DvsFilterConfig(Struct):
    FIELDS: ClassVar[Fields] = {
        "enable": (bool, bool),
        "filter_size": (Vec2, _vec()),
        "hot_pixel_filter_enable": (bool, bool),
        "low_pass_mode_enable": (bool, bool),
        "threshold": (int, int),
    }


class SpeckConfiguration(Struct):
    FIELDS: ClassVar[Fields] = {
        "cnn_layers": (list, lambda: [CnnLayerConfig() for _ in range(NUM_CORES)]),
        "dvs_layer": (DvsLayerConfig, DvsLayerConfig),
        "readout": (ReadoutConfig, ReadoutConfig),
        "dvs_filter": (DvsFilterConfig, DvsFilterConfig),
    }


# ----- events -----


class Event(Struct):
    """An event: built empty or by field name only. samna's field order is not something specklab
    can verify without hardware, so the double refuses positional construction outright."""

    def __init__(self, **fields: Any) -> None:
        super().__init__(**fields)


class Spike(Event):
    FIELDS: ClassVar[Fields] = {
        "layer": (int, int),
        "x": (int, int),
        "y": (int, int),
        "feature": (int, int),
        "timestamp": (int, int),
    }


class DvsEvent(Event):
    FIELDS: ClassVar[Fields] = {
        "x": (int, int),
        "y": (int, int),
        "p": (bool, bool),
        "timestamp": (int, int),
    }


class ReadoutValue(Event):
    FIELDS: ClassVar[Fields] = {"value": (int, int)}


class ReadoutPinValue(Event):
    FIELDS: ClassVar[Fields] = {"index": (int, int), "timestamp": (int, int)}


class ReadNeuronValue(Event):
    FIELDS: ClassVar[Fields] = {"layer": (int, int), "address": (int, int)}


class NeuronValue(Event):
    FIELDS: ClassVar[Fields] = {
        "layer": (int, int),
        "address": (int, int),
        "neuron_state": (int, int),
    }


class WriteNeuronValue(Event):
    FIELDS: ClassVar[Fields] = {
        "layer": (int, int),
        "address": (int, int),
        "neuron_state": (int, int),
    }


def _shape(value: Any) -> tuple[int, ...]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return tuple(shape)


def validator(chip: str, configuration: type) -> Callable[[Any], tuple[bool, str]]:
    """The chip module's ``validate_configuration``: it takes that chip's configurations only."""

    def validate_configuration(config: Any) -> tuple[bool, str]:
        if not isinstance(config, configuration):
            return False, f"not a {chip} configuration: {type(config).__name__}"
        return validate(config)

    return validate_configuration


def validate(config: SpeckConfiguration) -> tuple[bool, str]:
    """A few of the checks samna's validator makes, in its (ok, message) form."""
    STATE.record("validate_configuration", config)
    if STATE.validation is not None:
        return STATE.validation
    for index, layer in enumerate(config.cnn_layers):
        d = layer.dimensions
        if not layer.weights:
            continue
        expected = (
            d.output_shape.feature_count,
            d.input_shape.feature_count,
            d.kernel_size,
            d.kernel_size,
        )
        if _shape(layer.weights) != expected:
            return False, f"layer {index}: weights {_shape(layer.weights)} != {expected}"
        neurons = (d.output_shape.feature_count, d.output_shape.size.x, d.output_shape.size.y)
        if _shape(layer.neurons_initial_value) != neurons:
            return False, f"layer {index}: neurons {_shape(layer.neurons_initial_value)}"
        if not 0 <= layer.output_decimator_interval <= 8:
            return False, f"layer {index}: decimator interval out of range"
    return True, ""


def event_module(name: str) -> ModuleType:
    """A chip's ``event`` module (imported as ``name``): subclasses of the shared event classes,
    and ``INPUT_TYPES``, what the host may write into the chip."""
    module = ModuleType(name, f"{name}: distinct classes per chip, as in samna.")
    shared = (Spike, DvsEvent, ReadoutValue, ReadoutPinValue, ReadNeuronValue, NeuronValue)
    for base in (*shared, WriteNeuronValue):
        cls = type(base.__name__, (base,), {"FIELDS": base.FIELDS, "__module__": name})
        setattr(module, base.__name__, cls)
    module.INPUT_TYPES = tuple(  # type: ignore[attr-defined]
        getattr(module, cls.__name__)
        for cls in (Spike, DvsEvent, ReadNeuronValue, WriteNeuronValue)
    )
    sys.modules[name] = module
    return module
