"""The chip configuration document: the one description of a network that reaches a device.

The compiler produces it; the virtual devkit and the samna driver consume it; nothing else
describes a network to a device. Field names follow samna's ``SpeckConfiguration`` so the
samna driver is a field-by-field copy, with two documented differences in array order, kept
in torch's order here because that is what users and the compiler speak:

- ``weights`` are ``[out][in][ky][kx]`` (torch's ``[out, in, kh, kw]``); samna wants
  ``[out][in][kx][ky]``.
- ``neurons_initial_value`` is ``[feature][y][x]`` (torch's ``[C, H, W]``); samna wants
  ``[feature][x][y]``.

Sizes use samna's convention: ``x`` is the width (columns), ``y`` the height (rows).
Model layers (what users address, negative ones counted from the end) map to cores through
``layers``; that translation lives here and nowhere else.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Any, Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .arrays import (
    STATES,
    WEIGHTS,
    IntArraySchema,
    States,
    Weights,
    defer_arrays,
    insert_arrays,
    lift_arrays,
)
from .events import DVS_LAYER, copy_events

CHIP_CONFIG_FORMAT: Final = "specklab.chip-config"
CHIP_CONFIG_VERSION: Final = 1
NUM_CORES = 9

CoreId = Annotated[int, Field(ge=0, lt=NUM_CORES)]
Pooling = Literal[1, 2, 4]


def unclocked_leak_warning(layers: list[int]) -> str:
    """What to tell users whose layers leak (have biases) while the slow clock is off."""
    return (
        f"model layers {layers} have biases (a trained BatchNorm makes some): the chip adds a "
        "bias once per slow-clock tick, and the slow clock is off unless the deployment sets "
        "slow_clock_hz; without it the biases are never added and such a network may classify "
        "near chance. Deploy with slow_clock_hz = 1 / your time step (1000 for 1 ms steps)"
    )


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=False)


class XY(_Document):
    x: int = Field(ge=0)
    y: int = Field(ge=0)


class Shape(_Document):
    size: XY
    feature_count: int = Field(ge=1, le=1024)


class Dimensions(_Document):
    input_shape: Shape
    #: The neurons of the core: the convolution's output, before any pooling.
    output_shape: Shape
    padding: XY
    stride: XY
    kernel_size: int = Field(ge=1, le=16)

    @classmethod
    def convolution(
        cls,
        c_in: int,
        size: tuple[int, int],
        c_out: int,
        kernel: int,
        stride: int = 1,
        padding: int = 0,
    ) -> Dimensions:
        """A square-kernel convolution of ``c_in`` features on a ``(height, width)`` plane.

        The output plane follows from the input, kernel, stride and padding, so callers that
        build cores by hand cannot give a core neurons it does not compute.
        """
        out_h, out_w = ((n + 2 * padding - kernel) // stride + 1 for n in size)
        return cls(
            input_shape=Shape(size=XY(x=size[1], y=size[0]), feature_count=c_in),
            output_shape=Shape(size=XY(x=out_w, y=out_h), feature_count=c_out),
            padding=XY(x=padding, y=padding),
            stride=XY(x=stride, y=stride),
            kernel_size=kernel,
        )


class Destination(_Document):
    """Where a core's (or the DVS layer's) spikes go: another core, after sum pooling."""

    layer: CoreId
    enable: bool = True
    pooling: Pooling = 1
    #: Added to the feature index on arrival, so two sources can fill one core's input side by side.
    feature_shift: int = Field(default=0, ge=0, lt=1024)


class CNNLayer(_Document):
    dimensions: Dimensions
    destinations: list[Destination] = Field(default_factory=list, max_length=2)
    #: Integer weights, ``[out][in][ky][kx]`` (torch order; see the module docstring); a
    #: read-only array, nested lists of ints on the wire.
    weights: Weights
    #: One integer bias per output feature; the leak added per slow-clock tick.
    biases: list[int]
    leak_enable: bool = False
    threshold_high: int = Field(ge=-(2**15), lt=2**15)
    threshold_low: int = Field(ge=-(2**15), lt=2**15)
    return_to_zero: bool = False
    #: ``[feature][y][x]`` (torch order) or None for all zeros; read-only like ``weights``.
    neurons_initial_value: States | None = None
    monitor_enable: bool = False
    output_decimator_enable: bool = False
    #: With the decimator on, one spike in ``output_decimator_interval`` leaves the core.
    output_decimator_interval: int = Field(default=2, ge=2, le=512)

    @model_validator(mode="after")
    def _shapes_agree(self) -> CNNLayer:
        d = self.dimensions
        expected = (
            d.output_shape.feature_count,
            d.input_shape.feature_count,
            d.kernel_size,
            d.kernel_size,
        )
        got = self.weight_array().shape
        if got != expected:
            raise ValueError(f"weights have shape {got}, dimensions say {expected}")
        if len(self.biases) != d.output_shape.feature_count:
            raise ValueError(
                f"{len(self.biases)} biases for {d.output_shape.feature_count} output features"
            )
        if self.neurons_initial_value is not None:
            shape = self.initial_state().shape
            if shape != self.neuron_shape:
                raise ValueError(
                    f"neurons_initial_value has shape {shape}, expected {self.neuron_shape}"
                )
        return self

    def __eq__(self, other: object) -> bool:
        # pydantic compares field values with ==, which is element-wise for arrays.
        if not isinstance(other, CNNLayer):
            return NotImplemented
        return all(
            _same(getattr(self, name), getattr(other, name)) for name in type(self).model_fields
        )

    @property
    def neuron_shape(self) -> tuple[int, int, int]:
        """``(features, height, width)`` of the core's neurons."""
        out = self.dimensions.output_shape
        return (out.feature_count, out.size.y, out.size.x)

    def weight_array(self) -> np.ndarray:
        """Weights as an int16 array ``[out, in, kh, kw]`` (the field itself, not a copy)."""
        return _as_array(self.weights, WEIGHTS)

    def initial_state(self) -> np.ndarray:
        """Initial membrane values as an int32 array ``[C, H, W]``."""
        if self.neurons_initial_value is None:
            return np.zeros(self.neuron_shape, dtype=np.int32)
        return _as_array(self.neurons_initial_value, STATES)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b))
    return bool(a == b)


def _as_array(value: object, schema: IntArraySchema) -> np.ndarray:
    """An array field's value; one assigned after validation (documents are not re-validated
    on assignment) is validated now."""
    return value if isinstance(value, np.ndarray) else schema.validate(value)


class Mirror(_Document):
    x: bool = False
    y: bool = False


class DVSLayer(_Document):
    """The DVS pre-processing layer: merge polarities, sum pool, crop, then mirror / swap.

    The crop keeps ``origin <= (x, y) <= cut`` in pooled coordinates (both ends inclusive).
    """

    input_size: XY = Field(default_factory=lambda: XY(x=128, y=128))
    merge: bool = False
    pooling: XY = Field(default_factory=lambda: XY(x=1, y=1))
    origin: XY = Field(default_factory=lambda: XY(x=0, y=0))
    cut: XY = Field(default_factory=lambda: XY(x=127, y=127))
    mirror: Mirror = Field(default_factory=Mirror)
    mirror_diagonal: bool = False
    pass_sensor_events: bool = True
    destinations: list[Destination] = Field(default_factory=list, max_length=2)
    monitor_enable: bool = False
    raw_monitor_enable: bool = False

    @property
    def output_features(self) -> int:
        return 1 if self.merge else 2


class Readout(_Document):
    """The readout: the class (feature) with the highest average spike count wins.

    Erratum on 2e/2f: readout class ``k`` (0-based) reads feature ``4 * k`` of ``input_core``;
    the compiler widens the last layer accordingly when it places a readout.
    """

    enable: bool = False
    input_core: CoreId = 0
    num_classes: int = Field(default=1, ge=1, lt=16)
    #: Slow-clock ticks averaged over (the chip offers 16 or 32).
    average_window: Literal[16, 32] = 32
    #: Minimum average spike count per tick for a class to be reported; 0 reports every tick.
    threshold: int = Field(default=0, ge=0, lt=2**16)
    monitor_enable: bool = True
    channel_stride: int = Field(default=4, ge=1, le=4)


class LayerPlacement(_Document):
    """One converted model layer and the core it occupies."""

    layer: int = Field(ge=0)
    core: CoreId


class ChipConfig(_Document):
    format: Literal["specklab.chip-config"] = CHIP_CONFIG_FORMAT
    version: Literal[1] = CHIP_CONFIG_VERSION
    chip: Literal["speck2e", "speck2f"] = "speck2f"
    #: Used cores only, keyed by core id.
    cnn_layers: dict[CoreId, CNNLayer] = Field(default_factory=dict)
    dvs_layer: DVSLayer | None = None
    readout: Readout | None = None
    #: Model layer -> core, in model-layer order.
    layers: list[LayerPlacement] = Field(default_factory=list)
    #: Model layers that take external input spikes (the network's entry points).
    inputs: list[int] = Field(default_factory=list)
    #: Model layers whose spikes are the network's output (its exit points), what
    #: ``monitor_layers=[-1]`` monitors. Documents written before this field existed get the
    #: layers that send to no core.
    outputs: list[int] = Field(default_factory=list)
    #: Slow clock (leak and readout ticks) in Hz; None leaves it off.
    slow_clock_hz: float | None = Field(default=None, gt=0, le=1_000_000)

    @model_validator(mode="after")
    def _consistent(self) -> ChipConfig:
        cores = [p.core for p in self.layers]
        if len(set(cores)) != len(cores):
            raise ValueError(f"two model layers share a core: {cores}")
        if [p.layer for p in self.layers] != list(range(len(self.layers))):
            raise ValueError("layers must list model layers 0..n-1 in order")
        missing = set(cores) - set(self.cnn_layers)
        if missing:
            raise ValueError(f"layers place model layers on unconfigured cores {sorted(missing)}")
        for source, layer in self.cnn_layers.items():
            for dest in layer.destinations:
                if dest.enable and dest.layer not in self.cnn_layers:
                    raise ValueError(f"core {source} sends to unconfigured core {dest.layer}")
        for name, entries in (("input", self.inputs), ("output", self.outputs)):
            for entry in entries:
                if not 0 <= entry < len(self.layers):
                    raise ValueError(f"{name} layer {entry} is not a model layer")
        if not self.outputs:
            self.outputs = [
                p.layer
                for p in self.layers
                if not any(d.enable for d in self.cnn_layers[p.core].destinations)
            ]
        return self

    @classmethod
    def model_validate_json(
        cls,
        json_data: str | bytes | bytearray,
        *,
        context: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> ChipConfig:
        """pydantic's, with the weight and state arrays parsed straight into numpy.

        Validating 10^5 weights as nested lists builds (and garbage-collects) 10^5 Python
        objects and costs a quarter of a second; this costs milliseconds.
        """
        data = json_data.encode() if isinstance(json_data, str) else bytes(json_data)
        lifted, arrays = lift_arrays(data, ("weights", "neurons_initial_value"))
        return super().model_validate_json(lifted, context={**(context or {}), **arrays}, **kwargs)

    def model_dump_json(
        self, *, indent: int | None = None, context: dict[str, Any] | None = None, **kwargs: Any
    ) -> str:
        """pydantic's, with the weight and state arrays written straight from numpy (the same
        bytes as their nested lists; indented output takes pydantic's ordinary path)."""
        if indent is not None:
            return super().model_dump_json(indent=indent, context=context, **kwargs)
        deferred = defer_arrays()
        text = super().model_dump_json(context={**(context or {}), **deferred}, **kwargs)
        return insert_arrays(text, deferred)

    @cached_property
    def core_of_layer(self) -> dict[int, int]:
        return {p.layer: p.core for p in self.layers}

    @cached_property
    def layer_of_core(self) -> dict[int, int]:
        return {p.core: p.layer for p in self.layers}

    @property
    def unclocked_leaks(self) -> list[int]:
        """Model layers whose leak (bias) is enabled while the slow clock that adds it is off."""
        if self.slow_clock_hz is not None:
            return []
        return [p.layer for p in self.layers if self.cnn_layers[p.core].leak_enable]

    def resolve_layer(self, layer: int) -> int:
        """A model-layer index, negative ones counted from the end as in the guide."""
        n = len(self.layers)
        index = layer + n if layer < 0 else layer
        if not 0 <= index < n:
            raise IndexError(f"model layer {layer} does not exist (the model has {n} layers)")
        return index

    def core(self, layer: int) -> int:
        return self.core_of_layer[self.resolve_layer(layer)]

    def spikes_to_cores(self, spikes: np.ndarray) -> np.ndarray:
        """Input spikes with ``core`` filled from their model ``layer`` (a copy; checks layers)."""
        lookup = np.full(256, 255, dtype=np.uint8)
        for entry in self.inputs:
            lookup[entry] = self.core_of_layer[entry]
        cores = lookup[spikes["layer"]]
        bad = cores == 255
        if bad.any():
            layer = int(spikes["layer"][bad][0])
            raise ValueError(
                f"model layer {layer} takes no input spikes; inputs are layers {self.inputs}"
            )
        out = copy_events(spikes)
        out["core"] = cores
        return out

    def spikes_to_layers(self, spikes: np.ndarray) -> np.ndarray:
        """Fill ``layer`` of output spikes from their ``core`` (in place, and returned)."""
        lookup = np.full(256, DVS_LAYER, dtype=np.uint8)
        for core, layer in self.layer_of_core.items():
            lookup[core] = layer
        spikes["layer"] = lookup[spikes["core"]]
        return spikes
