"""Turn what users hand to ``upload``/``compile`` into the bytes of a model file.

torch and nir are never imported here unless the caller already did: a ``torch.nn.Module``
or a NIR graph can only exist if its library is loaded, so ``sys.modules`` tells.
"""

from __future__ import annotations

import io
import os
import sys
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class ModelFile:
    #: The file's name: its suffix tells the daemon the format.
    filename: str
    content: bytes
    #: What to call the model when the user did not say: the module's class for a module.
    name: str = ""

    @property
    def default_name(self) -> str:
        return self.name or self.filename


#: What ``upload`` accepts: a path, the bytes of a file, a torch.nn.Module or a NIR graph.
ModelSource = str | os.PathLike[str] | bytes | bytearray | memoryview | Any


def model_file(model: ModelSource, *, input_shape: tuple[int, ...] | None = None) -> ModelFile:
    """The model's file; its name's suffix tells the daemon the format."""
    if isinstance(model, bytes | bytearray | memoryview):
        content = bytes(model)
        return ModelFile(f"model{_suffix(content)}", content)
    if isinstance(model, str | os.PathLike):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"no model file at {path}")
        return ModelFile(path.name, path.read_bytes())
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        if input_shape is None:
            raise ValueError("a torch module needs input_shape (C, H, W) to be exported")
        content, suffix = _export_module(model, input_shape)
        name = type(model).__name__
        return ModelFile(f"{name}{suffix}", content, name)
    nir = sys.modules.get("nir")
    if nir is not None and isinstance(model, nir.NIRNode):
        buffer = io.BytesIO()
        nir.write(buffer, model)
        return ModelFile("model.nir", buffer.getvalue())
    raise TypeError(
        "a model is a path, the bytes of a TorchScript / .pt2 / NIR file, a torch.nn.Module or "
        f"a nir graph; got {type(model).__name__}"
    )


def _suffix(content: bytes) -> str:
    """A file name suffix for the daemon's format detection, from the content's signature."""
    if content.startswith(b"\x89HDF\r\n\x1a\n"):
        return ".nir"
    if zipfile.is_zipfile(io.BytesIO(content)):
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            names = archive.namelist()
        # torch.export archives name their format; TorchScript archives hold code/ and data.pkl.
        if any(n == "archive_format" or n.endswith("/archive_format") for n in names):
            return ".pt2"
        return ".pt"
    return ".bin"


def _export_module(module: Any, input_shape: tuple[int, ...]) -> tuple[bytes, str]:
    """A module as a ``torch.export`` archive, or TorchScript when export cannot capture it
    (a trace, unless torch warns that it may be wrong, else a script)."""
    import torch

    example = (torch.zeros(1, *input_shape),)

    def exported(buffer: io.BytesIO) -> None:
        torch.export.save(torch.export.export(module, example), buffer)

    def traced(buffer: io.BytesIO) -> None:
        with _quiet_deprecation(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", torch.jit.TracerWarning)
            traced_module = torch.jit.trace(module, example)  # type: ignore[no-untyped-call]
        doubts = [str(w.message) for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
        if doubts:
            # a trace records one path through data-dependent control flow; script keeps the
            # branch, which the compiler then refuses by name
            raise ValueError(f"the trace may be incorrect: {doubts[0]}")
        torch.jit.save(traced_module, buffer)

    def scripted(buffer: io.BytesIO) -> None:
        with _quiet_deprecation():
            torch.jit.save(torch.jit.script(module), buffer)

    attempts = (
        ("torch.export", exported, ".pt2"),
        ("torch.jit.trace", traced, ".pt"),
        ("torch.jit.script", scripted, ".pt"),
    )
    failures = []
    training = module.training
    module.eval()
    try:
        for method, save, suffix in attempts:
            buffer = io.BytesIO()
            try:
                save(buffer)
            except Exception as exc:  # each exporter fails its own way on models it cannot capture
                failures.append(f"{method}: {exc}")
                continue
            return buffer.getvalue(), suffix
    finally:
        module.train(training)
    raise ValueError("cannot export the module; " + "; ".join(failures))


@contextmanager
def _quiet_deprecation() -> Iterator[None]:
    """TorchScript is deprecated, and a fallback here on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield
