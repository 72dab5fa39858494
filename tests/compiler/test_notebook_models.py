"""Models as people write them in a notebook or script: a class in ``__main__`` with batch norm,
dropout and functional calls, saved scripted, traced and exported, compiles to exactly the
integers of the same network written as ``nn.Sequential``; the SDK's fallback for a model with
data-dependent control flow gets the compiler's refusal of the branch by name."""

from __future__ import annotations

import io
import os
import pickletools
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from specklab.server.compiler import ArchiveLimits, UnsupportedLayer
from specklab.server.compiler.pipeline import compile_upload

from .graphs import options

#: Run as ``__main__`` in a fresh interpreter, as a notebook runs its cells: classes defined
#: here are ``__main__.Net``, which TorchScript names ``__torch__.Net``.
NOTEBOOK = """
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from specklab.client._payload import model_file
from tests.fixtures_models import export_bytes, torchscript_bytes


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool1 = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.drop = nn.Dropout2d(0.25)
        self.pool2 = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(16 * 5 * 5, 32, bias=False)
        self.fc2 = nn.Linear(32, 10, bias=False)

    def forward(self, x):
        x = self.pool1(F.relu(self.bn1(self.conv1(x))))
        x = self.drop(F.relu(self.bn2(self.conv2(x))))
        x = torch.flatten(self.pool2(x), 1)
        x = F.dropout(F.relu(self.fc1(x)), p=0.5, training=self.training)
        return self.fc2(x)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, bias=False)

    def forward(self, x):
        if x.sum() > 0:
            return F.relu(self.conv(x))
        return self.conv(x)


torch.manual_seed(3)
net = Net().eval()
with torch.no_grad():
    for norm in (net.bn1, net.bn2):  # a trained network's statistics, not the defaults
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.2, 0.2)
sequential = nn.Sequential(
    net.conv1, net.bn1, nn.ReLU(), net.pool1,
    net.conv2, net.bn2, nn.ReLU(), net.drop, net.pool2,
    nn.Flatten(), net.fc1, nn.ReLU(), nn.Dropout(0.5), net.fc2,
).eval()

out = Path(sys.argv[1])
shape = (1, 28, 28)
(out / "traced.pt").write_bytes(torchscript_bytes(net, shape, trace=True))
(out / "scripted.pt").write_bytes(torchscript_bytes(net, shape))
(out / "exported.pt2").write_bytes(export_bytes(net, shape))
(out / "sequential.pt").write_bytes(torchscript_bytes(sequential, shape))
branchy = model_file(Branchy(), input_shape=(1, 8, 8))
(out / branchy.filename).write_bytes(branchy.content)
"""

FORMS = ["traced.pt", "scripted.pt", "exported.pt2"]


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("notebook")
    script = directory / "notebook.py"
    script.write_text(NOTEBOOK)
    repository = Path(__file__).resolve().parents[2]  # the notebook imports tests.fixtures_models
    subprocess.run(
        [sys.executable, str(script), str(directory)],
        check=True,
        capture_output=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(repository)},
    )
    return directory


def _main_classes(archive: bytes, name: str) -> set[str]:
    """The classes of ``__main__`` called ``name`` a TorchScript archive's data.pkl names
    (``__torch__.Net``, or ``__torch__.___torch_mangle_4.Net`` after another save)."""
    main = re.compile(rf"__torch__(\.___torch_mangle_\d+)?\.{name}")
    return {cls for cls in _classes(archive) if main.fullmatch(cls)}


def _classes(archive: bytes) -> set[str]:
    """The classes a TorchScript archive's data.pkl names."""
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        data = opened.read(next(n for n in opened.namelist() if n.endswith("/data.pkl")))
    return {
        str(arg).replace(" ", ".")
        for opcode, arg, _ in pickletools.genops(data)
        if opcode.name == "GLOBAL"
    }


def _integers(data: bytes) -> list[tuple[np.ndarray, np.ndarray, int, int]]:
    config = compile_upload(data, options(), ArchiveLimits()).config
    layers = [config.cnn_layers[placement.core] for placement in config.layers]
    return [
        (core.weight_array(), np.asarray(core.biases), core.threshold_high, core.threshold_low)
        for core in layers
    ]


@pytest.mark.parametrize("form", ["traced.pt", "scripted.pt"])
def test_the_notebook_class_is_a_torchscript_class_of_main(notebook: Path, form: str) -> None:
    assert _main_classes((notebook / form).read_bytes(), "Net")


@pytest.mark.parametrize("form", FORMS)
def test_notebook_models_compile_to_the_integers_of_the_sequential_network(
    notebook: Path, form: str
) -> None:
    expected = _integers((notebook / "sequential.pt").read_bytes())
    got = _integers((notebook / form).read_bytes())
    assert len(got) == len(expected) == 4
    assert any(bias.any() for _, bias, _, _ in expected)  # the batch norms were folded in
    for (weight, bias, high, low), (want_w, want_b, want_high, want_low) in zip(
        got, expected, strict=True
    ):
        np.testing.assert_array_equal(weight, want_w)
        np.testing.assert_array_equal(bias, want_b)
        assert (high, low) == (want_high, want_low)


def test_the_sdk_fallback_for_data_dependent_branches_gets_the_compilers_refusal(
    notebook: Path,
) -> None:
    # torch.export cannot capture the branch and the trace would keep one side of it: the SDK
    # scripts the module, and the compiler names the branch
    data = (notebook / "Branchy.pt").read_bytes()
    assert _main_classes(data, "Branchy")
    refusal = r"branches on a value computed at run time \(at notebook\.py:\d+\)"
    with pytest.raises(UnsupportedLayer, match=refusal):
        compile_upload(data, options(input_shape=(1, 8, 8)), ArchiveLimits())
