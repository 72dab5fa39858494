"""torch.export archives (``.pt2`` from ``torch.export.save``) -> layer graph.

An exported program is already a flat ATen graph; parameters arrive as placeholders that the
graph signature maps to the archive's tensors, and every node's ``nn_module_stack`` names the
module it came from. The program is read from its JSON by :mod:`.pt2`, never with
``torch.export.load`` (which runs code from the archive); torch only supplies the ATen
operator schemas (argument names and defaults). Runs inside the compile worker: it parses
user data.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch._export.serde.schema import SCHEMA_VERSION

from .archive import ArchiveLimits
from .aten import Activation, activations, add_call
from .errors import CorruptArchive, UnsafeArchive, UnsupportedLayer
from .graph import GRAPH_INPUT, LayerGraph, Unsupported
from .pt2 import CONSTANTS, MODEL, WEIGHTS, ExportArchive, is_int, member, union

#: Far more than any network of at most 9 chip layers exports to.
MAX_NODES = 20_000
#: Nesting of ``as_string_to_argument`` arguments.
_MAX_DEPTH = 8

_ATEN_TARGET = re.compile(r"torch\.ops\.aten\.([A-Za-z_]\w*)\.([A-Za-z_]\w*)")
_SYMBOLIC = ("as_sym_int", "as_sym_float", "as_sym_bool")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


#: Argument kinds that are plain JSON values, with the test each value must pass.
_SCALARS: dict[str, Callable[[Any], bool]] = {
    "as_int": is_int,
    "as_float": _number,
    "as_bool": _is_bool,
    "as_string": _is_str,
    "as_operator": _is_str,
    "as_scalar_type": is_int,
    "as_memory_format": is_int,
    "as_layout": is_int,
    "as_device": lambda value: isinstance(value, dict),
}
_LISTS: dict[str, Callable[[Any], bool]] = {
    "as_ints": is_int,
    "as_floats": _number,
    "as_bools": _is_bool,
    "as_strings": _is_str,
}


def load_export(data: bytes, limits: ArchiveLimits | None = None) -> LayerGraph:
    return _read(ExportArchive(data, limits or ArchiveLimits()))


@dataclass(frozen=True, slots=True)
class Placeholders:
    """What the graph signature says the program's placeholders are."""

    #: Every placeholder the signature names, in order.
    names: list[str]
    #: Names of the inputs the caller passes (constant inputs have none).
    user_inputs: list[str]
    #: Parameters, buffers and lifted tensor constants by placeholder name, as float32.
    tensors: dict[str, np.ndarray]


def read_placeholders(archive: ExportArchive) -> Placeholders:
    module = member(archive.program, "graph_module", dict, MODEL)
    signature = member(module, "signature", dict, "graph_module")
    names: list[str] = []
    user_inputs: list[str] = []
    tensors: dict[str, np.ndarray] = {}
    for index, spec in enumerate(member(signature, "input_specs", list, "signature")):
        where = f"signature input {index}"
        kind, value = union(spec, where)
        if kind == "user_input":
            name = _reference_name(member(value, "arg", dict, where), where)
            if name is not None:
                names.append(name)
                user_inputs.append(name)
        elif kind in ("parameter", "buffer", "tensor_constant", "token"):
            placeholder = member(member(value, "arg", dict, where), "name", str, where)
            names.append(placeholder)
            if kind != "token":
                tensors[placeholder] = _tensor(archive, kind, value, where)
        elif kind == "custom_obj":
            raise UnsafeArchive(
                f"{where}: the program takes the custom object "
                f"'{member(value, 'custom_obj_name', str, where)}', a pickled TorchScript "
                "object that torch.export.load would unpickle; specklab reads tensors only"
            )
        elif kind != "constant_input":
            raise CorruptArchive(f"{where}: unknown input kind '{kind}'")
    return Placeholders(names, user_inputs, tensors)


def _tensor(archive: ExportArchive, kind: str, spec: Any, where: str) -> np.ndarray:
    if kind == "parameter":
        return archive.tensor(WEIGHTS, member(spec, "parameter_name", str, where))
    if kind == "tensor_constant":
        return archive.tensor(CONSTANTS, member(spec, "tensor_constant_name", str, where))
    name = member(spec, "buffer_name", str, where)
    # persistent buffers are saved with the weights, the others with the constants
    return archive.tensor(WEIGHTS if archive.has(WEIGHTS, name) else CONSTANTS, name)


def _reference_name(arg: Any, where: str) -> str | None:
    """The node an argument names (a tensor, symbolic value or object), None for a constant."""
    kind, value = union(arg, where)
    if kind in ("as_tensor", "as_custom_obj"):
        return member(value, "name", str, where)
    if kind in _SYMBOLIC:
        symbolic_kind, name = union(value, where)
        return name if symbolic_kind == "as_name" and isinstance(name, str) else None
    return None


def _read(archive: ExportArchive) -> LayerGraph:
    _check_version(archive.program)
    body = member(member(archive.program, "graph_module", dict, MODEL), "graph", dict, MODEL)
    placeholders = read_placeholders(archive)
    if len(placeholders.user_inputs) != 1:
        raise UnsupportedLayer(
            f"the exported program takes {len(placeholders.user_inputs)} inputs; "
            "a chip network takes one"
        )
    inputs = [
        _reference_name(item, f"graph input {index}")
        for index, item in enumerate(member(body, "inputs", list, "graph"))
    ]
    declared = [name for name in inputs if name is not None]
    if declared != placeholders.names:
        raise CorruptArchive(
            f"the graph's inputs {declared!r:.200} are not those its signature declares "
            f"{placeholders.names!r:.200}"
        )
    _check_shapes(placeholders.tensors, member(body, "tensor_values", dict, "graph"))
    values: dict[str, Any] = dict.fromkeys(declared)
    values.update(placeholders.tensors)
    values[placeholders.user_inputs[0]] = Activation(GRAPH_INPUT)
    nodes = member(body, "nodes", list, "graph")
    if len(nodes) > MAX_NODES:
        raise CorruptArchive(f"the graph has {len(nodes)} nodes, over the limit of {MAX_NODES}")
    graph = LayerGraph(format="torch_export")
    for index, node in enumerate(nodes):
        _node(graph, node, values, f"graph node {index}")
    returned = [
        _value(item, values, "graph outputs")
        for item in member(body, "outputs", list, "graph")
        if union(item, "graph outputs")[0] in ("as_tensor", *_SYMBOLIC)
    ]
    graph.outputs = activations(returned)
    return graph


def _check_shapes(tensors: dict[str, np.ndarray], metas: dict[str, Any]) -> None:
    """A stored tensor has the static shape the graph declares for its placeholder."""
    for name, tensor in tensors.items():
        if name not in metas:
            continue
        where = f"graph tensor_values '{name}'"
        sizes = [union(size, where) for size in member(metas[name], "sizes", list, where)]
        static = tuple(value for kind, value in sizes if kind == "as_int" and is_int(value))
        if len(static) == len(sizes) and static != tensor.shape:
            raise CorruptArchive(
                f"'{name}' is stored with shape {tensor.shape}; the graph declares {static}"
            )


def _check_version(program: dict[str, Any]) -> None:
    version = member(program, "schema_version", dict, MODEL)
    major = member(version, "major", int, "schema_version")
    if major != SCHEMA_VERSION[0]:
        raise CorruptArchive(
            f"the program is in torch.export's format {major}.x; this daemon (torch "
            f"{torch.__version__}) reads {SCHEMA_VERSION[0]}.x"
        )


def _node(graph: LayerGraph, node: Any, values: dict[str, Any], where: str) -> None:
    target = member(node, "target", str, where)
    where = f"{where} ({target})"
    inputs: list[tuple[str, Any]] = []
    for item in member(node, "inputs", list, where):
        name = member(item, "name", str, where)
        inputs.append((name, _value(member(item, "arg", dict, where), values, where)))
    metadata = node.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise CorruptArchive(f"{where}: metadata is not a JSON object")
    value = _call(graph, target, inputs, metadata, where)
    outputs = member(node, "outputs", list, where)
    for position, output in enumerate(outputs):
        for name, first in _output_names(output, position == 0, where):
            if name in values:
                raise CorruptArchive(f"{where} defines '{name}', which is already defined")
            # multi-output ops (batch norm) yield their result first; the rest is statistics
            values[name] = value if first else None


def _call(
    graph: LayerGraph,
    target: str,
    inputs: list[tuple[str, Any]],
    metadata: dict[str, Any],
    where: str,
) -> Activation | None:
    aten = _ATEN_TARGET.fullmatch(target)
    schema = _schema(*aten.groups()) if aten else None
    if aten is not None and schema is not None:
        name, overload = aten.groups()
        qualified = f"aten::{name}" if overload == "default" else f"aten::{name}.{overload}"
        given = dict(inputs)
        args: dict[str, Any] = {}
        for spec in schema.arguments:
            if spec.name in given:
                if not _conforms(spec.type, given[spec.name]):
                    raise CorruptArchive(
                        f"{where}: argument '{spec.name}' {given[spec.name]!r:.80} is not "
                        f"a {spec.type}"
                    )
                args[spec.name] = given[spec.name]
            elif spec.has_default_value():
                args[spec.name] = spec.default_value
            else:
                raise CorruptArchive(f"{where} lacks its argument '{spec.name}'")
        if not activations(list(args.values())):
            return None  # computed from constants only: a size or a shape, unknown here
        type_, path = _module(metadata, qualified, where)
        return Activation(add_call(graph, qualified, args, type_, path))
    found = activations([value for _, value in inputs])
    if not found:
        return None
    type_, path = _module(metadata, target, where)
    unsupported = Unsupported(f"{target} has no chip equivalent")
    return Activation(graph.add(unsupported, found, type_, path))


def _conforms(type_: torch._C.Type, value: Any) -> bool:
    """Whether an argument's value can be of its schema type. A tensor may be None: the
    output of a node that reads only constants, whose value is not computed here."""
    kind = type_.kind()
    if kind == "TensorType":
        return value is None or isinstance(value, np.ndarray | Activation)
    if kind == "IntType":  # also SymInt: None or an activation for a size computed at run time
        return value is None or isinstance(value, Activation) or is_int(value)
    if kind == "FloatType":
        return _number(value)
    if kind == "BoolType":
        return isinstance(value, bool)
    if kind == "OptionalType":
        return value is None or _conforms(type_.getElementType(), value)
    if kind == "ListType":
        element = type_.getElementType()
        return isinstance(value, list) and all(_conforms(element, v) for v in value)
    return True


@lru_cache(maxsize=256)
def _schema(name: str, overload: str) -> torch._C.FunctionSchema | None:
    """The ATen operator's schema from torch's registry (None for an unknown operator)."""
    try:
        return torch._C._get_schema(f"aten::{name}", "" if overload == "default" else overload)
    except RuntimeError:
        return None


def _module(metadata: dict[str, Any], op: str, where: str) -> tuple[str, str]:
    """(type, module path) of a node: the innermost module it was called in."""
    text = metadata.get("nn_module_stack") or ""
    if not isinstance(text, str):
        raise CorruptArchive(f"{where}: nn_module_stack is not a string")
    stack: dict[str, tuple[str, str]] = {}
    for entry in text.split(";") if text else []:
        key, path, cls = _stack_entry(entry, where)
        stack[key] = (path, cls)
    path, cls = next(reversed(stack.values()), ("", ""))
    if path and cls.startswith("torch.nn."):
        return cls.rsplit(".", 1)[-1], path
    return op, path


def _stack_entry(entry: str, where: str) -> tuple[str, str, str]:
    """``key,path,class``, where the path may hold commas inside brackets
    (``L['self'].layers[0,1]``), as torch writes them."""
    parts: list[str] = []
    start = depth = 0
    for position, char in enumerate(entry):
        if char in "[(":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(entry[start:position])
            start = position + 1
    parts.append(entry[start:])
    if len(parts) != 3:
        raise CorruptArchive(f"{where}: nn_module_stack entry {entry[:80]!r} is not key,path,type")
    return parts[0], parts[1], parts[2]


def _value(arg: Any, values: dict[str, Any], where: str, depth: int = 0) -> Any:
    """An argument: a node's value for a reference, plain JSON values otherwise."""
    kind, value = union(arg, where)
    if kind in _SCALARS:
        if not _SCALARS[kind](value):
            raise CorruptArchive(f"{where}: {kind} {value!r:.80} is not valid")
        return value
    if kind in _LISTS:
        if not isinstance(value, list) or not all(_LISTS[kind](v) for v in value):
            raise CorruptArchive(f"{where}: {kind} {value!r:.80} is not valid")
        return list(value)
    if kind in ("as_tensor", "as_custom_obj"):
        return _reference(value, values, where)
    if kind in _SYMBOLIC:
        return _symbolic(value, values, where)
    match kind, value:
        case "as_none" | "as_graph", _:
            return None  # a subgraph belongs to a higher-order op, which has no chip equivalent
        case "as_tensors", list():
            return [_reference(v, values, where) for v in value]
        case "as_nested_tensors", list():
            return [[_reference(v, values, where) for v in _list(inner, where)] for inner in value]
        case "as_optional_tensor", _:
            return _optional(value, values, where)
        case "as_optional_tensors", list():
            return [_optional(v, values, where) for v in value]
        case "as_sym_ints" | "as_sym_floats" | "as_sym_bools", list():
            return [_symbolic(v, values, where) for v in value]
        case "as_int_lists", list():
            return [tuple(_numbers(inner, is_int, where)) for inner in value]
        case "as_float_lists", list():
            return [_numbers(inner, _number, where) for inner in value]
        case "as_complex", dict():
            real, imag = value.get("real"), value.get("imag")
            if _number(real) and _number(imag):
                return complex(real, imag)
        case "as_string_to_argument", dict() if depth < _MAX_DEPTH:
            return {k: _value(v, values, where, depth + 1) for k, v in value.items()}
    raise CorruptArchive(f"{where}: argument {kind} {value!r:.80} cannot be read")


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise CorruptArchive(f"{where}: {value!r:.80} is not a list")
    return value


def _numbers(value: Any, test: Callable[[Any], bool], where: str) -> list[Any]:
    items = _list(value, where)
    if not all(test(v) for v in items):
        raise CorruptArchive(f"{where}: {value!r:.80} holds a value of the wrong type")
    return items


def _reference(tensor: Any, values: dict[str, Any], where: str) -> Any:
    name = member(tensor, "name", str, where)
    if name not in values:
        raise CorruptArchive(f"{where} reads '{name}', which no input or earlier node defines")
    return values[name]


def _symbolic(arg: Any, values: dict[str, Any], where: str) -> Any:
    kind, value = union(arg, where)
    if kind == "as_name":
        return _reference({"name": value}, values, where)
    if kind in ("as_int", "as_float", "as_bool") and isinstance(value, int | float):
        return value
    raise CorruptArchive(f"{where}: symbolic value {arg!r:.80} cannot be read")


def _optional(arg: Any, values: dict[str, Any], where: str) -> Any:
    kind, value = union(arg, where)
    if kind == "as_none":
        return None
    if kind == "as_tensor":
        return _reference(value, values, where)
    raise CorruptArchive(f"{where}: optional tensor {arg!r:.80} cannot be read")


def _output_names(output: Any, first: bool, where: str) -> list[tuple[str, bool]]:
    """The names a node output defines, each with whether it is the node's first result."""
    kind, value = union(output, where)
    if kind == "as_tensor" or kind in _SYMBOLIC:
        name = _reference_name(output, where)
        return [] if name is None else [(name, first)]
    if kind == "as_tensors":
        items = _list(value, where)
        return [(member(v, "name", str, where), first and i == 0) for i, v in enumerate(items)]
    if kind in ("as_sym_ints", "as_sym_floats", "as_sym_bools", "as_optional_tensors"):
        names = []
        for i, item in enumerate(_list(value, where)):
            # optional tensors are arguments already; symbolic values are one kind of one
            element = item if kind == "as_optional_tensors" else {kind[:-1]: item}
            names.extend(_output_names(element, first and i == 0, where))
        return names
    return []
