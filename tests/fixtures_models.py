"""The vendor guide's example network, written in every format the compiler reads.

For tests, the benchmarks (which put the checkout on ``sys.path``) and the docs' test run; it
imports torch, so it is no part of the installed package. ``nir_bytes`` is a small exporter for
sequential torch models of the layers the guide uses, writing each ReLU as the integrate-and-fire
layer it becomes (threshold ``spike_threshold``), as the vendor's NIR exporter does.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from torch import nn

from examples import quickstart

GUIDE_INPUT_SHAPE = (1, 28, 28)


def guide_network(seed: int = 0) -> nn.Sequential:
    """The guide's LeNet-like network (all layers without bias, as examples/quickstart.py
    builds it), randomly initialised."""
    torch.manual_seed(seed)
    return quickstart.guide_network().eval()


def torchscript_bytes(
    model: nn.Module, input_shape: tuple[int, ...] = GUIDE_INPUT_SHAPE, *, trace: bool = False
) -> bytes:
    """``torch.jit.script`` (or ``torch.jit.trace``) + ``torch.jit.save``."""
    model = model.eval()
    scripted = (
        torch.jit.trace(model, torch.zeros(1, *input_shape)) if trace else torch.jit.script(model)
    )
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    return buffer.getvalue()


def export_bytes(model: nn.Module, input_shape: tuple[int, ...] = GUIDE_INPUT_SHAPE) -> bytes:
    """``torch.export.export`` + ``torch.export.save``."""
    program = torch.export.export(model.eval(), (torch.zeros(1, *input_shape),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def _pair(value: int | tuple[int, ...]) -> np.ndarray:
    return np.array([value, value] if isinstance(value, int) else list(value))


def _node(
    module: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...], thr: float
) -> Any:
    import nir

    if isinstance(module, nn.Conv2d):
        weight = module.weight.detach().numpy()
        bias = module.bias
        return nir.Conv2d(
            input_shape=tuple(in_shape[1:]),
            weight=weight,
            stride=tuple(module.stride),
            padding=tuple(module.padding),
            dilation=tuple(module.dilation),
            groups=module.groups,
            bias=np.zeros(weight.shape[0]) if bias is None else bias.detach().numpy(),
        )
    if isinstance(module, nn.ReLU):
        return nir.IF(r=np.ones(out_shape), v_threshold=np.full(out_shape, thr))
    if isinstance(module, nn.AvgPool2d):
        return nir.AvgPool2d(
            kernel_size=_pair(module.kernel_size),
            stride=_pair(module.stride),
            padding=_pair(module.padding),
        )
    if isinstance(module, nn.Flatten):
        return nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=0, end_dim=-1)
    if isinstance(module, nn.Linear):
        weight = module.weight.detach().numpy()
        if module.bias is None:
            return nir.Linear(weight=weight)
        return nir.Affine(weight=weight, bias=module.bias.detach().numpy())
    raise TypeError(f"no NIR node for {type(module).__name__}")


def nir_bytes(
    model: nn.Sequential,
    input_shape: tuple[int, ...] = GUIDE_INPUT_SHAPE,
    spike_threshold: float = 1.0,
) -> bytes:
    """A NIR HDF5 file of a sequential model (Conv2d, ReLU, AvgPool2d, Flatten, Linear)."""
    import nir

    nodes: dict[str, object] = {"input": nir.Input(input_type={"input": np.array(input_shape)})}
    edges: list[tuple[str, str]] = []
    previous = "input"
    value = torch.zeros(1, *input_shape)
    with torch.no_grad():
        for name, module in model.named_children():
            out = module(value)
            nodes[name] = _node(
                module, tuple(value.shape[1:]), tuple(out.shape[1:]), spike_threshold
            )
            edges.append((previous, name))
            previous, value = name, out
    nodes["output"] = nir.Output(output_type={"output": np.array(value.shape[1:])})
    edges.append((previous, "output"))
    buffer = io.BytesIO()
    nir.write(buffer, nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    return buffer.getvalue()
