from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import pytest
from torch import nn

from specklab.server.compiler import ArchiveLimits, CompilerPool, WorkerLimits

from ..fixtures_models import (
    export_bytes,
    guide_network,
    nir_bytes,
    torchscript_bytes,
)

#: The pool's upload limit in tests: small, so the over-size case needs no large buffer.
TEST_UPLOAD_LIMIT = 4 * 1024 * 1024


_WRITERS: dict[str, Callable[[nn.Module], bytes]] = {
    "script": torchscript_bytes,
    "trace": lambda model: torchscript_bytes(model, trace=True),
    "export": export_bytes,
    "nir": nir_bytes,
}


class _GuideFiles(Mapping[str, bytes]):
    """The guide's network in every format, each written on first use (export takes seconds)."""

    def __init__(self) -> None:
        self._files: dict[str, bytes] = {}

    def __getitem__(self, kind: str) -> bytes:
        if kind not in self._files:
            self._files[kind] = _WRITERS[kind](guide_network())
        return self._files[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(_WRITERS)

    def __len__(self) -> int:
        return len(_WRITERS)


@pytest.fixture(scope="session")
def guide_files() -> Mapping[str, bytes]:
    """The guide's network as script, trace, export and NIR files."""
    return _GuideFiles()


@pytest.fixture(scope="session")
def pool() -> Iterator[CompilerPool]:
    limits = WorkerLimits(archive=ArchiveLimits(max_upload_bytes=TEST_UPLOAD_LIMIT))
    with CompilerPool(1, limits) as pool:
        yield pool
