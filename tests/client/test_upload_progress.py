"""Honest upload progress: nothing drawn for an upload refused before it starts, a byte bar
while the file goes out, then a spinner with the compile's place in the daemon's queue; models
named after their file or class. The daemon is an ``httpx.MockTransport`` here, so what the
client draws can be observed at every step without timing anything."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from specklab.client import AsyncClient, Client, InvalidRequest
from specklab.client._core import UploadProgress
from specklab.client._payload import model_file
from specklab.client.cli import main
from specklab.schemas.models import CompileStatus

from .conftest import ALL_ONES_SHAPE, all_ones_network

URL = "http://lab.test"


class FakeDaemon:
    """Answers ``me``, holds the upload until its status was asked for in both states, and
    then refuses it (the spinner is what is tested, not the model)."""

    def __init__(self, *, token_ok: bool = True) -> None:
        self.token_ok = token_ok
        self.statuses = [
            CompileStatus(id="", state="queued", position=2, queued=3, workers=1),
            CompileStatus(id="", state="compiling", position=None, queued=2, workers=1),
        ]
        self.polled: list[str] = []
        self.uploads: list[httpx.Request] = []
        self.polled_enough = threading.Event()

    def answer(self, request: httpx.Request) -> httpx.Response | None:
        """Every answer but the upload's."""
        if not self.token_ok:
            return error(401, "unauthorized", "unknown token")
        if request.url.path == "/v1/users/me":
            created = datetime.now(UTC).isoformat()
            body = {"id": 1, "name": "ada", "role": "user", "created_at": created}
            return httpx.Response(200, json=body)
        if request.url.path.startswith("/v1/models/compiles/"):
            compile_id = request.url.path.rsplit("/", 1)[1]
            self.polled.append(compile_id)
            status = self.statuses[min(len(self.polled), len(self.statuses)) - 1]
            if len(self.polled) > len(self.statuses):
                self.polled_enough.set()
            return httpx.Response(
                200, content=status.model_copy(update={"id": compile_id}).model_dump_json()
            )
        assert request.url.path == "/v1/models"
        request.read()
        self.uploads.append(request)
        return None

    def refused_upload(self) -> httpx.Response:
        return error(422, "model_does_not_fit_here", "refused after the spinner was seen")

    def sync_handler(self, request: httpx.Request) -> httpx.Response:
        response = self.answer(request)
        if response is not None:
            return response
        assert self.polled_enough.wait(timeout=30)
        return self.refused_upload()

    async def async_handler(self, request: httpx.Request) -> httpx.Response:
        response = self.answer(request)
        if response is not None:
            return response
        for _ in range(3000):
            if self.polled_enough.is_set():
                return self.refused_upload()
            await asyncio.sleep(0.01)
        raise AssertionError("the upload's status was never polled")


def error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": message, "detail": None})


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "all_ones.pt2"
    path.write_bytes(b"PK\x03\x04 not really a model, the fake daemon does not read it")
    return path


def fake_client(daemon: FakeDaemon) -> Client:
    client = Client(URL, "spk_token")
    client._http = httpx.Client(transport=httpx.MockTransport(daemon.sync_handler))
    return client


def check_what_was_drawn(daemon: FakeDaemon, drawn: str, name: str) -> None:
    (upload,) = daemon.uploads
    compile_id = upload.headers["X-Compile-Id"]
    assert daemon.polled and set(daemon.polled) == {compile_id}
    bar = drawn.index(f"upload {name}")
    queued = drawn.index(f"compile {name}: queued (2 ahead, 1 at a time)")
    compiling = drawn.index(f"compile {name}: compiling")
    assert bar < queued < compiling


def test_an_upload_shows_its_bytes_then_its_place_in_the_queue(
    model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = FakeDaemon()
    with fake_client(daemon) as client, pytest.raises(InvalidRequest):
        client.upload(model_path, options={"input_shape": (1, 8, 8)}, progress=True)
    check_what_was_drawn(daemon, capsys.readouterr().err, "all_ones.pt2")


async def test_the_async_client_shows_the_same(
    model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = FakeDaemon()
    async with AsyncClient(URL, "spk_token") as client:
        client._http = httpx.AsyncClient(transport=httpx.MockTransport(daemon.async_handler))
        with pytest.raises(InvalidRequest):
            await client.upload(model_path, options={"input_shape": (1, 8, 8)}, progress=True)
    check_what_was_drawn(daemon, capsys.readouterr().err, "all_ones.pt2")


def test_without_progress_nothing_is_polled_or_drawn(
    model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = FakeDaemon()
    daemon.polled_enough.set()
    with fake_client(daemon) as client, pytest.raises(InvalidRequest):
        client.upload(model_path, options={"input_shape": (1, 8, 8)})
    assert daemon.polled == [] and "X-Compile-Id" not in daemon.uploads[0].headers
    assert capsys.readouterr().err == ""


def test_the_cli_draws_nothing_for_an_upload_refused_before_it_starts(
    model_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = FakeDaemon(token_ok=False)
    transport = httpx.MockTransport(daemon.sync_handler)

    class ToTheFake(httpx.Client):
        """The CLI's client, on the fake daemon (the CLI takes no transport)."""

        def __init__(self, **options: Any) -> None:
            super().__init__(transport=transport)

    monkeypatch.setattr(httpx, "Client", ToTheFake)
    argv = ["upload", str(model_path), "--input-shape", "1,8,8", "--url", URL, "--token", "bad"]
    assert main(argv) == 4  # no token or not allowed
    drawn = capsys.readouterr().err
    (line,) = drawn.strip().splitlines()  # the error, and no bar before it
    assert line.startswith("specklab: ") and "set SPECKLAB_TOKEN or pass --token" in line
    assert "upload" not in drawn
    assert daemon.uploads == []


def test_status_while_the_file_goes_out_keeps_the_byte_bar(
    capsys: pytest.CaptureFixture[str],
) -> None:
    progress = UploadProgress("lenet.pt", 100, enabled=True)
    progress.sent(50)
    progress.status(CompileStatus(id="x", state="waiting", position=None, queued=0, workers=1))
    assert "compile lenet.pt" not in capsys.readouterr().err
    progress.sent(50)
    assert "compile lenet.pt: waiting for the compiler" in capsys.readouterr().err
    progress.status(CompileStatus(id="x", state="queued", position=0, queued=1, workers=2))
    assert "compile lenet.pt: queued (next, 2 at a time)" in capsys.readouterr().err
    progress.close()


def test_a_module_is_named_after_its_class() -> None:
    import torch

    class LeNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.conv(x))

    assert model_file(LeNet(), input_shape=ALL_ONES_SHAPE).default_name == "LeNet"
    assert model_file(all_ones_network(), input_shape=ALL_ONES_SHAPE).default_name == "Sequential"
    assert model_file(b"PK\x03\x04...", input_shape=None).default_name == "model.bin"


def test_the_name_sent_is_the_class_not_the_file_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    daemon = FakeDaemon()
    daemon.polled_enough.set()
    with fake_client(daemon) as client, pytest.raises(InvalidRequest):
        client.compile(all_ones_network(), input_shape=ALL_ONES_SHAPE)
    (upload,) = daemon.uploads
    body = upload.content.decode("latin-1")
    assert 'name="name"\r\n\r\nSequential\r\n' in body
    assert json.loads(body.split('name="options"\r\n\r\n')[1].split("\r\n")[0])["input_shape"]


def test_a_request_refused_at_once_draws_no_recording_bar(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A recording the daemon refuses answers in milliseconds: no bar flashes on stderr."""
    from specklab.client._core import TICKING_GRACE_S, ticking

    with pytest.raises(RuntimeError), ticking(5.0, "record x:0", enabled=True):
        raise RuntimeError("not your device")
    assert capsys.readouterr().err == ""
    with ticking(5.0, "record x:0", enabled=True):
        time.sleep(TICKING_GRACE_S + 0.3)
    assert "record x:0" in capsys.readouterr().err
