"""Importers: every format of the guide's network gives the same layer graph; traced modules
recover their attributes from the graph; format detection reads content, not names."""

from __future__ import annotations

import io
from collections.abc import Mapping

import nir
import numpy as np
import pytest
import torch
from torch import nn

from specklab.server.compiler import CorruptArchive, UnknownFormat, UnsupportedLayer
from specklab.server.compiler.archive import ArchiveLimits, detect_format
from specklab.server.compiler.graph import (
    GRAPH_INPUT,
    Add,
    BatchNorm,
    Conv,
    Flatten,
    IntegrateFire,
    Linear,
    Pool,
    ReLU,
    Reshape,
)
from specklab.server.compiler.nirgraph import from_nir
from specklab.server.compiler.pipeline import import_model

from ..fixtures_models import export_bytes, guide_network, torchscript_bytes

GUIDE_OPS = [Conv, ReLU, Pool, Conv, ReLU, Pool, Conv, ReLU, Pool, Flatten, Linear, ReLU, Linear]
LIMITS = ArchiveLimits()


@pytest.mark.parametrize("kind", ["script", "trace", "export", "nir"])
def test_guide_network_imports_from_every_format(
    guide_files: Mapping[str, bytes], kind: str
) -> None:
    graph = import_model(guide_files[kind], LIMITS)
    ops = [node.op for node in graph.nodes]
    expected = [IntegrateFire if (kind == "nir" and t is ReLU) else t for t in GUIDE_OPS]
    assert [type(op) for op in ops] == expected
    assert [node.inputs for node in graph.nodes] == [(i - 1,) for i in range(len(ops))]
    assert graph.outputs == (len(ops) - 1,)
    model = guide_network()
    weights = [m.weight.detach().numpy() for m in model if isinstance(m, nn.Conv2d | nn.Linear)]
    imported = [op.weight for op in ops if isinstance(op, Conv | Linear)]
    for got, want in zip(imported, weights, strict=True):
        np.testing.assert_array_equal(got, want)
    pools = [op for op in ops if isinstance(op, Pool)]
    assert all(p.kernel == (2, 2) and p.stride == (2, 2) and p.mode == "avg" for p in pools)
    assert [node.name for node in graph.nodes] == [str(i) for i in range(len(ops))]


def test_traced_module_recovers_stride_and_padding_from_the_graph() -> None:
    model = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU(), nn.AvgPool2d(4))
    graph = import_model(torchscript_bytes(model, (2, 32, 32), trace=True), LIMITS)
    conv, _, pool = (node.op for node in graph.nodes)
    assert isinstance(conv, Conv) and isinstance(pool, Pool)
    assert (conv.stride, conv.padding) == ((2, 2), (1, 1))
    assert conv.bias is not None
    assert (pool.kernel, pool.stride) == ((4, 4), (4, 4))
    assert [node.type for node in graph.nodes] == ["Conv2d", "ReLU", "AvgPool2d"]


class _Block(nn.Module):
    """Batch norm, dropout, a functional ReLU, a view, a sum of two branches."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(2, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.2), nn.AvgPool2d(2)
        )
        self.left = nn.Conv2d(8, 8, 3, padding=1)
        self.right = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.relu(self.left(x)) + torch.relu(self.right(x))
        return self.fc(x.view(x.size(0), -1))


def _block() -> _Block:
    torch.manual_seed(1)
    block = _Block().eval()
    with torch.no_grad():
        norm = block.features[1]
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
    return block


@pytest.mark.parametrize("how", ["script", "trace", "export"])
def test_torch_formats_read_batchnorm_branches_and_views(how: str) -> None:
    block = _block()
    data = (
        export_bytes(block, (2, 16, 16))
        if how == "export"
        else torchscript_bytes(block, (2, 16, 16), trace=how == "trace")
    )
    graph = import_model(data, LIMITS)
    by_type = {type(node.op) for node in graph.nodes}
    assert {Conv, BatchNorm, ReLU, Pool, Add, Linear} <= by_type
    assert by_type & {Flatten, Reshape}
    norm = next(node for node in graph.nodes if isinstance(node.op, BatchNorm))
    assert (norm.type, norm.name) == ("BatchNorm2d", "features.1")
    np.testing.assert_array_equal(norm.op.var, block.features[1].running_var.numpy())
    add = next(node for node in graph.nodes if isinstance(node.op, Add))
    assert len(add.inputs) == 2


def test_unsupported_torch_layers_are_named_with_their_position() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2))
    graph = import_model(torchscript_bytes(model, (1, 8, 8)), LIMITS)
    node = graph.nodes[2]
    assert (node.type, node.name, node.index) == ("MaxPool2d", "2", 2)
    assert "max pooling" in node.op.reason


def test_nir_reads_thresholds_sum_pooling_affine_and_sums_several_inputs() -> None:
    rng = np.random.default_rng(0)
    shape = (4, 6, 6)
    graph = nir.NIRGraph(
        nodes={
            "in": nir.Input(input_type={"input": np.array([2, 8, 8])}),
            "a": nir.Conv2d((8, 8), rng.normal(size=(4, 2, 3, 3)), 1, 0, 1, 1, np.zeros(4)),
            "b": nir.Conv2d((8, 8), rng.normal(size=(4, 2, 3, 3)), 1, 0, 1, 1, np.ones(4)),
            "ia": nir.IF(r=np.ones(shape), v_threshold=np.full(shape, 2.5)),
            "ib": nir.IF(r=np.ones(shape), v_threshold=np.full(shape, 2.5)),
            "pool": nir.SumPool2d(np.array([2, 2]), np.array([2, 2]), np.array([0, 0])),
            "flat": nir.Flatten({"input": np.array([4, 3, 3])}, 0, -1),
            "fc": nir.Affine(rng.normal(size=(5, 36)), np.zeros(5)),
            "out": nir.Output(output_type={"output": np.array([5])}),
        },
        edges=[
            ("in", "a"),
            ("in", "b"),
            ("a", "ia"),
            ("b", "ib"),
            ("ia", "pool"),
            ("ib", "pool"),
            ("pool", "flat"),
            ("flat", "fc"),
            ("fc", "out"),
        ],
        type_check=False,
    )
    buffer = io.BytesIO()
    nir.write(buffer, graph)
    imported = import_model(buffer.getvalue(), LIMITS)
    assert imported.input_shape == (2, 8, 8)
    types = {node.name: type(node.op) for node in imported.nodes}
    assert types["pool"] is Pool and types["fc"] is Linear and types["ia"] is IntegrateFire
    total = next(node for node in imported.nodes if isinstance(node.op, Add))
    assert [imported.nodes[i].name for i in total.inputs] == ["ia", "ib"]
    flat = next(node.op for node in imported.nodes if isinstance(node.op, Flatten))
    assert (flat.start_dim, flat.end_dim) == (1, -1)  # NIR's dimension 0 is torch's 1
    threshold = next(node.op for node in imported.nodes if node.name == "ia").threshold
    assert np.all(threshold == 2.5)
    first = next(node for node in imported.nodes if node.name == "a")
    assert first.inputs == (GRAPH_INPUT,)


def test_nir_neurons_the_chip_lacks_are_unsupported() -> None:
    shape = np.array([3])
    graph = nir.NIRGraph.from_list(
        nir.Input(input_type={"input": shape}),
        nir.Linear(np.ones((3, 3))),
        nir.LIF(tau=np.ones(3), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3)),
        nir.Output(output_type={"output": shape}),
        type_check=False,
    )
    lif = next(node for node in from_nir(graph).nodes if node.type == "LIF")
    assert "integrate-and-fire" in lif.op.reason


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("script", "torchscript"),
        ("trace", "torchscript"),
        ("export", "torch_export"),
        ("nir", "nir"),
    ],
)
def test_format_is_detected_by_content(
    guide_files: Mapping[str, bytes], kind: str, expected: str
) -> None:
    assert detect_format(guide_files[kind]) == expected


def test_a_torch_save_checkpoint_is_refused_with_a_hint() -> None:
    buffer = io.BytesIO()
    torch.save(guide_network().state_dict(), buffer)
    with pytest.raises(UnknownFormat, match=r"torch\.save checkpoint"):
        detect_format(buffer.getvalue())


@pytest.mark.parametrize("data", [b"", b"hello world", b"\x89PNG\r\n\x1a\n" + bytes(100)])
def test_other_content_is_an_unknown_format(data: bytes) -> None:
    with pytest.raises(UnknownFormat):
        import_model(data, LIMITS)


@pytest.mark.parametrize("kind", ["script", "export", "nir"])
def test_truncated_files_are_corrupt_archives(guide_files: Mapping[str, bytes], kind: str) -> None:
    data = guide_files[kind]
    with pytest.raises(CorruptArchive):
        import_model(data[: len(data) // 2], LIMITS)


def test_a_model_with_two_inputs_is_refused() -> None:
    class Two(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a + b

    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(Two()), buffer)
    with pytest.raises(UnsupportedLayer, match="2 tensors"):
        import_model(buffer.getvalue(), LIMITS)
