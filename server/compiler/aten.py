"""ATen operators -> layer graph operations, shared by the TorchScript and torch.export importers.

Both importers hand over an operator's base name (``conv2d`` for ``aten::conv2d`` and
``aten.conv2d.default``) with its arguments by schema name, defaults filled in: parameters as
float32 numpy arrays, the tensors flowing through the network as :class:`Activation`, the
rest as Python values (``None`` where a size was computed at run time).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .graph import (
    Add,
    BatchNorm,
    Concat,
    Conv,
    Flatten,
    Identity,
    LayerGraph,
    Linear,
    Op,
    Pair,
    Pool,
    ReLU,
    Reshape,
    Unsupported,
)


@dataclass(frozen=True, slots=True)
class Activation:
    """A tensor computed by the network: the output of graph node ``node``."""

    node: int


Args = dict[str, Any]


def _pair(value: Any, name: str) -> Pair:
    if isinstance(value, int):
        return (value, value)
    items = list(value)
    if len(items) == 1:
        return (int(items[0]), int(items[0]))
    if len(items) != 2 or not all(isinstance(v, int) for v in items):
        raise ValueError(f"{name} {value!r} is not one or two integers")
    return (int(items[0]), int(items[1]))


def _param(value: Any) -> np.ndarray | None:
    if isinstance(value, Activation):
        raise ValueError("a weight computed from the input cannot be stored on the chip")
    return None if value is None else np.asarray(value, dtype=np.float32)


def _stored(value: Any, name: str) -> np.ndarray:
    """A required parameter; None when the graph computes it from parameters (``w.t()``)."""
    param = _param(value)
    if param is None:
        raise ValueError(f"the {name} is computed in forward; store it as a parameter")
    return param


def _conv(args: Args) -> Op:
    weight = _param(args["weight"])
    if args.get("transposed"):
        return Unsupported("transposed convolution has no chip equivalent")
    if weight is None or weight.ndim != 4:
        dims = "?" if weight is None else weight.ndim - 2
        return Unsupported(f"{dims}-D convolution: the chip only does 2-D convolution")
    padding = args.get("padding", 0)
    return Conv(
        weight=weight,
        bias=_param(args.get("bias")),
        stride=_pair(args.get("stride", 1), "stride"),
        padding=padding if isinstance(padding, str) else _pair(padding, "padding"),
        dilation=_pair(args.get("dilation", 1), "dilation"),
        groups=int(args.get("groups", 1)),
    )


def _linear(args: Args) -> Op:
    return Linear(weight=_stored(args["weight"], "weight"), bias=_param(args.get("bias")))


def _avg_pool(args: Args) -> Op:
    kernel = _pair(args["kernel_size"], "kernel_size")
    stride = args.get("stride") or kernel  # torch: an empty stride means stride = kernel
    return Pool(
        mode="avg",
        kernel=kernel,
        stride=_pair(stride, "stride"),
        padding=_pair(args.get("padding", 0), "padding"),
        ceil_mode=bool(args.get("ceil_mode", False)),
        divisor=args.get("divisor_override"),
    )


def _batch_norm(args: Args) -> Op:
    return BatchNorm(
        weight=_param(args.get("weight")),
        bias=_param(args.get("bias")),
        mean=_stored(args["running_mean"], "running mean"),
        var=_stored(args["running_var"], "running variance"),
        eps=float(args["eps"]),
    )


def _reshape(args: Args) -> Op:
    shape = args.get("size", args.get("shape"))
    return Reshape(tuple(v if isinstance(v, int) else None for v in shape))


def _add(args: Args) -> Op:
    both = isinstance(args["self"], Activation) and isinstance(args["other"], Activation)
    if not both:
        return Unsupported("adding a constant to spikes has no chip equivalent")
    if args.get("alpha", 1) != 1:
        return Unsupported(f"add with alpha={args['alpha']}: only a plain sum can merge layers")
    return Add()


def _unsupported(reason: str) -> Callable[[Args], Op]:
    return lambda args: Unsupported(reason)


_MAX_POOL = "max pooling cannot be done on spikes; use AvgPool2d (it becomes sum pooling)"

_HANDLERS: dict[str, Callable[[Args], Op]] = {
    "_convolution": _conv,
    "conv2d": _conv,
    "convolution": _conv,
    "linear": _linear,
    "relu": lambda args: ReLU(),
    "relu_": lambda args: ReLU(),
    "avg_pool2d": _avg_pool,
    "flatten": lambda args: Flatten(int(args.get("start_dim", 0)), int(args.get("end_dim", -1))),
    "view": _reshape,
    "reshape": _reshape,
    "_unsafe_view": _reshape,
    "batch_norm": _batch_norm,
    "_native_batch_norm_legit_no_training": _batch_norm,
    "add": _add,
    "add_": _add,
    "cat": lambda args: Concat(int(args.get("dim", 0))),
    "concat": lambda args: Concat(int(args.get("dim", 0))),
    "max_pool2d": _unsupported(_MAX_POOL),
    "max_pool2d_with_indices": _unsupported(_MAX_POOL),
    "adaptive_avg_pool2d": _unsupported(
        "adaptive average pooling: use AvgPool2d with a fixed kernel (stride = kernel)"
    ),
}
for _name in (
    "dropout",
    "dropout_",
    "feature_dropout",
    "alpha_dropout",
    "clone",
    "contiguous",
    "detach",
    "alias",
):
    _HANDLERS[_name] = lambda args: Identity()


def base_name(qualified: str) -> str:
    """``aten::flatten.using_ints`` / ``aten.flatten.using_ints`` -> ``flatten``."""
    name = qualified.replace("::", ".").split(".")
    return name[1] if len(name) > 1 else name[0]


def translate(qualified: str, args: Args) -> Op:
    """The operation for one ATen call (:class:`Unsupported` when the chip has none)."""
    handler = _HANDLERS.get(base_name(qualified))
    if handler is None:
        return Unsupported(f"operator {qualified} has no chip equivalent")
    try:
        return handler(args)
    except (KeyError, TypeError, ValueError) as exc:
        return Unsupported(f"cannot read the arguments of {qualified}: {exc}")


def add_call(graph: LayerGraph, qualified: str, args: Args, type: str, name: str) -> int:
    """Append the node for one ATen call reading at least one activation; its index."""
    return graph.add(translate(qualified, args), activations(list(args.values())), type, name)


def activations(values: Sequence[Any]) -> tuple[int, ...]:
    """The graph nodes among (possibly nested) argument values, in order."""
    found: list[int] = []
    for value in values:
        if isinstance(value, Activation):
            found.append(value.node)
        elif isinstance(value, list | tuple):
            found.extend(activations(value))
    return tuple(found)
