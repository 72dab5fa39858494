from __future__ import annotations

from collections.abc import Iterator

import pytest

from specklab.server.compiler import ArchiveLimits, CompilerPool, WorkerLimits
from specklab.server.compiler.samples import (
    export_bytes,
    guide_network,
    nir_bytes,
    torchscript_bytes,
)

#: The pool's upload limit in tests: small, so the over-size case needs no large buffer.
TEST_UPLOAD_LIMIT = 4 * 1024 * 1024


@pytest.fixture(scope="session")
def guide_files() -> dict[str, bytes]:
    """The guide's network in every format: script, trace, export, NIR."""
    model = guide_network()
    return {
        "script": torchscript_bytes(model),
        "trace": torchscript_bytes(model, trace=True),
        "export": export_bytes(model),
        "nir": nir_bytes(model),
    }


@pytest.fixture(scope="session")
def pool() -> Iterator[CompilerPool]:
    limits = WorkerLimits(archive=ArchiveLimits(max_upload_bytes=TEST_UPLOAD_LIMIT))
    with CompilerPool(1, limits) as pool:
        yield pool
