"""Hostile uploads are refused the same way on every path: in process (``compile_upload``, what
the worker runs), over ``POST /v1/models`` and by ``specklab compile``."""

from __future__ import annotations

import io
import os
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from specklab.client.cli import main
from specklab.server.compiler import ArchiveLimits, CompileError
from specklab.server.compiler.pipeline import compile_upload

from ..lab_client import Lab, bearer, running_lab
from .graphs import options

OPTIONS_JSON = '{"input_shape": [1, 8, 8]}'


class Payload:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def hostile_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One daemon (one compile worker) for a module of hostile uploads."""
    directory = tmp_path_factory.mktemp("hostile")
    with running_lab(directory / "data", f"sqlite:///{directory / 'db.sqlite'}") as lab:
        yield lab


def rewrite(
    archive: bytes, change: Callable[[zipfile.ZipInfo, bytes], list[tuple[str, bytes]]]
) -> bytes:
    """A copy of a zip whose entries ``change`` maps to zero or more (name, content) pairs."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            for name, content in change(info, source.read(info)):
                target.writestr(name, content)
    return out.getvalue()


def assert_refused(
    data: bytes,
    error: type[CompileError],
    match: str,
    *,
    lab: Lab,
    marker: Path,
    cli_dir: Path | None = None,
    capsys: pytest.CaptureFixture[str] | None = None,
) -> None:
    """Refused in process and over REST with ``error`` and a message matching ``match``; by the
    CLI too when given a directory; the marker a payload would write never appears."""
    with pytest.raises(error, match=match) as caught:
        compile_upload(data, options(input_shape=(1, 8, 8)), ArchiveLimits())
    assert caught.value.code == error.code

    _, token = lab.add_user(f"h{uuid.uuid4().hex[:8]}")
    response = lab.client.post(
        "/v1/models",
        files={"file": ("model.pt", data)},
        data={"options": OPTIONS_JSON},
        headers=bearer(token),
    )
    assert response.status_code == error.status, response.text
    assert 400 <= response.status_code < 500
    body = response.json()
    assert body["code"] == error.code
    assert caught.value.message == body["message"]

    if cli_dir is not None and capsys is not None:
        path = cli_dir / f"upload-{uuid.uuid4().hex[:8]}"
        path.write_bytes(data)
        capsys.readouterr()
        assert main(["compile", str(path), "--input-shape", "1,8,8"]) == 2
        err = capsys.readouterr().err
        assert f"cannot read the model ({error.code}): {caught.value.message}" in err
    assert not marker.exists()
