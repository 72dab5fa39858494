"""Hostile torch.export uploads: every way torch 2.13's ``torch.export.load`` would run code from
an archive, built here from the guide's real archive. Each is refused with a 4xx and a clear
message, in process (``compile_upload``) and through ``POST /v1/models``, and the marker file
its payload would create never appears."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from specklab.server.compiler import (
    ArchiveLimits,
    CompilerPool,
    InputError,
    UnsafeArchive,
    compile_model,
)
from specklab.server.compiler.pipeline import compile_upload

from ..lab_client import Lab, bearer, running_lab
from .graphs import options
from .pt2_edits import (
    CONSTANTS_CONFIG,
    MODEL,
    WEIGHTS_CONFIG,
    Payload,
    config_entry,
    edit,
    graph,
    read_entry,
    set_config,
    tensor_meta,
)

#: The guide's first weight, as torch.export.save describes it.
_FIRST_WEIGHT = tensor_meta([20, 1, 5, 5], [25, 25, 5, 1])


#: Builds a hostile archive from the guide's archive, a pickle payload and its marker path.
Builder = Callable[[bytes, bytes, Path], bytes]


def _pickled_constant(prefix: str) -> Builder:
    """A constants config entry torch loads with pickle whatever ``use_pickle`` says."""

    def build(guide: bytes, payload: bytes, marker: Path) -> bytes:
        entry = config_entry(f"{prefix}0", None)
        return edit(
            guide,
            json_edits={CONSTANTS_CONFIG: set_config("obj", entry)},
            add={f"data/constants/{prefix}0": payload},
        )

    return build


def _pickled_weight(name: str, path: str) -> Builder:
    """A weights config entry stored with ``use_pickle`` (torch.load, weights_only=False)."""

    def build(guide: bytes, payload: bytes, marker: Path) -> bytes:
        entry = config_entry(path, _FIRST_WEIGHT, use_pickle=True)
        return edit(
            guide,
            json_edits={WEIGHTS_CONFIG: set_config(name, entry)},
            add={f"data/weights/{path}": payload},
        )

    return build


def _pickled_tensor_constant(guide: bytes, payload: bytes, marker: Path) -> bytes:
    entry = config_entry("tensor_0", _FIRST_WEIGHT, use_pickle=True)
    return edit(
        guide,
        json_edits={CONSTANTS_CONFIG: set_config("c", entry)},
        add={"data/constants/tensor_0": payload},
    )


def _custom_object_input(guide: bytes, payload: bytes, marker: Path) -> bytes:
    """A lifted custom object: a program input whose value torch unpickles."""
    obj = {"name": "obj", "class_fqn": "x.Y"}

    def add_input(document: Any) -> None:
        spec = {"custom_obj": {"arg": obj, "custom_obj_name": "obj"}}
        document["graph_module"]["signature"]["input_specs"].insert(0, spec)
        graph(document)["inputs"].insert(0, {"as_custom_obj": obj})

    with_object = _pickled_constant("custom_obj_")(guide, payload, marker)
    return edit(with_object, json_edits={MODEL: add_input})


def _legacy(folder: str) -> Builder:
    """The legacy state dict file, which torch prefers to the configs (torch.load)."""
    return lambda guide, payload, marker: edit(guide, add={f"data/{folder}/model.pt": payload})


def _sample_inputs(guide: bytes, payload: bytes, marker: Path) -> bytes:
    return edit(guide, replace={"data/sample_inputs/model.pt": payload})


def _second_program(guide: bytes, payload: bytes, marker: Path) -> bytes:
    """Another program next to ``model``: torch loads every program, with its pickled weights
    (its sample inputs are the guide's own, which pass the pickle scan)."""
    weights = {"config": {"w": config_entry("weight_9", _FIRST_WEIGHT, use_pickle=True)}}
    return edit(
        guide,
        add={
            "models/other.json": read_entry(guide, MODEL),
            "data/sample_inputs/other.pt": read_entry(guide, "data/sample_inputs/model.pt"),
            "data/weights/other_weights_config.json": json.dumps(weights).encode(),
            "data/weights/weight_9": payload,
            "data/constants/other_constants_config.json": b'{"config": {}}',
        },
    )


def _shape_expression(guide: bytes, payload: bytes, marker: Path) -> bytes:
    """A symbolic size torch hands to sympy.sympify, which evaluates it as Python."""
    code = f"__import__('os').system('touch {marker}')"

    def symbolic(document: Any) -> None:
        size = {"as_expr": {"expr_str": code, "hint": None}}
        graph(document)["tensor_values"]["input"]["sizes"][0] = size

    return edit(guide, json_edits={MODEL: symbolic})


def _aot_inductor(guide: bytes, payload: bytes, marker: Path) -> bytes:
    """A compiled library, which torch.export.load would load (native code)."""
    return edit(guide, add={"data/aotinductor/model/model.so": b"\x7fELF" + payload})


#: case -> (builder, words the message must hold).
_HOLES: dict[str, tuple[Builder, str]] = {
    "opaque object": (_pickled_constant("opaque_obj_"), "pickled Python object"),
    "custom object": (_pickled_constant("custom_obj_"), "pickled Python object"),
    "custom object input": (_custom_object_input, "pickled Python object"),
    "pickled weight": (_pickled_weight("0.weight", "weight_9"), "stored as a pickle"),
    "pickled weight the program does not use": (
        _pickled_weight("unused", "weight_9"),
        "stored as a pickle",
    ),
    "pickled weight in a sub-folder": (
        _pickled_weight("0.weight", "sub/weight_0"),
        "stored as a pickle (data/weights/sub/weight_0)",
    ),
    "pickled tensor constant": (_pickled_tensor_constant, "stored as a pickle"),
    "legacy pickled weights": (_legacy("weights"), "data/weights/model.pt"),
    "legacy pickled constants": (_legacy("constants"), "data/constants/model.pt"),
    "pickled sample inputs": (_sample_inputs, "data/sample_inputs/model.pt"),
    "second program": (_second_program, "models/other.json"),
    "shape expression": (_shape_expression, "would evaluate it as Python code"),
    "AOTInductor library": (_aot_inductor, "AOTInductor"),
}


def _hostile(case: str, guide: bytes, marker: Path) -> bytes:
    build, _ = _HOLES[case]
    return build(guide, pickle.dumps(Payload(marker)), marker)


@pytest.mark.parametrize("case", list(_HOLES))
def test_hostile_archives_are_refused_in_process(
    guide_files: Mapping[str, bytes], tmp_path: Path, case: str
) -> None:
    marker = tmp_path / "pwned"
    data = _hostile(case, guide_files["export"], marker)
    with pytest.raises(InputError) as caught:
        compile_upload(data, options(), ArchiveLimits())
    assert isinstance(caught.value, UnsafeArchive), caught.value.message
    assert caught.value.status == 400
    assert _HOLES[case][1] in caught.value.message
    assert not marker.exists()


def test_the_offline_compile_reads_exports_by_the_same_rules(
    guide_files: Mapping[str, bytes], tmp_path: Path
) -> None:
    """``specklab compile`` runs a one-off worker that may not write files: reading an export
    needs none (torch.export.load probed the temp directory and failed there)."""
    marker = tmp_path / "pwned"
    hostile = _hostile("pickled weight", guide_files["export"], marker)
    with CompilerPool(1, warm=False) as cold:  # what compile_model starts for the CLI
        result = compile_model(guide_files["export"], options(), pool=cold)
        assert result.report.ok and result.report.format == "torch_export"
        with pytest.raises(UnsafeArchive, match="stored as a pickle"):
            compile_model(hostile, options(), pool=cold)
    assert not marker.exists()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    directory = tmp_path_factory.mktemp("hostile")
    with running_lab(directory / "data", f"sqlite:///{directory / 'db.sqlite'}") as running:
        yield running


@pytest.fixture(scope="module")
def token(lab: Lab) -> str:
    return lab.add_user("mallory")[1]


@pytest.mark.parametrize("case", list(_HOLES))
def test_hostile_archives_are_refused_by_the_api(
    lab: Lab, token: str, guide_files: Mapping[str, bytes], tmp_path: Path, case: str
) -> None:
    marker = tmp_path / "pwned"
    response = lab.client.post(
        "/v1/models",
        files={"file": ("model.pt2", _hostile(case, guide_files["export"], marker))},
        data={"options": json.dumps({"input_shape": [1, 28, 28]})},
        headers=bearer(token),
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "unsafe_archive"
    assert _HOLES[case][1] in body["message"]
    assert not marker.exists()


def test_the_guide_archive_itself_uploads(
    lab: Lab, token: str, guide_files: Mapping[str, bytes]
) -> None:
    """The hostile cases are the guide's archive plus one hole: the archive alone is fine."""
    response = lab.client.post(
        "/v1/models",
        files={"file": ("model.pt2", guide_files["export"])},
        data={"options": json.dumps({"input_shape": [1, 28, 28]})},
        headers=bearer(token),
    )
    assert response.status_code == 201, response.text
    assert response.json()["format"] == "torch_export"
