"""The torch.export reader (pt2.py, torchexport.py): the same tensors as torch.export.load on
real archives, without ever unpickling; every malformed archive is a CorruptArchive."""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from specklab.schemas.compile import CompileOptions
from specklab.server.compiler import (
    ArchiveLimits,
    CorruptArchive,
    UnsafeArchive,
    UnsupportedLayer,
    torchexport,
)
from specklab.server.compiler.graph import Conv, Linear
from specklab.server.compiler.pipeline import compile_upload
from specklab.server.compiler.pt2 import ExportArchive
from specklab.server.compiler.torchexport import load_export, read_placeholders

from ..fixtures_models import export_bytes, guide_network
from .pt2_edits import (
    CONSTANTS_CONFIG,
    MODEL,
    WEIGHTS_CONFIG,
    config_entry,
    edit,
    graph,
    set_config,
    tensor_meta,
)
from .test_importers import _block

LIMITS = ArchiveLimits()


class _Storage(nn.Module):
    """Tensors stored every way torch.export.save stores them: transposed, at an offset in a
    larger storage, expanded, empty, in every dtype, as non-persistent buffers and as lifted
    constants."""

    def __init__(self) -> None:
        super().__init__()
        base = torch.arange(60, dtype=torch.float32) / 7
        self.conv = nn.Conv2d(2, 4, 3)
        self.transposed = nn.Parameter(torch.randn(6, 4).t())
        self.offset = nn.Parameter(base[5:25].view(4, 5))
        self.register_buffer("scale", torch.full((4,), 0.5), persistent=False)
        self.register_buffer("expanded", torch.ones(1).expand(5))
        self.register_buffer("empty", torch.ones(0, 3))
        for dtype in (torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.int64):
            self.register_buffer(
                f"as_{dtype}".replace("torch.", ""), (torch.randn(3) * 9).to(dtype)
            )
        self.register_buffer("as_bool", torch.tensor([True, False]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x) * self.scale.view(1, 4, 1, 1)
        return torch.relu(y) + torch.tensor(0.25)


def _storage() -> nn.Module:
    torch.manual_seed(2)
    return _Storage().eval()


_NETWORKS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "guide": (guide_network, (1, 28, 28)),
    "block": (_block, (2, 16, 16)),
    "storage": (_storage, (2, 8, 8)),
}


@cache
def _archive(network: str) -> bytes:
    """Each network exported once per session, on first use (an export takes seconds)."""
    build, shape = _NETWORKS[network]
    return export_bytes(build(), shape)


def _torch_placeholders(data: bytes) -> dict[str, np.ndarray]:
    """What torch's own loader gives for every placeholder the signature maps to a tensor."""
    program = torch.export.load(io.BytesIO(data))
    signature = program.graph_signature
    found: dict[str, Any] = {}
    for placeholder, key in signature.inputs_to_parameters.items():
        found[placeholder] = program.state_dict[key]
    for placeholder, key in signature.inputs_to_buffers.items():
        found[placeholder] = (
            program.state_dict[key] if key in program.state_dict else program.constants[key]
        )
    for placeholder, key in signature.inputs_to_lifted_tensor_constants.items():
        found[placeholder] = program.constants[key]
    return {name: value.detach().to(torch.float32).numpy() for name, value in found.items()}


@pytest.mark.parametrize("network", list(_NETWORKS))
def test_tensors_equal_what_torch_export_load_gives(network: str) -> None:
    data = _archive(network)
    mine = read_placeholders(ExportArchive(data, LIMITS))
    theirs = _torch_placeholders(data)
    assert sorted(mine.tensors) == sorted(theirs)
    for name, want in theirs.items():
        got = mine.tensors[name]
        assert got.dtype == np.float32 and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert len(mine.user_inputs) == 1


def test_layer_graph_holds_the_modules_parameters() -> None:
    block = _block()
    graph_ = load_export(_archive("block"), LIMITS)
    weights = {node.name: node.op.weight for node in graph_.nodes if isinstance(node.op, Conv)}
    for name in ("features.0", "left", "right"):
        np.testing.assert_array_equal(weights[name], block.get_submodule(name).weight.detach())
    fc = next(node.op for node in graph_.nodes if isinstance(node.op, Linear))
    np.testing.assert_array_equal(fc.bias, block.fc.bias.detach())


def test_nothing_is_unpickled_or_loaded_by_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the reader unpickled or loaded through torch")

    for owner, name in [
        (pickle, "loads"),
        (pickle, "load"),
        (pickle, "Unpickler"),
        (torch, "load"),
        (torch.export, "load"),
        (torch._C, "_pickle_load_obj"),
    ]:
        monkeypatch.setattr(owner, name, refuse)
    graph_ = load_export(_archive("block"), LIMITS)
    assert len(graph_.nodes) > 5


def test_entries_the_network_does_not_need_are_never_read() -> None:
    original = load_export(_archive("guide"), LIMITS)
    data = edit(
        _archive("guide"),
        drop=frozenset({"data/sample_inputs/model.pt"}),
        add={"extra/notes.txt": b"\xff not text", "data/executorch/x": b"junk"},
    )
    graph_ = load_export(data, LIMITS)
    assert [node.describe() for node in graph_.nodes] == [
        node.describe() for node in original.nodes
    ]


def _weight(meta: Any) -> Callable[[Any], None]:
    """An edit of the weights config giving the guide's first weight this tensor meta."""
    return set_config("0.weight", config_entry("weight_0", meta))


def _first_node(change: Callable[[Any], None]) -> Callable[[Any], None]:
    return lambda document: change(graph(document)["nodes"][0])


def _flatten_start(change: Callable[[Any], None]) -> Callable[[Any], None]:
    """An edit of the argument ``start_dim`` of the guide's flatten node."""

    def apply(document: Any) -> None:
        [node] = [n for n in graph(document)["nodes"] if "flatten" in n["target"]]
        arg = next(i["arg"] for i in node["inputs"] if i["name"] == "start_dim")
        arg.clear()
        change(arg)

    return apply


def _rename_first_parameter(document: Any) -> None:
    document["graph_module"]["signature"]["input_specs"][0]["parameter"]["arg"]["name"] = "x"


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


#: name -> (edit of the guide's archive, words the message must hold).
_CORRUPT: dict[str, tuple[dict[str, Any], str]] = {
    "program not JSON": ({"replace": {MODEL: b'{"graph_module": '}}, "not valid JSON"),
    "program nested too deeply": ({"replace": {MODEL: _nested(100_000)}}, "not valid JSON"),
    "program not an object": ({"replace": {MODEL: b"[1, 2]"}}, "not a JSON object"),
    "program missing": ({"drop": frozenset({MODEL})}, "has no models/model.json"),
    "weights config missing": ({"drop": frozenset({WEIGHTS_CONFIG})}, "has no data/weights"),
    "config not JSON": ({"replace": {CONSTANTS_CONFIG: b"\xff\xfe"}}, "not valid JSON"),
    "other archive format": ({"replace": {"archive_format": b"zip"}}, "not 'pt2'"),
    "other archive version": ({"replace": {"archive_version": b"7"}}, "not 0"),
    "weight entry missing": ({"drop": frozenset({"data/weights/weight_0"})}, "lacks"),
    "weight bytes short": (
        {"replace": {"data/weights/weight_0": bytes(1996)}},
        "reach element 499; the entry holds 499",
    ),
    "weight bytes not whole elements": (
        {"replace": {"data/weights/weight_0": bytes(2001)}},
        "not a whole number of elements",
    ),
    "strides past the storage": (
        {"json_edits": {WEIGHTS_CONFIG: _weight(tensor_meta([20, 1, 5, 5], [26, 25, 5, 1]))}},
        "reach element",
    ),
    "offset past the storage": (
        {"json_edits": {WEIGHTS_CONFIG: _weight(tensor_meta([20, 1, 5, 5], [25, 25, 5, 1], 1))}},
        "reach element",
    ),
    "negative stride": (
        {"json_edits": {WEIGHTS_CONFIG: _weight(tensor_meta([20, 1, 5, 5], [25, 25, -5, 1]))}},
        "not a non-negative integer",
    ),
    "absurd size": (
        {"json_edits": {WEIGHTS_CONFIG: _weight(tensor_meta([10**9, 10**9, 5, 5], [0, 0, 5, 1]))}},
        "unpacked size limit",
    ),
    "size too long to parse": (
        {"replace": {WEIGHTS_CONFIG: b'{"config": {"w": [' + b"9" * 5000 + b"]}}"}},
        "not valid JSON",
    ),
    "symbolic weight size": (
        {
            "json_edits": {
                WEIGHTS_CONFIG: _weight(
                    {**tensor_meta([20], [1]), "sizes": [{"as_expr": {"expr_str": "s0"}}]}
                )
            }
        },
        "not a non-negative integer",
    ),
    "weight stored in another shape": (
        {"json_edits": {WEIGHTS_CONFIG: _weight(tensor_meta([10, 2, 5, 5], [50, 25, 5, 1]))}},
        "'p_0_weight' is stored with shape (10, 2, 5, 5); the graph declares (20, 1, 5, 5)",
    ),
    "too many dimensions": (
        {"json_edits": {WEIGHTS_CONFIG: _weight(tensor_meta([1] * 65, [1] * 65))}},
        "at most 64",
    ),
    "complex dtype": (
        {
            "json_edits": {
                WEIGHTS_CONFIG: _weight(tensor_meta([20, 1, 5, 5], [25, 25, 5, 1], dtype=10))
            }
        },
        "dtype 10 is not one of",
    ),
    "parameter missing from the config": (
        {"json_edits": {WEIGHTS_CONFIG: lambda document: document["config"].pop("0.weight")}},
        "the program reads '0.weight'",
    ),
    "node reads an undefined name": (
        {
            "json_edits": {
                MODEL: _first_node(
                    lambda node: node["inputs"][0]["arg"].update({"as_tensor": {"name": "nope"}})
                )
            }
        },
        "reads 'nope'",
    ),
    "node defines a name twice": (
        {
            "json_edits": {
                MODEL: _first_node(
                    lambda node: node["outputs"][0].update({"as_tensor": {"name": "input"}})
                )
            }
        },
        "'input', which is already defined",
    ),
    "node inputs not a list": (
        {"json_edits": {MODEL: _first_node(lambda node: node.update({"inputs": 5}))}},
        "inputs is not a list",
    ),
    "node target not a string": (
        {"json_edits": {MODEL: _first_node(lambda node: node.update({"target": 3}))}},
        "target is not a string",
    ),
    "argument of the wrong type": (
        {
            "json_edits": {
                MODEL: lambda document: graph(document)["nodes"][2]["inputs"][1].update(
                    {"arg": {"as_ints": ["two", 2]}}
                )
            }
        },
        "as_ints",
    ),
    "argument of an unknown kind": (
        {
            "json_edits": {
                MODEL: _first_node(lambda node: node["inputs"][1].update({"arg": {"as_x": 1}}))
            }
        },
        "as_x",
    ),
    "required argument missing": (
        {"json_edits": {MODEL: _first_node(lambda node: node["inputs"].pop(1))}},
        "lacks its argument 'weight'",
    ),
    "argument of a type its schema refuses": (
        {"json_edits": {MODEL: _flatten_start(lambda arg: arg.update({"as_float": 1.5}))}},
        "argument 'start_dim' 1.5 is not a int",
    ),
    "signature names another placeholder": (
        {"json_edits": {MODEL: _rename_first_parameter}},
        "not those its signature declares",
    ),
    "module stack malformed": (
        {
            "json_edits": {
                MODEL: _first_node(lambda node: node["metadata"].update({"nn_module_stack": "a,b"}))
            }
        },
        "not key,path,type",
    ),
    "newer schema": (
        {"json_edits": {MODEL: lambda document: document["schema_version"].update({"major": 99})}},
        "format 99.x",
    ),
    "unknown input kind": (
        {
            "json_edits": {
                MODEL: lambda document: document["graph_module"]["signature"]["input_specs"].append(
                    {"magic": {}}
                )
            }
        },
        "unknown input kind 'magic'",
    ),
}


@pytest.mark.parametrize("case", list(_CORRUPT))
def test_malformed_archives_are_corrupt_with_a_clear_message(case: str) -> None:
    changes, words = _CORRUPT[case]
    data = edit(_archive("guide"), **changes)
    with pytest.raises(CorruptArchive) as caught:
        load_export(data, LIMITS)
    assert words in caught.value.message


def test_the_node_count_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torchexport, "MAX_NODES", 12)
    with pytest.raises(CorruptArchive, match="13 nodes, over the limit of 12"):
        load_export(_archive("guide"), LIMITS)


def test_tensors_are_bounded_by_the_unpacked_size_limit() -> None:
    # the guide's weights are 489,456 bytes as float32
    with pytest.raises(CorruptArchive, match="unpacked size limit"):
        load_export(_archive("guide"), ArchiveLimits(max_unpacked_bytes=400_000))
    assert load_export(_archive("guide"), ArchiveLimits(max_unpacked_bytes=490_000)).nodes


@pytest.mark.parametrize(
    "path", ["sub/weight_0", "../sample_inputs/model.pt", "/etc/passwd", "..\\weight_0", ".."]
)
def test_path_names_outside_their_folder_are_unsafe(path: str) -> None:
    entry = config_entry(path, tensor_meta([20, 1, 5, 5], [25, 25, 5, 1]))
    data = edit(_archive("guide"), json_edits={WEIGHTS_CONFIG: set_config("0.weight", entry)})
    with pytest.raises(UnsafeArchive, match="is not a file name in data/weights/"):
        load_export(data, LIMITS)


def test_a_custom_object_input_is_unsafe() -> None:
    spec = {"custom_obj": {"arg": {"name": "obj", "class_fqn": "x.Y"}, "custom_obj_name": "o"}}

    def add_input(document: Any) -> None:
        document["graph_module"]["signature"]["input_specs"].insert(0, spec)

    data = edit(_archive("guide"), json_edits={MODEL: add_input})
    with pytest.raises(UnsafeArchive, match="custom object 'o'"):
        load_export(data, LIMITS)


@pytest.mark.parametrize(
    "expression",
    ["s0", "2*s77 + 1", "Max(1, FloorDiv(s0, 2))", "Eq(Mod(s1, 4), 0)", "1.5e3*s0 - u2"],
)
def test_plain_shape_expressions_are_accepted(expression: str) -> None:
    def symbolic_batch(document: Any) -> None:
        size = {"as_expr": {"expr_str": expression, "hint": {"as_int": 1}}}
        graph(document)["tensor_values"]["input"]["sizes"][0] = size

    data = edit(_archive("guide"), json_edits={MODEL: symbolic_batch})
    assert len(load_export(data, LIMITS).nodes) == 13


def test_a_dimension_of_size_one_may_have_any_stride() -> None:
    """torch never steps along it (the guide's first weight has one input channel)."""
    meta = tensor_meta([20, 1, 5, 5], [25, 10**30, 5, 1])
    data = edit(_archive("guide"), json_edits={WEIGHTS_CONFIG: _weight(meta)})
    first = load_export(data, LIMITS).nodes[0].op
    assert isinstance(first, Conv)
    np.testing.assert_array_equal(first.weight, guide_network()[0].weight.detach())


class _ComputedWeight(nn.Module):
    """A weight transposed in forward: the graph computes it, nothing stores it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.w = nn.Parameter(torch.randn(36, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(torch.relu(self.conv(x)).flatten(1), self.w.t())


def test_a_weight_computed_in_forward_is_an_unsupported_layer() -> None:
    data = export_bytes(_ComputedWeight(), (1, 5, 5))
    with pytest.raises(UnsupportedLayer, match="weight is computed in forward"):
        compile_upload(data, CompileOptions(input_shape=(1, 5, 5)), LIMITS)
