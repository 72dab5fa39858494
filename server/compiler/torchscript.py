"""TorchScript archives (``torch.jit.script`` and ``torch.jit.trace`` outputs) -> layer graph.

The module is loaded and put in eval mode; its code may call only ATen and TorchScript
primitives, and none that touch files (freezing evaluates calls on constants). It is then
frozen (which inlines every submodule and turns parameters and attributes, ``training``
included, into constants, without the numeric-changing passes such as conv/batch-norm
folding), told that its input is a ``(batch, C, H, W)`` tensor so that the rank checks of
scripted library code (``F.dropout2d``'s ``input.dim()``) become constants, and its graph
is read node by node. Reading the graph rather than module attributes is what makes traced
modules work: tracing keeps no ``stride`` or ``padding`` on submodules, but the
``aten::_convolution`` / ``aten::avg_pool2d`` calls carry them as constants. Each node keeps
its module path and class from the graph's module hierarchy.

Runs only inside the compile worker (see ``worker.py``): ``torch.jit.load`` reads user data.
"""

from __future__ import annotations

import io
import operator
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from typing import Any

import torch

from .aten import Activation, activations, add_call
from .errors import CorruptArchive, UnsafeArchive, UnsupportedLayer
from .graph import GRAPH_INPUT, LayerGraph, Unsupported


class _Dynamic:
    """A value computed at run time (a tensor size, ...): unknown while reading."""


DYNAMIC = _Dynamic()

_HIERARCHY_ENTRY = re.compile(r"([^.()]+)\(([^()]*)\)")
_HIDDEN_ENTRIES = {"SELF", "UNKNOWN_INSTANCE"}
#: The first place a node's source range names: the user's file when it was scripted.
_SOURCE_FILE = re.compile(r'File "(?:[^"]*/)?([^"/]+)", line (\d+)')

#: Pure operators on Python constants that scripted modules use in their control flow.
_CONSTANT_OPS: dict[str, Callable[..., Any]] = {
    "aten::eq": operator.eq,
    "aten::ne": operator.ne,
    "aten::lt": operator.lt,
    "aten::le": operator.le,
    "aten::gt": operator.gt,
    "aten::ge": operator.ge,
    "aten::__is__": operator.is_,
    "aten::__isnot__": operator.is_not,
    "aten::__not__": operator.not_,
    "aten::__and__": operator.and_,
    "aten::__or__": operator.or_,
    "aten::add": operator.add,
    "aten::sub": operator.sub,
    "aten::mul": operator.mul,
    "aten::floordiv": operator.floordiv,
    "aten::neg": operator.neg,
    "aten::len": len,
    "aten::__getitem__": operator.getitem,
    "aten::Int": int,
    "aten::Float": float,
    "aten::Bool": bool,
}
_PASS_THROUGH = {"prim::NumToTensor", "aten::ScalarImplicit", "prim::unchecked_cast"}


def load_torchscript(data: bytes) -> LayerGraph:
    with warnings.catch_warnings():
        # torch deprecates TorchScript in favour of torch.export; users still upload it
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            module = torch.jit.load(io.BytesIO(data), map_location="cpu")
        except Exception as exc:  # torch raises RuntimeError, ValueError, ... for bad archives
            message = f"the TorchScript archive cannot be loaded: {_first_line(exc)}"
            raise CorruptArchive(message) from exc
        module.eval()
        _check_calls(module)
        try:
            frozen = torch.jit.freeze(module, optimize_numerics=False)
        except Exception as exc:
            message = f"the TorchScript module cannot be frozen for reading: {_first_line(exc)}"
            raise UnsupportedLayer(message) from exc
    graph = frozen.graph
    _fold_input_rank(graph)
    return _Reader().read(graph)


#: Operator namespaces a network's code may call; others (custom ops, profiler, ...) are refused.
_CALLABLE_NAMESPACES = {"aten", "prim"}
#: ATen operators that read or write files.
_FILE_OPS = {"aten::from_file", "aten::save"}


def _check_calls(module: torch.jit.ScriptModule) -> None:
    """Refuse code that calls anything but tensor arithmetic, before freezing evaluates it."""
    if not module._c._has_method("forward"):
        raise UnsupportedLayer("the TorchScript module has no forward method")
    graph = module._c._get_method("forward").graph.copy()
    torch._C._jit_pass_inline(graph)  # the submodules' and functions' code too
    for node in _all_nodes(graph.nodes()):
        kind = node.kind()
        if kind.split("::", 1)[0] not in _CALLABLE_NAMESPACES or kind in _FILE_OPS:
            raise UnsafeArchive(
                f"the model's code calls {kind}, which a network has no use for; "
                "specklab does not run it",
                detail={"operator": kind},
            )


def _all_nodes(nodes: Iterable[torch._C.Node]) -> Iterator[torch._C.Node]:
    for node in nodes:
        yield node
        for block in node.blocks():
            yield from _all_nodes(block.nodes())


#: The rank of a chip network's input: a batch of (C, H, W) frames.
_INPUT_RANK = 4


def _fold_input_rank(graph: torch._C.Graph) -> None:
    """Propagate the input's rank and fold what depends only on ranks (``dim()``, branches)."""
    tensors = [v for v in graph.inputs() if isinstance(v.type(), torch._C.TensorType)]
    if len(tensors) != 1:
        return  # the reader refuses it with the count
    if not any(node.kind() == "prim::If" for node in _all_nodes(graph.nodes())):
        return  # nothing to fold, and propagating shapes costs tens of milliseconds
    tensors[0].setType(tensors[0].type().with_sizes([None] * _INPUT_RANK))
    try:
        torch._C._jit_pass_propagate_shapes_on_graph(graph)
        torch._C._jit_pass_peephole(graph, False)  # False: do use the ranks
        torch._C._jit_pass_constant_propagation(graph)
    except Exception:  # torch raises RuntimeError, IndexError, ... from its C++ passes
        return  # the branches stay as they are, and the reader names any it cannot follow


def _source(node: torch._C.Node) -> str:
    """`` (at net.py:12)`` for the line of the model's code a node came from, if known."""
    found = _SOURCE_FILE.search(node.sourceRange())
    return f" (at {found[1]}:{found[2]})" if found else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@cache
def _argument_names(schema: str) -> tuple[str, ...]:
    return tuple(arg.name for arg in torch._C.parse_schema(schema).arguments)


def _where(node: torch._C.Node) -> tuple[str, str]:
    """(type, module path) of a graph node, from the frozen graph's module hierarchy."""
    entries = [
        (name, cls)
        for name, cls in _HIERARCHY_ENTRY.findall(node.getModuleHierarchy())
        if name not in _HIDDEN_ENTRIES
    ]
    path = ".".join(name for name, _ in entries)
    if entries and hasattr(torch.nn, entries[-1][1]):
        return entries[-1][1], path
    return node.kind(), path


def _python(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float32).cpu().numpy()
    if isinstance(value, list | tuple):
        return [_python(v) for v in value]
    return value


class _Reader:
    def __init__(self) -> None:
        self.graph = LayerGraph(format="torchscript")
        self.values: dict[int, Any] = {}

    def read(self, graph: torch._C.Graph) -> LayerGraph:
        tensors = [v for v in graph.inputs() if isinstance(v.type(), torch._C.TensorType)]
        if len(tensors) != 1:
            raise UnsupportedLayer(
                f"the model's forward takes {len(tensors)} tensors; a chip network takes one input"
            )
        for value in graph.inputs():
            self.values[value.unique()] = DYNAMIC
        self.values[tensors[0].unique()] = Activation(GRAPH_INPUT)
        self._block(graph.nodes())
        returned = [self.values[v.unique()] for v in graph.outputs()]
        self.graph.outputs = activations(returned)
        return self.graph

    def _value(self, value: torch._C.Value) -> Any:
        return self.values.get(value.unique(), DYNAMIC)

    def _set(self, outputs: Iterable[torch._C.Value], values: Iterable[Any]) -> None:
        for out, value in zip(outputs, values, strict=False):
            self.values[out.unique()] = value

    def _block(self, nodes: Iterable[torch._C.Node]) -> None:
        for node in nodes:
            self._node(node)

    def _node(self, node: torch._C.Node) -> None:
        kind = node.kind()
        inputs = [self._value(v) for v in node.inputs()]
        outputs = list(node.outputs())
        if kind == "prim::Constant":
            self._set(outputs, [_constant(node)])
        elif kind in ("prim::ListConstruct", "prim::TupleConstruct"):
            self._set(outputs, [list(inputs)])
        elif kind in ("prim::ListUnpack", "prim::TupleUnpack"):
            unpacked = inputs[0] if isinstance(inputs[0], list) else [DYNAMIC] * len(outputs)
            self._set(outputs, unpacked)
        elif kind in _PASS_THROUGH:
            self._set(outputs, inputs[:1])
        elif kind == "prim::If":
            self._if(node, inputs[0])
        elif kind == "prim::RaiseException":
            type_, name = _where(node)
            raise UnsupportedLayer(
                f"the model raises an exception in {type_} '{name}'{_source(node)}"
            )
        elif activations(inputs):
            self._layer(node, inputs)
        else:
            self._set(outputs, [_evaluate(kind, inputs)] + [DYNAMIC] * (len(outputs) - 1))

    def _if(self, node: torch._C.Node, condition: Any) -> None:
        if not isinstance(condition, bool):
            type_, name = _where(node)
            raise UnsupportedLayer(
                f"{type_} '{name}' branches on a value computed at run time{_source(node)}; "
                "a chip network is a fixed graph"
            )
        block = list(node.blocks())[0 if condition else 1]
        self._block(block.nodes())
        self._set(node.outputs(), [self._value(v) for v in block.outputs()])

    def _layer(self, node: torch._C.Node, inputs: list[Any]) -> None:
        type_, name = _where(node)
        kind = node.kind()
        outputs = list(node.outputs())
        if kind.startswith("aten::"):
            args = dict(zip(_argument_names(node.schema()), map(_argument, inputs), strict=False))
            index = add_call(self.graph, kind, args, type_, name)
        else:
            reason = f"{kind} has no chip equivalent"
            index = self.graph.add(Unsupported(reason), activations(inputs), type_, name)
        self._set(outputs, [Activation(index)] + [DYNAMIC] * (len(outputs) - 1))


def _constant(node: torch._C.Node) -> Any:
    try:
        return _python(node.output().toIValue())
    except RuntimeError:  # functions and other objects without a Python value
        return DYNAMIC


def _argument(value: Any) -> Any:
    if value is DYNAMIC:
        return None
    if isinstance(value, list):
        return [_argument(v) for v in value]
    return value


def _evaluate(kind: str, inputs: list[Any]) -> Any:
    function = _CONSTANT_OPS.get(kind)
    if function is None or any(v is DYNAMIC for v in _flat(inputs)):
        return DYNAMIC
    try:
        return function(*inputs)
    except (TypeError, ValueError, IndexError, ZeroDivisionError):
        return DYNAMIC


def _flat(values: Iterable[Any]) -> list[Any]:
    flat: list[Any] = []
    for value in values:
        if isinstance(value, list):
            flat.extend(_flat(value))
        else:
            flat.append(value)
    return flat
