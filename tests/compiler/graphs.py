"""Layer graphs built by hand, so conversion rules can be tested without torch or files."""

from __future__ import annotations

import numpy as np

from specklab.schemas.compile import CompileOptions
from specklab.server.compiler.graph import GRAPH_INPUT, Conv, LayerGraph, Linear, Op, Pool


def conv(
    c_in: int,
    c_out: int,
    kernel: int | tuple[int, int] = 3,
    *,
    stride: int = 1,
    padding: int = 0,
    bias: bool = False,
    groups: int = 1,
    seed: int = 0,
) -> Conv:
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 0.2, (c_out, c_in // groups, kh, kw)).astype(np.float32)
    return Conv(
        weight=weight,
        bias=rng.normal(0, 0.1, c_out).astype(np.float32) if bias else None,
        stride=(stride, stride),
        padding=(padding, padding),
        groups=groups,
    )


def linear(n_in: int, n_out: int, *, bias: bool = False, seed: int = 0) -> Linear:
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 0.2, (n_out, n_in)).astype(np.float32)
    return Linear(weight, rng.normal(0, 0.1, n_out).astype(np.float32) if bias else None)


def avg(k: int) -> Pool:
    return Pool("avg", (k, k), (k, k))


def sumpool(k: int) -> Pool:
    return Pool("sum", (k, k), (k, k))


def sequential(*ops: Op) -> LayerGraph:
    """Each op reads the previous one; named by position like an ``nn.Sequential``."""
    graph = LayerGraph(format="graph")
    previous = GRAPH_INPUT
    for position, op in enumerate(ops):
        previous = graph.add(op, (previous,), type(op).__name__, str(position))
    graph.outputs = (previous,)
    return graph


def options(input_shape: tuple[int, int, int] = (1, 28, 28), **kwargs: object) -> CompileOptions:
    return CompileOptions(input_shape=input_shape, **kwargs)
