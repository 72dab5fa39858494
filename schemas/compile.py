"""What a client sends with a model to compile (:class:`CompileOptions`) and what it reads back
(:class:`CompileReport`). The option names follow the vendor's guide (``input_shape``,
``spike_threshold``, ``min_v_mem``, ``add_spiking_output``, ``dvs_input``, ``discretize``,
``chip_layers_ordering``).

Shapes are torch-ordered: ``(C, H, W)`` for maps and ``(y, x)`` pairs for kernel, stride,
padding and pooling. A "model layer" is a converted, core-sized layer (a weight layer with its
spiking layer and pooling), numbered 0..n-1 in execution order as the vendor numbers them; a
"node" is a layer of the uploaded model as it was imported.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PositiveInt

from .chipconfig import NUM_CORES, CoreId

ChipName = Literal["speck2e", "speck2f"]
ModelFormat = Literal["torchscript", "torch_export", "nir", "graph"]
Pair = tuple[int, int]


def _cores_exist(ordering: Literal["auto"] | list[int] | dict[int, int]) -> object:
    cores = (
        ordering.values() if isinstance(ordering, dict) else [] if ordering == "auto" else ordering
    )
    for core in cores:
        if not 0 <= core < NUM_CORES:
            raise ValueError(f"core {core} does not exist: the chip has cores 0..{NUM_CORES - 1}")
    return ordering


#: The guide's ``chip_layers_ordering``: "auto", a list of cores in model-layer order, or a
#: model layer -> core map. Checked here (not by ``CoreId``) so that a missing core is named in
#: one message rather than in one per branch of the union.
LayerOrdering = Annotated[
    Literal["auto"] | list[int] | dict[int, int], AfterValidator(_cores_exist)
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DvsOptions(_Body):
    """The DVS pre-processing layer, used when ``dvs_input`` is set.

    The chip does, in order: merge polarities, sum pooling (taken from pooling layers placed
    directly after the model's input), crop, then flips / swap. ``input_shape`` is what the
    model sees: ``(2, H, W)`` for both polarities, ``(1, H, W)`` for merged ones, with ``H, W``
    the sensor window before pooling (and after ``swap_xy``).
    """

    #: None: merge exactly when ``input_shape`` has one channel.
    merge_polarities: bool | None = None
    #: Top-left corner ``(x, y)`` of the crop window, in pooled sensor coordinates.
    crop_origin: tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]] = (0, 0)
    flip_x: bool = False
    flip_y: bool = False
    swap_xy: bool = False


class ReadoutOptions(_Body):
    """Place the chip's readout on the model's output layer (fewer than 16 classes)."""

    average_window: Literal[16, 32] = 32
    threshold: int = Field(default=0, ge=0, lt=2**16)


class CompileOptions(_Body):
    input_shape: tuple[PositiveInt, PositiveInt, PositiveInt]
    chip: ChipName = "speck2f"
    spike_threshold: float = Field(default=1.0, gt=0)
    #: None means no floor; the vendor then quantizes with -32768, which usually ruins the scale.
    min_v_mem: float | None = -1.0
    #: Append a spiking layer when the model ends in a weight layer (the guide passes True).
    add_spiking_output: bool = True
    dvs_input: bool = False
    dvs: DvsOptions = Field(default_factory=DvsOptions)
    #: False: the model is already quantized; weights, biases and thresholds must be integers.
    discretize: bool = True
    chip_layers_ordering: LayerOrdering = "auto"
    readout: ReadoutOptions | None = None


class NodeRef(_Body):
    """A layer of the uploaded model."""

    #: Position in the imported graph, in execution order.
    index: int
    #: The torch.nn class (``Conv2d``), the ATen operator (``aten::add``) or the NIR node type.
    type: str
    #: The module path (``features.3``) or the NIR node name; empty for the model's own forward.
    name: str

    def describe(self) -> str:
        where = f" '{self.name}'" if self.name else ""
        return f"#{self.index} {self.type}{where}"


class Problem(_Body):
    severity: Literal["error", "warning"]
    #: Stable, machine-readable: e.g. ``kernel_too_large``, ``illegal_sequence``, ``zero_weights``.
    code: str
    message: str
    #: The chip or conversion rule broken, in words.
    rule: str | None = None
    #: The model layer concerned, when the problem is about one.
    layer: int | None = None
    #: The uploaded model's layer concerned, when the problem is about one.
    node: NodeRef | None = None


class LayerReport(_Body):
    index: int
    kind: Literal["conv2d", "linear"]
    #: The uploaded layers folded into this one (weight, batch norm, spiking, pooling).
    sources: list[NodeRef]
    core: CoreId | None
    input_shape: tuple[int, int, int]
    #: The core's neurons: the convolution's output, before pooling.
    output_shape: tuple[int, int, int]
    kernel_size: Pair
    stride: Pair
    padding: Pair
    #: ``pooling[i]`` is applied on the way to ``destinations[i]``.
    pooling: list[Pair]
    #: Model layers this one sends its spikes to.
    destinations: list[int]
    kernel_memory: int
    neuron_memory: int
    bias_memory: int
    threshold_high: int | None = None
    threshold_low: int | None = None
    #: The quantization scale (None when ``discretize`` is off).
    weight_scale: float | None = None
    #: Share of the non-zero weights that quantize to zero.
    zero_weight_fraction: float | None = None


class DvsReport(_Body):
    merge_polarities: bool
    pooling: Pair
    #: Crop window in pooled coordinates, both corners inclusive, ``(x, y)``.
    origin: Pair
    cut: Pair
    flip_x: bool
    flip_y: bool
    swap_xy: bool
    destinations: list[int]


class ReadoutReport(_Body):
    layer: int
    num_classes: int
    #: Class ``k`` is read from feature ``channel_stride * k`` of the layer (the 2e/2f erratum).
    channel_stride: int


class CoreCapacity(_Body):
    core: int
    kernel: int
    neuron: int
    bias: int


class LayerFit(_Body):
    layer: int
    kernel_memory: int
    neuron_memory: int
    bias_memory: int
    #: Cores this layer fits.
    fits: list[int]
    #: Per core (list index = core id): which memories are too small, empty when it fits.
    exceeds: list[list[Literal["kernel", "neuron", "bias"]]]


class PlacementReport(_Body):
    strategy: Literal["auto", "explicit"]
    ok: bool
    #: Model layer -> core (empty when no placement exists).
    mapping: dict[int, int]
    cores: list[CoreCapacity]
    layers: list[LayerFit]
    #: A smallest set of layers that cannot all be placed at once (empty when placed).
    conflict: list[int] = Field(default_factory=list)
    #: The only cores the conflicting layers fit: fewer than the layers.
    conflict_cores: list[int] = Field(default_factory=list)
    suggestions: list[str] = Field(default_factory=list)


class CompileReport(_Body):
    ok: bool
    chip: ChipName
    format: ModelFormat
    input_shape: tuple[int, int, int]
    #: The imported graph, in execution order.
    nodes: list[NodeRef] = Field(default_factory=list)
    layers: list[LayerReport] = Field(default_factory=list)
    #: Model layers that take the network's input.
    inputs: list[int] = Field(default_factory=list)
    #: Model layers whose spikes are the network's output.
    outputs: list[int] = Field(default_factory=list)
    dvs: DvsReport | None = None
    readout: ReadoutReport | None = None
    placement: PlacementReport | None = None
    problems: list[Problem] = Field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]
