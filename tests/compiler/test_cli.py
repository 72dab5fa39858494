"""``specklab compile``: offline, exit 0 when it fits, 1 when it does not, 2 when unreadable."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from specklab.client.cli import main

REPORT_KEYS = {
    "index",
    "kind",
    "core",
    "input_shape",
    "output_shape",
    "kernel_size",
    "stride",
    "padding",
    "pooling",
    "destinations",
    "kernel_memory",
    "neuron_memory",
    "bias_memory",
    "threshold_high",
    "threshold_low",
    "weight_scale",
}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory, guide_files: Mapping[str, bytes]) -> Path:
    path = tmp_path_factory.mktemp("cli") / "model.bin"  # the name says nothing of the format
    # NIR: a one-off worker reading it needs no torch import, which keeps these tests quick
    path.write_bytes(guide_files["nir"])
    return path


def test_a_fitting_model_prints_the_placement_and_writes_weights(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "weights.npz"
    argv = ["compile", str(model_file), "--input-shape", "1,28,28", "--weights", str(weights)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[2:7]]
    assert [(row[0], row[2]) for row in rows] == [
        ("0", "0"),
        ("1", "3"),
        ("2", "5"),
        ("3", "6"),
        ("4", "1"),
    ]
    arrays = np.load(weights)
    assert sorted(arrays) == sorted(f"layer{i}.{k}" for i in range(5) for k in ("weight", "bias"))
    assert arrays["layer2.weight"].shape == (128, 32, 3, 3)
    assert arrays["layer3.weight"].shape == (500, 128, 1, 1)
    assert np.issubdtype(arrays["layer0.weight"].dtype, np.integer)
    assert arrays["layer0.weight"].min() >= -128 and arrays["layer0.weight"].max() <= 127


def test_json_prints_the_report(model_file: Path) -> None:
    out = subprocess.run(
        ["specklab", "compile", str(model_file), "--input-shape", "1,28,28", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] and report["format"] == "nir"
    assert all(set(layer) >= REPORT_KEYS for layer in report["layers"])
    assert [layer["core"] for layer in report["layers"]] == [0, 3, 5, 6, 1]
    assert report["problems"] == []


def test_a_model_that_does_not_fit_exits_1_with_the_explanation(
    model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compile", str(model_file), "--input-shape", "1,28,28"]
    assert main([*argv, "--chip-layers-ordering", "0,1,2,3,4"]) == 1
    captured = capsys.readouterr()
    assert "model layer 2 needs 65536 kernel memory entries; core 2 has 16384" in captured.out
    assert "auto placement would be {0: 0, 1: 3, 2: 5, 3: 6, 4: 1}" in captured.out
    assert "does not fit" in captured.err


def test_unreadable_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "model.pt"
    garbage.write_bytes(b"not a model")
    assert main(["compile", str(garbage), "--input-shape", "1,28,28", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["code"] == "unknown_format"
    missing = tmp_path / "missing.pt"
    assert main(["compile", str(missing), "--input-shape", "1,28,28"]) == 2
    assert "cannot read the model" in capsys.readouterr().err


def test_the_cli_does_not_import_torch_in_its_own_process() -> None:
    code = "import sys, specklab.server.compiler.command\nprint('torch' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
