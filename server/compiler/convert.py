"""Layer graph -> chip layers, following the vendor's conversion rules (docs/chip.md §5).

A chip layer (a "model layer", one core) is a weight layer (Conv2d, or Linear as a
convolution) followed by a spiking layer; its spikes go to at most two destinations, each
after its own sum pooling. The converter:

1. drops Identity/Dropout, infers shapes from ``input_shape``;
2. turns weight layers into ``(out, in, kh, kw)`` kernels: grouped convolutions become dense
   ones, a Linear reading a flattened ``C x H x W`` map becomes an ``H x W`` convolution
   (a Linear after a Linear a 1x1 one), BatchNorm is folded into the layer before it
   (without ``eps``, as the vendor does), an IF's input gain ``r`` too;
3. follows every spiking layer (and the input) forward through pooling, Flatten and merges
   (Add = the destination receives both sources; Concat = side by side, by feature shift)
   to the weight layers it reaches: those are its destinations. Pooling kernels multiply
   along a path; an AvgPool's ``1/k^2`` scales the destination's weights (per input channel,
   so two concatenated sources may differ);
4. ReLU becomes integrate-and-fire with the options' threshold and ``min_v_mem``.

Anything else is an error that names the node and the rule: a weight layer not followed by a
spiking layer, a spiking layer not preceded by a weight layer, pooling that does not tile,
a model that does not end spiking (unless ``add_spiking_output``), unsupported operators.
Hardware limits (kernel sizes, fan-out, ...) are checked later, on the result (``checks.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, NoReturn

import numpy as np

from specklab.schemas.chipconfig import unclocked_leak_warning
from specklab.schemas.compile import CompileOptions, Problem

from .errors import IllegalSequence, InvalidOptions, ModelError, ShapeMismatch, UnsupportedLayer
from .graph import (
    GRAPH_INPUT,
    Add,
    BatchNorm,
    Concat,
    Conv,
    Flatten,
    Identity,
    IntegrateFire,
    LayerGraph,
    Linear,
    Node,
    Pair,
    Pool,
    ReLU,
    Reshape,
    Unsupported,
)

Shape = tuple[int, int, int]

SEQUENCE_RULE = (
    "a core is a weight layer (Conv2d/Linear) then a spiking layer (ReLU/IF); its spikes may "
    "be pooled (AvgPool2d/SumPool2d, stride = kernel), flattened or merged, then reach weight "
    "layers (docs/chip.md §5)"
)


@dataclass(slots=True)
class Destination:
    layer: int
    pooling: Pair
    feature_shift: int = 0


@dataclass(slots=True, eq=False)
class ChipLayer:
    """One model layer: what a core computes, in float32, before quantization."""

    index: int
    kind: Literal["conv2d", "linear"]
    sources: list[Node]
    #: ``(out, in, kh, kw)``, without the pooling rescale (see :attr:`input_scale`).
    weight: np.ndarray
    bias: np.ndarray | None
    #: Per input channel: the ``1/k^2`` of average pooling on the way in.
    input_scale: np.ndarray
    stride: Pair
    padding: Pair
    input_shape: Shape
    output_shape: Shape
    threshold: float
    min_v_mem: float | None
    destinations: list[Destination] = field(default_factory=list)

    @property
    def kernel_size(self) -> Pair:
        return (int(self.weight.shape[2]), int(self.weight.shape[3]))

    def scaled_weight(self) -> np.ndarray:
        """The weights the chip computes with, before quantization (float32, as the vendor)."""
        return self.weight * self.input_scale[None, :, None, None]


@dataclass(slots=True)
class DvsInput:
    merge: bool
    #: ``(y, x)`` sum pooling of the sensor's own axes (before any swap_xy).
    pooling: Pair
    #: Crop window in pooled sensor coordinates, ``(x, y)``, both corners inclusive.
    origin: Pair
    cut: Pair
    flip_x: bool
    flip_y: bool
    swap_xy: bool
    destinations: list[Destination]
    #: Pooling layers of the model absorbed into the DVS layer.
    sources: list[Node]


@dataclass(slots=True)
class Network:
    layers: list[ChipLayer]
    inputs: list[int]
    outputs: list[int]
    dvs: DvsInput | None
    warnings: list[Problem]


def fail(
    cls: type[ModelError], message: str, node: Node | None = None, rule: str | None = None
) -> NoReturn:
    text = f"{node.describe()}: {message}" if node is not None else message
    problem = Problem(
        severity="error",
        code=cls.code,
        message=text,
        rule=rule,
        node=node.ref() if node is not None else None,
    )
    raise cls(text, problems=[problem])


def warning(code: str, message: str, node: Node | None = None, layer: int | None = None) -> Problem:
    text = f"{node.describe()}: {message}" if node is not None else message
    return Problem(
        severity="warning",
        code=code,
        message=text,
        node=node.ref() if node is not None else None,
        layer=layer,
    )


@dataclass(slots=True)
class _Value:
    """A tensor's shape without the batch; ``flat`` once a Flatten made it a vector."""

    shape: Shape
    flat: bool = False


@dataclass(frozen=True, slots=True)
class _Path:
    """What happens to spikes between a source and a weight layer."""

    pooling: Pair = (1, 1)
    #: Product of the average pools' ``1/k^2``.
    scale: float = 1.0
    #: Feature offset in the destination's input (concatenation).
    shift: int = 0
    pools: tuple[Node, ...] = ()
    merged: bool = False


@dataclass(frozen=True, slots=True)
class _Arrival:
    """A source's spikes reaching a weight layer."""

    source: int  # spiking node, weight node with an added spiking output, or GRAPH_INPUT
    path: _Path
    channels: int


class _Converter:
    def __init__(self, graph: LayerGraph, options: CompileOptions) -> None:
        self.graph = graph
        self.options = options
        self.nodes: dict[int, Node] = {}
        self.alias: dict[int, int] = {}
        self.values: dict[int, _Value] = {}
        self.kernels: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self.folded: dict[int, list[Node]] = {}
        self.warnings: list[Problem] = []
        self.outputs: set[int] = set()
        self.users: dict[int, list[int]] = {}
        self.arrivals: dict[int, list[_Arrival]] = {}
        self.output_sources: set[int] = set()

    # -- graph clean-up ------------------------------------------------------------------

    def resolve(self, index: int) -> int:
        while index in self.alias:
            index = self.alias[index]
        return index

    def _collect(self) -> None:
        for node in self.graph.nodes:
            if isinstance(node.op, Unsupported):
                fail(UnsupportedLayer, node.op.reason, node, "only layers the chip can compute")
            if not node.inputs:
                fail(IllegalSequence, "receives no input", node, SEQUENCE_RULE)
            if isinstance(node.op, Identity):
                self.alias[node.index] = node.inputs[0]
                continue
            inputs = tuple(self.resolve(i) for i in node.inputs)
            self.nodes[node.index] = Node(node.index, node.op, inputs, node.type, node.name)
        if not self.graph.outputs:
            fail(IllegalSequence, "the model returns nothing")

    # -- shapes ------------------------------------------------------------------------------

    def _shapes(self) -> None:
        c, h, w = self.options.input_shape
        declared = self.graph.input_shape
        if declared is not None and len(declared) == 3 and tuple(declared) != (c, h, w):
            fail(
                ShapeMismatch,
                f"the model declares input shape {tuple(declared)}, the options say {(c, h, w)}",
            )
        self.values[GRAPH_INPUT] = _Value((c, h, w))
        for node in self.nodes.values():
            self.values[node.index] = self._shape(node, [self.values[i] for i in node.inputs])

    def _shape(self, node: Node, inputs: list[_Value]) -> _Value:
        op = node.op
        first = inputs[0]
        if isinstance(op, Conv):
            return self._conv_shape(node, op, first)
        if isinstance(op, Linear):
            size = int(np.prod(first.shape))
            if not first.flat:
                fail(
                    ShapeMismatch,
                    f"a Linear layer reads a {_fmt(first.shape)} map; flatten it first",
                    node,
                )
            if op.weight.shape[1] != size:
                fail(
                    ShapeMismatch,
                    f"expects {op.weight.shape[1]} inputs, receives {size} ({_fmt(first.shape)})",
                    node,
                )
            return _Value((int(op.weight.shape[0]), 1, 1), flat=True)
        if isinstance(op, Pool):
            return self._pool_shape(node, op, first)
        if isinstance(op, Flatten):
            if (op.start_dim, op.end_dim) not in ((1, -1), (1, 3), (-3, -1)):
                fail(
                    UnsupportedLayer,
                    f"Flatten(start_dim={op.start_dim}, end_dim={op.end_dim}) keeps a spatial "
                    "dimension; only flattening all of C, H, W is possible",
                    node,
                )
            return _Value(first.shape, flat=True)
        if isinstance(op, Reshape):
            size = int(np.prod(first.shape))
            batch_ok = len(op.shape) == 2 and op.shape[0] in (None, -1, 1)
            if not batch_ok or op.shape[1] not in (None, -1, size):
                fail(
                    UnsupportedLayer,
                    f"reshape to {op.shape}: only flattening (batch, {size}) is possible",
                    node,
                )
            return _Value(first.shape, flat=True)
        if isinstance(op, BatchNorm):
            if op.mean.shape[0] != first.shape[0]:
                fail(
                    ShapeMismatch,
                    f"normalizes {op.mean.shape[0]} channels, receives {first.shape[0]}",
                    node,
                )
            return first
        if isinstance(op, Add):
            if any(v != first for v in inputs):
                shapes = ", ".join(_fmt(v.shape) for v in inputs)
                fail(ShapeMismatch, f"adds tensors of different shapes: {shapes}", node)
            return first
        if isinstance(op, Concat):
            return self._concat_shape(node, op, inputs)
        return first  # ReLU, IF: element-wise

    def _conv_shape(self, node: Node, op: Conv, value: _Value) -> _Value:
        if value.flat:
            fail(ShapeMismatch, "a convolution reads a flattened tensor", node)
        c, h, w = value.shape
        out, per_group, kh, kw = op.weight.shape
        if c != per_group * op.groups:
            fail(
                ShapeMismatch,
                f"expects {per_group * op.groups} input channels, receives {c}",
                node,
            )
        if op.dilation != (1, 1):
            fail(UnsupportedLayer, f"dilation {op.dilation}: the chip does not dilate", node)
        py, px = self._padding(node, op)
        sy, sx = op.stride
        ho, wo = (h + 2 * py - kh) // sy + 1, (w + 2 * px - kw) // sx + 1
        if ho < 1 or wo < 1:
            fail(ShapeMismatch, f"a {kh}x{kw} kernel does not fit its {h}x{w} input", node)
        return _Value((int(out), ho, wo))

    def _padding(self, node: Node, op: Conv) -> Pair:
        if op.padding == "valid":
            return (0, 0)
        if op.padding == "same":
            kh, kw = op.weight.shape[2:]
            if op.stride != (1, 1) or kh % 2 == 0 or kw % 2 == 0:
                fail(
                    UnsupportedLayer,
                    "padding='same' needs stride 1 and an odd kernel to be symmetric",
                    node,
                )
            return ((kh - 1) // 2, (kw - 1) // 2)
        return op.padding

    def _pool_shape(self, node: Node, op: Pool, value: _Value) -> _Value:
        if value.flat:
            fail(ShapeMismatch, "pools a flattened tensor", node)
        rule = "sum pooling tiles the map: stride = kernel, no padding (docs/chip.md §5)"
        if op.stride != op.kernel:
            fail(
                IllegalSequence,
                f"pool stride {op.stride} differs from its kernel {op.kernel}",
                node,
                rule,
            )
        if op.padding != (0, 0) or op.ceil_mode:
            fail(IllegalSequence, "padded or ceil-mode pooling has no chip equivalent", node, rule)
        c, h, w = value.shape
        kh, kw = op.kernel
        if h < kh or w < kw:
            fail(ShapeMismatch, f"a {kh}x{kw} pool does not fit its {h}x{w} input", node)
        if h % kh or w % kw:
            self.warnings.append(
                warning(
                    "pool_remainder",
                    f"a {kh}x{kw} pool on a {h}x{w} map: torch drops the last rows/columns, "
                    "the chip pools them into an extra partial row/column",
                    node,
                )
            )
        return _Value((c, h // kh, w // kw))

    def _concat_shape(self, node: Node, op: Concat, inputs: list[_Value]) -> _Value:
        first = inputs[0]
        channel_dim = op.dim in (1, -1) if first.flat else op.dim in (1, -3)
        spatial = {(v.shape[1], v.shape[2], v.flat) for v in inputs}
        if not channel_dim or len(spatial) != 1 or (first.flat and first.shape[1:] != (1, 1)):
            fail(
                UnsupportedLayer,
                f"concatenation along dimension {op.dim}: only feature channels of maps of "
                "equal size can be joined",
                node,
            )
        channels = sum(v.shape[0] for v in inputs)
        return _Value((channels, first.shape[1], first.shape[2]), flat=first.flat)

    # -- weights ---------------------------------------------------------------------------

    def _kernels(self) -> None:
        for node in self.nodes.values():
            op = node.op
            if isinstance(op, Conv):
                self.kernels[node.index] = (_dense(op), _bias(op.bias))
            elif isinstance(op, Linear):
                c, h, w = self.values[node.inputs[0]].shape
                weight = op.weight.reshape(op.weight.shape[0], c, h, w)
                self.kernels[node.index] = (weight, _bias(op.bias))
            self.folded[node.index] = [node]
        for node in list(self.nodes.values()):
            if isinstance(node.op, BatchNorm):
                self._fold_batch_norm(node, node.op)

    def _weight_producer(self, node: Node, what: str) -> int:
        source = node.inputs[0]
        users = [n for n in self.nodes.values() if source in n.inputs]
        if source not in self.kernels or len(users) != 1:
            fail(
                IllegalSequence,
                f"{what} must directly follow a Conv2d or Linear whose only reader it is",
                node,
                SEQUENCE_RULE,
            )
        return source

    def _fold_batch_norm(self, node: Node, op: BatchNorm) -> None:
        source = self._weight_producer(node, "BatchNorm")
        weight, bias = self.kernels[source]
        gamma = op.weight if op.weight is not None else np.ones_like(op.mean)
        beta = op.bias if op.bias is not None else np.zeros_like(op.mean)
        # The vendor folds without eps: f = gamma / sqrt(var). Kept for bit-identical weights.
        factor = (gamma / np.sqrt(op.var)).astype(np.float32)
        with_eps = gamma / np.sqrt(op.var + np.float32(op.eps))
        change = float(np.max(np.abs(factor / with_eps - 1))) if factor.size else 0.0
        if change > 1e-3:
            self.warnings.append(
                warning(
                    "batchnorm_eps",
                    f"folded without eps as the vendor does; with eps={op.eps:g} the scale "
                    f"would differ by up to {change:.1%}",
                    node,
                )
            )
        base = bias if bias is not None else np.zeros_like(op.mean)
        self.kernels[source] = (
            (weight * factor[:, None, None, None]).astype(np.float32),
            _bias((beta + (base - op.mean) * factor).astype(np.float32)),
        )
        self._absorb(node, source)

    def _fold_gain(self, node: Node, op: IntegrateFire) -> None:
        source = self._weight_producer(node, "an IF layer")
        channels = self.values[node.index].shape[0]
        gain = _per_channel(op.r, channels)
        if gain is None:
            fail(UnsupportedLayer, "input gain r varies within a channel", node)
        if np.all(gain == 1):
            return
        weight, bias = self.kernels[source]
        self.kernels[source] = (
            (weight * gain[:, None, None, None]).astype(np.float32),
            None if bias is None else (bias * gain).astype(np.float32),
        )

    def _absorb(self, node: Node, source: int) -> None:
        self.alias[node.index] = source
        self.folded[source].append(node)
        del self.nodes[node.index]
        for other in list(self.nodes.values()):
            if node.index in other.inputs:
                inputs = tuple(source if i == node.index else i for i in other.inputs)
                self.nodes[other.index] = Node(
                    other.index, other.op, inputs, other.type, other.name
                )

    # -- structure ---------------------------------------------------------------------------

    def _users(self) -> dict[int, list[int]]:
        users: dict[int, list[int]] = {GRAPH_INPUT: []}
        for node in self.nodes.values():
            users.setdefault(node.index, [])
            for source in node.inputs:
                users.setdefault(source, []).append(node.index)
        return users

    def _threshold(self, node: Node | None) -> float:
        if node is None or isinstance(node.op, ReLU):
            return self.options.spike_threshold
        op = node.op
        assert isinstance(op, IntegrateFire)
        values = np.unique(op.threshold)
        if values.size != 1:
            fail(UnsupportedLayer, "thresholds differ between neurons; a core has one", node)
        if np.any(op.v_reset != 0):
            fail(
                UnsupportedLayer,
                "resets to a non-zero v_reset; the chip resets by subtracting the threshold",
                node,
            )
        return float(values[0])

    def build(self) -> Network:
        self._collect()
        self._shapes()
        self._kernels()
        for node in list(self.nodes.values()):
            if isinstance(node.op, IntegrateFire):
                self._fold_gain(node, node.op)
        self.outputs = {self.resolve(i) for i in self.graph.outputs}
        self.users = self._users()
        weight_nodes = [i for i in self.nodes if i in self.kernels]
        if not weight_nodes:
            fail(IllegalSequence, "the model has no Conv2d or Linear layer", rule=SEQUENCE_RULE)
        layer_of = {node: index for index, node in enumerate(weight_nodes)}
        spikes = {
            w: self._spiking_layer(self.nodes[w], self.users[w], w in self.outputs)
            for w in weight_nodes
        }
        self.arrivals = {w: [] for w in weight_nodes}
        self._follow(GRAPH_INPUT, GRAPH_INPUT, _Path())
        for w, spike in spikes.items():
            origin = spike.index if spike is not None else w
            self._follow(origin, origin, _Path())
        layers = self._layers(weight_nodes, spikes, layer_of)
        inputs = sorted(
            {
                layer_of[w]
                for w, hits in self.arrivals.items()
                for hit in hits
                if hit.source == GRAPH_INPUT
            }
        )
        if not inputs:
            fail(IllegalSequence, "no layer reads the model's input", rule=SEQUENCE_RULE)
        dvs = self._dvs(layer_of) if self.options.dvs_input else None
        if dvs is None:
            self._plain_input()
        out_layers = sorted(
            layer_of[w]
            for w, spike in spikes.items()
            if (spike.index if spike is not None else w) in self.output_sources
        )
        leaky = [layer.index for layer in layers if layer.bias is not None]
        if leaky:
            self.warnings.append(warning("bias_needs_slow_clock", unclocked_leak_warning(leaky)))
        return Network(layers, inputs, out_layers, dvs, self.warnings)

    def _describe(self, index: int) -> str:
        return "the model's input" if index == GRAPH_INPUT else self.nodes[index].describe()

    def _spiking_layer(self, node: Node, readers: list[int], is_output: bool) -> Node | None:
        """The spiking layer after a weight layer; None for the one add_spiking_output adds."""
        if len(readers) == 1 and isinstance(self.nodes[readers[0]].op, ReLU | IntegrateFire):
            if is_output:
                fail(
                    IllegalSequence,
                    "the model returns the weight layer's values and also spikes them",
                    node,
                    SEQUENCE_RULE,
                )
            return self.nodes[readers[0]]
        if not readers and is_output:
            if self.options.add_spiking_output:
                return None
            fail(
                IllegalSequence,
                "the model ends with a weight layer, not a spiking layer "
                "(add_spiking_output appends one)",
                node,
                SEQUENCE_RULE,
            )
        if not readers:
            fail(IllegalSequence, "its values are never used", node, SEQUENCE_RULE)
        spiking = [r for r in readers if isinstance(self.nodes[r].op, ReLU | IntegrateFire)]
        culprit = next((r for r in readers if r not in spiking), readers[-1])
        fail(
            IllegalSequence,
            f"reads {node.describe()}; a weight layer must be followed by exactly one spiking "
            "layer (ReLU/IF) and nothing else",
            self.nodes[culprit],
            SEQUENCE_RULE,
        )

    def _follow(self, origin: int, start: int, path: _Path) -> None:
        """Walk from a spiking layer (or the input) to every weight layer its spikes reach."""
        if start in self.outputs and start != GRAPH_INPUT:
            if origin != start and (path.pools or path.merged):
                fail(
                    IllegalSequence,
                    "the model's output is pooled or merged after its last spiking layer; "
                    "a core's output spikes are taken before pooling",
                    self.nodes[start],
                    SEQUENCE_RULE,
                )
            self.output_sources.add(origin)
        for reader in self.users.get(start, []):
            node = self.nodes[reader]
            op = node.op
            if reader in self.kernels:
                channels = self.values[origin].shape[0]
                self.arrivals[reader].append(_Arrival(origin, path, channels))
            elif isinstance(op, Pool):
                kh, kw = op.kernel
                factor = 1.0 / (op.divisor or kh * kw) if op.mode == "avg" else 1.0
                pooling = (path.pooling[0] * kh, path.pooling[1] * kw)
                pooled = replace(
                    path, pooling=pooling, scale=path.scale * factor, pools=(*path.pools, node)
                )
                self._follow(origin, reader, pooled)
            elif isinstance(op, Flatten | Reshape):
                self._follow(origin, reader, path)
            elif isinstance(op, Add):
                self._follow(origin, reader, replace(path, merged=True))
            elif isinstance(op, Concat):
                offset = 0
                for position in node.inputs:
                    if position == start:
                        shifted = replace(path, shift=path.shift + offset, merged=True)
                        self._follow(origin, reader, shifted)
                    offset += self.values[position].shape[0]
            else:
                fail(
                    IllegalSequence,
                    f"follows {self._describe(start)}; a spiking layer must directly follow a "
                    "Conv2d or Linear",
                    node,
                    SEQUENCE_RULE,
                )

    def _layers(
        self, weight_nodes: list[int], spikes: dict[int, Node | None], layer_of: dict[int, int]
    ) -> list[ChipLayer]:
        layers: list[ChipLayer] = []
        for w in weight_nodes:
            node = self.nodes[w]
            weight, bias = self.kernels[w]
            value_in = self.values[node.inputs[0]]
            if isinstance(node.op, Conv):
                stride, padding = node.op.stride, self._padding(node, node.op)
            else:
                stride, padding = (1, 1), (0, 0)
            spike = spikes[w]
            sources = list(self.folded[w])
            if spike is not None:
                sources.append(spike)
            layers.append(
                ChipLayer(
                    index=layer_of[w],
                    kind="conv2d" if isinstance(node.op, Conv) else "linear",
                    sources=sources,
                    weight=weight,
                    bias=bias,
                    input_scale=self._input_scale(node, weight.shape[1], self.arrivals[w]),
                    stride=stride,
                    padding=padding,
                    input_shape=value_in.shape,
                    output_shape=self.values[w].shape,
                    threshold=self._threshold(spike),
                    min_v_mem=self.options.min_v_mem,
                )
            )
        for w, spike in spikes.items():
            origin = spike.index if spike is not None else w
            layer = layers[layer_of[w]]
            for target, hits in self.arrivals.items():
                for hit in (h for h in hits if h.source == origin):
                    layer.destinations.append(
                        Destination(layer_of[target], hit.path.pooling, hit.path.shift)
                    )
                    layer.sources.extend(p for p in hit.path.pools if p not in layer.sources)
        return layers

    def _input_scale(self, node: Node, channels: int, hits: list[_Arrival]) -> np.ndarray:
        scale = np.full(channels, np.nan, dtype=np.float32)
        for hit in hits:
            window = scale[hit.path.shift : hit.path.shift + hit.channels]
            factor = np.float32(hit.path.scale)
            if np.any(~np.isnan(window) & (window != factor)):
                fail(
                    IllegalSequence,
                    "its inputs are merged after different average pooling, so its weights "
                    "would need two different 1/k^2 rescales",
                    node,
                    "an AvgPool's 1/k^2 rescales the destination's weights, once per input",
                )
            window[:] = factor
        return np.nan_to_num(scale, nan=1.0)

    # -- the input -------------------------------------------------------------------------

    def _plain_input(self) -> None:
        for hits in self.arrivals.values():
            for hit in hits:
                if hit.source == GRAPH_INPUT and hit.path.pools:
                    fail(
                        IllegalSequence,
                        "pools the model's input: only the DVS layer can pool input events "
                        "(set dvs_input)",
                        hit.path.pools[0],
                        "DVS -> weight or pool; other input goes straight to a core",
                    )

    def _dvs(self, layer_of: dict[int, int]) -> DvsInput:
        options = self.options.dvs
        channels, height, width = self.options.input_shape
        if channels not in (1, 2):
            fail(
                InvalidOptions,
                f"DVS input has 1 (merged) or 2 polarity channels, input_shape has {channels}",
            )
        merge = channels == 1
        if options.merge_polarities is not None and options.merge_polarities != merge:
            fail(
                InvalidOptions,
                f"merge_polarities={options.merge_polarities} contradicts input_shape with "
                f"{channels} channel(s)",
            )
        hits = [
            (w, hit)
            for w, all_hits in self.arrivals.items()
            for hit in all_hits
            if hit.source == GRAPH_INPUT
        ]
        poolings = {hit.path.pooling for _, hit in hits}
        if len(poolings) != 1:
            fail(
                IllegalSequence,
                f"the input reaches layers through different pooling {sorted(poolings)}; "
                "the DVS layer pools once for all its destinations",
            )
        pool_y, pool_x = poolings.pop()
        # The chip pools the sensor's own axes, before it swaps them for the model: with
        # swap_xy the model's row pooling is the sensor's column pooling.
        if options.swap_xy:
            pool_y, pool_x = pool_x, pool_y
        pooling = (pool_y, pool_x)
        sensor_h, sensor_w = (width, height) if options.swap_xy else (height, width)
        pooled_w, pooled_h = sensor_w // pool_x, sensor_h // pool_y
        origin = options.crop_origin
        cut = (origin[0] + pooled_w - 1, origin[1] + pooled_h - 1)
        sources: list[Node] = []
        for _, hit in hits:
            sources.extend(p for p in hit.path.pools if p not in sources)
        return DvsInput(
            merge=merge,
            pooling=pooling,
            origin=origin,
            cut=cut,
            flip_x=options.flip_x,
            flip_y=options.flip_y,
            swap_xy=options.swap_xy,
            destinations=[Destination(layer_of[w], (1, 1), hit.path.shift) for w, hit in hits],
            sources=sources,
        )


def _fmt(shape: Shape) -> str:
    return "x".join(str(v) for v in shape)


def _bias(bias: np.ndarray | None) -> np.ndarray | None:
    """A bias of zeros is no bias: no leak to configure, no bias memory."""
    if bias is None or not np.any(bias):
        return None
    return bias.astype(np.float32)


def _dense(op: Conv) -> np.ndarray:
    """A grouped convolution as the dense one the chip computes (zeros across groups)."""
    if op.groups == 1:
        return op.weight.astype(np.float32)
    out, per_group, kh, kw = op.weight.shape
    dense = np.zeros((out, per_group * op.groups, kh, kw), dtype=np.float32)
    out_per_group = out // op.groups
    for o in range(out):
        g = o // out_per_group
        dense[o, g * per_group : (g + 1) * per_group] = op.weight[o]
    return dense


def _per_channel(values: np.ndarray, channels: int) -> np.ndarray | None:
    """One value per channel from a scalar, per-channel or per-neuron array; None if mixed."""
    flat = np.asarray(values, dtype=np.float32)
    if flat.size == 1:
        return np.full(channels, flat.reshape(-1)[0], dtype=np.float32)
    grouped = flat.reshape(channels, -1) if flat.size % channels == 0 else None
    if grouped is None or np.any(grouped != grouped[:, :1]):
        return None
    return grouped[:, 0].copy()


def convert(graph: LayerGraph, options: CompileOptions) -> Network:
    return _Converter(graph, options).build()
