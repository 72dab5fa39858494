"""What upload() accepts, turned into model files: modules, NIR graphs, paths and bytes."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from specklab.client._payload import model_file

torch = pytest.importorskip("torch")
nn = torch.nn


class DataDependent(nn.Module):
    """A branch on a value: torch.export refuses it, tracing records one path."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return torch.relu(self.conv(x))
        return self.conv(x)


def test_a_module_is_exported_to_a_pt2_archive_and_keeps_its_mode() -> None:
    module = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.ReLU()).train()
    file = model_file(module, input_shape=(1, 8, 8))
    assert file.filename == "Sequential.pt2"
    names = zipfile.ZipFile(io.BytesIO(file.content)).namelist()
    assert any(n.endswith("archive_format") for n in names)
    program = torch.export.load(io.BytesIO(file.content))
    x = torch.rand(1, 1, 8, 8)
    assert torch.allclose(program.module()(x), module(x))
    assert module.training


def test_modules_export_cannot_capture_fall_back_to_torchscript() -> None:
    file = model_file(DataDependent(), input_shape=(1, 5, 5))
    assert file.filename == "DataDependent.pt"
    assert torch.jit.load(io.BytesIO(file.content))(torch.ones(1, 1, 5, 5)).shape == (1, 2, 3, 3)


def test_a_module_needs_an_input_shape() -> None:
    with pytest.raises(ValueError, match="input_shape"):
        model_file(nn.ReLU())


def test_a_nir_graph_is_written_to_hdf5_bytes() -> None:
    nir = pytest.importorskip("nir")
    graph = nir.NIRGraph.from_list(
        nir.Conv2d(
            input_shape=(4, 4),
            weight=np.ones((2, 1, 3, 3)),
            stride=1,
            padding=0,
            dilation=1,
            groups=1,
            bias=np.zeros(2),
        )
    )
    file = model_file(graph)
    assert file.filename == "model.nir"
    assert file.content.startswith(b"\x89HDF\r\n\x1a\n")


def test_paths_and_bytes_keep_their_content_and_get_a_telling_name(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(nn.ReLU()), buffer)
    scripted = buffer.getvalue()
    path = tmp_path / "relu.pt"
    path.write_bytes(scripted)
    assert model_file(path).filename == "relu.pt"
    assert model_file(str(path)).content == scripted
    assert model_file(scripted).filename == "model.pt"
    assert model_file(bytearray(b"\x89HDF\r\n\x1a\n...")).filename == ("model.nir")
    assert model_file(b"garbage").filename == "model.bin"
    with pytest.raises(FileNotFoundError, match="no model file"):
        model_file(tmp_path / "missing.pt")
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        model_file(42)


def test_the_client_never_imports_torch_or_nir_itself() -> None:
    code = (
        "import sys\n"
        "from specklab.client._payload import model_file\n"
        "model_file(b'\\x89HDF\\r\\n\\x1a\\n')\n"
        "print(sorted({'torch', 'nir', 'h5py'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
