"""The layer graph: what every importer produces and the converter consumes.

A :class:`LayerGraph` is a list of :class:`Node` in execution (topological) order. Each node
holds one operation with its parameters as float32 numpy arrays and plain numbers, the
indices of the nodes it reads (:data:`GRAPH_INPUT` for the model's input) and where it came
from (type and module path / NIR name), so errors can name it. Nothing here depends on torch
or nir: a graph is plain data.

Operations keep the source's meaning; the converter decides what the chip can do with them.
Anything an importer does not understand becomes :class:`Unsupported`, so the error names it
with its position instead of failing inside the importer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from specklab.schemas.compile import ModelFormat, NodeRef

#: ``Node.inputs`` entry that stands for the model's (single) input tensor.
GRAPH_INPUT = -1

Pair = tuple[int, int]


@dataclass(frozen=True, slots=True, eq=False)
class Conv:
    #: ``(out, in / groups, kh, kw)``.
    weight: np.ndarray
    bias: np.ndarray | None
    stride: Pair = (1, 1)
    #: Per side, ``(y, x)``; ``"same"`` / ``"valid"`` as NIR and torch allow.
    padding: Pair | Literal["same", "valid"] = (0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1


@dataclass(frozen=True, slots=True, eq=False)
class Linear:
    #: ``(out, in)``.
    weight: np.ndarray
    bias: np.ndarray | None


@dataclass(frozen=True, slots=True)
class ReLU:
    """An ANN activation: becomes an integrate-and-fire layer with the compile options'
    threshold and ``min_v_mem``."""


@dataclass(frozen=True, slots=True, eq=False)
class IntegrateFire:
    """An integrate-and-fire neuron layer as NIR describes it (``v' = r * I``)."""

    threshold: np.ndarray
    r: np.ndarray
    v_reset: np.ndarray


@dataclass(frozen=True, slots=True)
class Pool:
    mode: Literal["avg", "sum"]
    kernel: Pair
    stride: Pair
    padding: Pair = (0, 0)
    ceil_mode: bool = False
    #: torch's ``divisor_override`` for average pooling.
    divisor: int | None = None


@dataclass(frozen=True, slots=True)
class Flatten:
    """torch semantics: dimension 0 is the batch."""

    start_dim: int = 1
    end_dim: int = -1


@dataclass(frozen=True, slots=True)
class Reshape:
    """A view / reshape; entries are sizes, ``-1``, or None where the size was computed."""

    shape: tuple[int | None, ...]


@dataclass(frozen=True, slots=True, eq=False)
class BatchNorm:
    weight: np.ndarray | None
    bias: np.ndarray | None
    mean: np.ndarray
    var: np.ndarray
    eps: float


@dataclass(frozen=True, slots=True)
class Identity:
    """Dropout, Identity, clone, contiguous: nothing on the chip."""


@dataclass(frozen=True, slots=True)
class Add:
    """Element-wise sum of the inputs."""


@dataclass(frozen=True, slots=True)
class Concat:
    dim: int


@dataclass(frozen=True, slots=True)
class Unsupported:
    reason: str


Op = (
    Conv
    | Linear
    | ReLU
    | IntegrateFire
    | Pool
    | Flatten
    | Reshape
    | BatchNorm
    | Identity
    | Add
    | Concat
    | Unsupported
)


@dataclass(frozen=True, slots=True)
class Node:
    index: int
    op: Op
    inputs: tuple[int, ...]
    #: ``Conv2d`` / ``aten::add`` / NIR type: what the user would recognise.
    type: str
    #: Module path or NIR node name.
    name: str = ""

    def ref(self) -> NodeRef:
        return NodeRef(index=self.index, type=self.type, name=self.name)

    def describe(self) -> str:
        return self.ref().describe()


@dataclass(slots=True)
class LayerGraph:
    format: ModelFormat
    nodes: list[Node] = field(default_factory=list)
    #: Nodes whose values the model returns (:data:`GRAPH_INPUT` if it returns its input).
    outputs: tuple[int, ...] = ()
    #: The input shape the source declares, ``(C, H, W)``, when it declares one.
    input_shape: tuple[int, ...] | None = None

    def add(self, op: Op, inputs: tuple[int, ...], type: str, name: str = "") -> int:
        index = len(self.nodes)
        self.nodes.append(Node(index, op, inputs, type, name))
        return index
