"""torch.export archives (``.pt2`` from ``torch.export.save``) -> layer graph.

An exported program is already a flat ATen graph; parameters arrive as placeholders that the
graph signature maps to the state dict, and every node's ``nn_module_stack`` names the module
it came from. Runs only inside the compile worker: ``torch.export.load`` reads user data.
"""

from __future__ import annotations

import io
import operator
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.fx import Node as FxNode

from .aten import Activation, activations, add_call
from .errors import CorruptArchive, UnsupportedLayer
from .graph import GRAPH_INPUT, LayerGraph, Unsupported


def load_export(data: bytes) -> LayerGraph:
    try:
        program = torch.export.load(io.BytesIO(data))
    except Exception as exc:  # torch raises many types for bad archives
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise CorruptArchive(f"the torch.export archive cannot be loaded: {lines[0]}") from exc
    return _read(program)


def _tensor(value: Any) -> Any:
    return value.detach().to(torch.float32).cpu().numpy()


def _constants(program: ExportedProgram) -> dict[str, Any]:
    signature = program.graph_signature
    found: dict[str, Any] = {}
    for placeholder, key in signature.inputs_to_parameters.items():
        found[placeholder] = _tensor(program.state_dict[key])
    for placeholder, key in signature.inputs_to_buffers.items():
        source = program.state_dict if key in program.state_dict else program.constants
        found[placeholder] = _tensor(source[key])
    for placeholder, key in signature.inputs_to_lifted_tensor_constants.items():
        found[placeholder] = _tensor(program.constants[key])
    return found


def _where(node: FxNode) -> tuple[str, str]:
    """(type, module path) of a node: the innermost module it was called in."""
    stack = node.meta.get("nn_module_stack") or {}
    path, cls = next(reversed(stack.values()), ("", ""))
    qualified = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"
    if path and qualified.startswith("torch.nn."):
        return qualified.rsplit(".", 1)[-1], path
    target = node.target
    op = target.name() if isinstance(target, torch._ops.OpOverload) else str(target)
    return op, path


def _arguments(node: FxNode, values: dict[str, Any]) -> dict[str, Any]:
    def resolve(arg: Any) -> Any:
        if isinstance(arg, FxNode):
            return values.get(arg.name)
        if isinstance(arg, list | tuple):
            return [resolve(a) for a in arg]
        return arg

    schema = node.target._schema
    args: dict[str, Any] = {}
    for position, spec in enumerate(schema.arguments):
        if position < len(node.args):
            args[spec.name] = resolve(node.args[position])
        elif spec.name in node.kwargs:
            args[spec.name] = resolve(node.kwargs[spec.name])
        elif spec.has_default_value():
            args[spec.name] = spec.default_value
    return args


def _read(program: ExportedProgram) -> LayerGraph:
    graph = LayerGraph(format="torch_export")
    user_inputs = [
        name
        for name in program.graph_signature.user_inputs
        if isinstance(name, str)  # non-tensor inputs are recorded as constants, not names
    ]
    if len(user_inputs) != 1:
        raise UnsupportedLayer(
            f"the exported program takes {len(user_inputs)} inputs; a chip network takes one"
        )
    values: dict[str, Any] = _constants(program)
    values[user_inputs[0]] = Activation(GRAPH_INPUT)
    for node in program.graph_module.graph.nodes:
        if node.op == "call_function":
            values[node.name] = _call(graph, node, values)
        elif node.op == "output":
            returned = node.args[0]
            items = returned if isinstance(returned, list | tuple) else [returned]
            returned_values = [values.get(i.name) for i in items if isinstance(i, FxNode)]
            graph.outputs = activations(returned_values)
    return graph


def _call(graph: LayerGraph, node: FxNode, values: dict[str, Any]) -> Any:
    if node.target is operator.getitem:
        # multi-output ops (batch norm) yield their result first; the rest is statistics
        source, position = node.args
        value = values.get(source.name)
        return value if position == 0 and isinstance(value, Activation) else None
    type_, name = _where(node)
    if isinstance(node.target, torch._ops.OpOverload):
        args = _arguments(node, values)
        if not activations(list(args.values())):
            return None  # computed from constants only: a size or a shape, unknown here
        return Activation(add_call(graph, node.target.name(), args, type_, name))
    inputs = activations([values.get(a.name) for a in node.all_input_nodes])
    if not inputs:
        return None
    reason = f"{node.target} has no chip equivalent"
    return Activation(graph.add(Unsupported(reason), inputs, type_, name))
