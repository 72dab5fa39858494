"""Uploads are bounded before they cost anything: authentication and the size limit come before
the body is stored, rejected uploads leave nothing on disk, a per-user quota, orphaned files
collected, the compile queue visible while an upload waits, and a clean 503 at shutdown."""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from specklab.schemas.compile import CompileOptions
from specklab.server.compiler.pipeline import CompileResult
from specklab.server.storage.blobs import BlobStore

from .fixtures_models import guide_network, torchscript_bytes
from .lab_client import Lab, bearer, running_lab
from .test_models_api import BAD_UPLOADS, GUIDE_OPTIONS, upload

MIB = 1 << 20
BOUNDARY = "specklab-test-boundary"


@pytest.fixture(scope="module")
def guide_torchscript() -> bytes:
    return torchscript_bytes(guide_network())


def disk_bytes(*roots: Path) -> int:
    """Bytes of every file under ``roots`` (the database lives elsewhere)."""
    return sum(p.stat().st_size for root in roots for p in root.rglob("*") if p.is_file())


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``TMPDIR`` for this test, where spooled form files would land."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setenv("TMPDIR", str(directory))
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


@pytest.fixture
def small_lab(tmp_path: Path, temp_dir: Path) -> Iterator[Lab]:
    """A lab whose uploads may be 1 MiB at most."""
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with running_lab(tmp_path / "data", database, max_upload_bytes=MIB) as lab:
        yield lab


def multipart_head(filename: str = "model.pt") -> bytes:
    return (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="options"\r\n\r\n'
        f"{GUIDE_OPTIONS}\r\n"
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


MULTIPART_TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


def huge_body(size: int) -> Iterator[bytes]:
    """A multipart upload of ``size`` file bytes, made as it is read (never held whole)."""
    yield multipart_head()
    chunk = b"\0" * MIB
    for _ in range(size // MIB):
        yield chunk
    yield MULTIPART_TAIL


@dataclass
class Sent:
    """What a raw ASGI request cost: bytes the app pulled, the most disk in use meanwhile."""

    status: int = 0
    body: bytes = b""
    pulled: int = 0
    peak_disk: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def send_raw(
    lab: Lab,
    body: Iterator[bytes],
    *,
    headers: dict[str, str],
    watch: Callable[[], int] = lambda: 0,
    meanwhile: Callable[[asyncio.Task[None]], Awaitable[None]] | None = None,
) -> Sent:
    """POST /v1/models straight to the ASGI app, the body pulled chunk by chunk (the test
    client would read it all first), measuring disk (``watch``) at every chunk; ``meanwhile``
    gets the request's task while it runs."""
    sent = Sent(peak_disk=watch())
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/models",
        "raw_path": b"/v1/models",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }

    ended = False

    async def receive() -> dict:
        nonlocal ended
        sent.peak_disk = max(sent.peak_disk, watch())
        chunk = next(body, None)
        if chunk is None:
            if ended:
                return {"type": "http.disconnect"}
            ended = True
            return {"type": "http.request", "body": b"", "more_body": False}
        sent.pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            sent.status = message["status"]
            sent.headers = message["headers"]
        elif message["type"] == "http.response.body":
            sent.body += message.get("body", b"")

    async def run() -> None:
        request = asyncio.create_task(lab.app(scope, receive, send))
        if meanwhile is not None:
            await meanwhile(request)
        await request

    lab.client.portal.call(run)
    return sent


def form_headers(token: str | None = None, length: int | None = None) -> dict[str, str]:
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    if length is not None:
        headers["content-length"] = str(length)
    return headers


def send_huge(lab: Lab, temp_dir: Path, size: int, headers: dict[str, str]) -> Sent:
    """An upload of ``size`` bytes of model, watching the disk under temp and the data folder."""
    data_dir = lab.app.state.settings.data_dir
    return send_raw(
        lab, huge_body(size), headers=headers, watch=lambda: disk_bytes(temp_dir, data_dir)
    )


def test_a_1_gib_upload_without_a_token_costs_no_disk(small_lab: Lab, temp_dir: Path) -> None:
    gib = 1 << 30
    size = len(multipart_head()) + gib + len(MULTIPART_TAIL)
    sent = send_huge(small_lab, temp_dir, gib, form_headers(length=size))
    assert sent.status == 401
    assert json.loads(sent.body)["code"] == "unauthorized"
    assert sent.pulled < MIB
    assert sent.peak_disk < MIB


def test_an_over_limit_length_is_refused_before_reading(small_lab: Lab, temp_dir: Path) -> None:
    _, token = small_lab.add_user("big")
    sent = send_huge(small_lab, temp_dir, 64 * MIB, form_headers(token, length=64 * MIB + 1000))
    assert sent.status == 413
    assert json.loads(sent.body)["code"] == "upload_too_large"
    assert sent.pulled == 0
    assert sent.peak_disk == 0


def test_a_body_without_length_is_cut_off_at_the_limit(small_lab: Lab, temp_dir: Path) -> None:
    _, token = small_lab.add_user("chunky")
    sent = send_huge(small_lab, temp_dir, 64 * MIB, form_headers(token))
    assert sent.status == 413
    assert json.loads(sent.body)["detail"] == {"limit": MIB}
    assert sent.pulled <= 3 * MIB  # the limit, plus the chunk that passed it
    assert sent.peak_disk <= 2 * MIB
    assert disk_bytes(temp_dir, small_lab.app.state.settings.data_dir) == 0


@pytest.fixture(scope="module")
def shared_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    directory = tmp_path_factory.mktemp("limits")
    with running_lab(directory / "data", f"sqlite:///{directory / 'db.sqlite'}") as lab:
        yield lab


def _does_not_fit() -> bytes:
    from torch import nn

    too_wide = nn.Sequential(
        nn.Conv2d(1, 8, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 26 * 26, 10)
    )
    return torchscript_bytes(too_wide, (1, 28, 28))


REJECTED = {
    **BAD_UPLOADS,
    "does not fit": _does_not_fit(),
}


@pytest.mark.parametrize("data", REJECTED.values(), ids=REJECTED.keys())
def test_a_rejected_upload_leaves_nothing(shared_lab: Lab, temp_dir: Path, data: bytes) -> None:
    _, token = shared_lab.add_user(f"r{uuid.uuid4().hex[:8]}")
    data_dir = shared_lab.app.state.settings.data_dir
    stores = [data_dir / "models", data_dir / "compiled", temp_dir]
    before = disk_bytes(*stores)
    response = upload(shared_lab, token, data)
    assert 400 <= response.status_code < 500, response.text
    assert disk_bytes(*stores) == before


def test_rejected_before_compiling_leaves_nothing(
    shared_lab: Lab, temp_dir: Path, guide_torchscript: bytes
) -> None:
    _, token = shared_lab.add_user(f"r{uuid.uuid4().hex[:8]}")
    data_dir = shared_lab.app.state.settings.data_dir
    stores = [data_dir / "models", data_dir / "compiled", temp_dir]
    before = disk_bytes(*stores)
    refused = [
        upload(shared_lab, "spk_not-a-token", guide_torchscript),
        upload(shared_lab, token, guide_torchscript, options="not json"),
        shared_lab.client.post(
            "/v1/models",
            files={"file": ("model.pt", guide_torchscript)},
            data={"options": GUIDE_OPTIONS, "colour": "blue"},
            headers=bearer(token),
        ),
        shared_lab.client.post(
            "/v1/models",
            content=multipart_head() + guide_torchscript,  # no closing boundary
            headers=form_headers(token),
        ),
        shared_lab.client.post("/v1/models", content=guide_torchscript, headers=bearer(token)),
        shared_lab.client.post(
            "/v1/models",
            files={"file": ("model.pt", guide_torchscript)},
            data={"options": GUIDE_OPTIONS, "name": "n" * 70_000},
            headers=bearer(token),
        ),
        shared_lab.client.post(
            "/v1/models",
            files=[("file", ("model.pt", guide_torchscript))]
            + [(f"f{i}", (None, "x")) for i in range(10)],
            data={"options": GUIDE_OPTIONS},
            headers=bearer(token),
        ),
    ]
    assert [r.status_code for r in refused] == [401, 422, 422, 422, 415, 422, 422]
    assert "text fields hold more than" in refused[5].json()["message"]
    assert "more than 8 parts" in refused[6].json()["message"]
    assert all(r.json()["message"] for r in refused)
    assert disk_bytes(*stores) == before


def test_orphans_are_collected_while_running_but_not_uploads_arriving(
    shared_lab: Lab, guide_torchscript: bytes
) -> None:
    _, token = shared_lab.add_user("orf2")
    model = upload(shared_lab, token, guide_torchscript).json()
    models = shared_lab.app.state.models
    orphan = models.uploads.put(b"left by an older version")
    arriving = models.uploads.root / ".partial-arriving"
    arriving.write_bytes(b"half an upload")
    with shared_lab.db.session() as session:
        assert models.collect_orphans(session, partial=False) > 0
    assert models.uploads.get(orphan) is None
    assert arriving.exists()
    assert models.uploads.get(model["sha256"]) is not None
    arriving.unlink()


@pytest.fixture(scope="module")
def guide_result(shared_lab: Lab, guide_torchscript: bytes) -> CompileResult:
    options = CompileOptions(input_shape=(1, 28, 28))
    return shared_lab.app.state.models.pool.compile(guide_torchscript, options)


class HeldCompiles:
    """A compiler pool whose compiles wait to be let through, then answer ``result`` (no
    worker is started: the order of events is what these tests observe)."""

    def __init__(self, result: CompileResult, *, hold: bool = True) -> None:
        self.result = result
        self.hold = hold
        self.gates: list[threading.Event] = []
        self.entered = threading.Semaphore(0)

    def factory(self, workers: int, limits: object) -> HeldCompiles:
        return self

    def compile(self, source: bytes, options: object, **kwargs: object) -> CompileResult:
        gate = threading.Event()
        self.gates.append(gate)
        self.entered.release()
        if self.hold:
            gate.wait(timeout=60)
        return self.result

    def close(self) -> None:
        for gate in self.gates:
            gate.set()


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch, guide_result: CompileResult) -> HeldCompiles:
    """Labs started in this test compile with a :class:`HeldCompiles`."""
    from specklab.server.models import service

    compiles = HeldCompiles(guide_result)
    monkeypatch.setattr(service, "CompilerPool", compiles.factory)
    return compiles


@pytest.fixture
def held_lab(tmp_path: Path, held: HeldCompiles) -> Iterator[Lab]:
    # One compile at a time, so that a held compile makes every later upload queue.
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with running_lab(tmp_path / "data", database, compile_workers=1) as lab:
        yield lab


def eventually(condition: Callable[[], bool], what: str) -> None:
    for _ in range(3000):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"never happened: {what}")


def test_orphaned_files_are_collected_at_start(
    tmp_path: Path, database_url: str, held: HeldCompiles, guide_torchscript: bytes
) -> None:
    held.hold = False
    data_dir = tmp_path / "data"
    database = database_url
    with running_lab(data_dir, database) as lab:
        _, token = lab.add_user("orf")
        model = upload(lab, token, guide_torchscript).json()
    kept = disk_bytes(data_dir / "models", data_dir / "compiled")

    # A crash between a blob and its row, an unfinished write, a stale compiled result.
    uploads, compiled = BlobStore(data_dir / "models"), BlobStore(data_dir / "compiled")
    orphan = uploads.put(b"an upload no row refers to" * 1000)
    (data_dir / "models" / ".partial-crashed").write_bytes(b"\0" * 5000)
    compiled.put(b"{}", ".config.json", digest="0" * 64)
    assert disk_bytes(data_dir / "models", data_dir / "compiled") > kept

    with running_lab(data_dir, database) as lab:
        assert disk_bytes(data_dir / "models", data_dir / "compiled") == kept
        assert uploads.get(orphan) is None
        config = lab.client.get(f"/v1/models/{model['id']}/config", headers=bearer(token))
        assert config.status_code == 200


def test_the_queue_position_is_visible_while_an_upload_waits(
    held_lab: Lab, held: HeldCompiles, guide_torchscript: bytes
) -> None:
    lab = held_lab
    _, ada = lab.add_user("ada")
    _, bob = lab.add_user("bob")
    results: dict[str, int] = {}

    def send(token: str, data: bytes, compile_id: str) -> None:
        response = lab.client.post(
            "/v1/models",
            files={"file": ("model.pt", data)},
            data={"options": GUIDE_OPTIONS},
            headers={**bearer(token), "X-Compile-Id": compile_id},
        )
        results[compile_id] = response.status_code

    models = [torchscript_bytes(guide_network(seed=s)) for s in range(3)]
    threads = [threading.Thread(target=send, args=(ada, models[0], "ada-0"))]
    threads[0].start()
    assert held.entered.acquire(timeout=60)  # ada's first compile holds the one worker

    def status(token: str, compile_id: str) -> dict:
        response = lab.client.get(f"/v1/models/compiles/{compile_id}", headers=bearer(token))
        return response.json() if response.status_code == 200 else {}

    for token, data, compile_id in ((ada, models[1], "ada-1"), (bob, models[2], "bob-0")):
        thread = threading.Thread(target=send, args=(token, data, compile_id))
        thread.start()
        threads.append(thread)
        eventually(lambda t=token, c=compile_id: status(t, c).get("state") == "queued", compile_id)

    assert status(ada, "ada-0")["state"] == "compiling"
    assert status(ada, "ada-1") == {
        "id": "ada-1",
        "state": "queued",
        "position": 1,
        "queued": 2,
        "workers": 1,
    }
    assert status(bob, "bob-0")["position"] == 0  # bob's one goes before ada's second
    # Each user sees only their own uploads.
    other = lab.client.get("/v1/models/compiles/ada-1", headers=bearer(bob))
    assert other.status_code == 404 and other.json()["code"] == "compile_not_found"
    duplicate = lab.client.post(
        "/v1/models",
        files={"file": ("model.pt", guide_torchscript)},
        data={"options": GUIDE_OPTIONS},
        headers={**bearer(ada), "X-Compile-Id": "ada-1"},
    )
    assert duplicate.status_code == 409
    lab.app.state.models.uploads_per_user = 2  # ada's two uploads in flight are her limit now
    too_many = upload(lab, ada, guide_torchscript)
    assert too_many.status_code == 429
    assert too_many.json()["code"] == "too_many_uploads"
    assert too_many.json()["detail"] == {"limit": 2}

    for index in range(3):
        if index:
            assert held.entered.acquire(timeout=60)
        held.gates[index].set()
    for thread in threads:
        thread.join(timeout=120)
    assert results == {"ada-0": 201, "ada-1": 201, "bob-0": 201}
    gone = lab.client.get("/v1/models/compiles/ada-0", headers=bearer(ada))
    assert gone.status_code == 404


def test_an_upload_during_shutdown_gets_a_503(
    tmp_path: Path, held_lab: Lab, held: HeldCompiles, guide_torchscript: bytes
) -> None:
    lab = held_lab
    _, token = lab.add_user("late")
    answers: list = []

    def send(data: bytes) -> None:
        answers.append(upload(lab, token, data))

    running = threading.Thread(target=send, args=(guide_torchscript,))
    running.start()
    assert held.entered.acquire(timeout=60)
    queued = threading.Thread(target=send, args=(torchscript_bytes(guide_network(seed=1)),))
    queued.start()
    models = lab.app.state.models
    eventually(lambda: models.queue.queued == 1, "the second upload queued")
    lab.client.portal.call(models.stop_accepting)
    queued.join(timeout=60)
    held.gates[0].set()
    running.join(timeout=120)
    after = upload(lab, token, guide_torchscript)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201, 503]  # the running compile finished, the queued one was refused
    refused = next(a for a in answers if a.status_code == 503)
    assert refused.json()["code"] == "daemon_stopping"
    assert after.status_code == 503 and after.json()["code"] == "daemon_stopping"
    assert not list((tmp_path / "data" / "models").glob(".partial-*"))


def test_uploads_waiting_for_the_compiler_hold_no_database_slot(
    held_lab: Lab, held: HeldCompiles, guide_torchscript: bytes
) -> None:
    """More uploads wait than there are write slots (16), and writes (a token, a booking's
    heartbeat) still go through: an upload holds no session while it waits or compiles."""
    lab = held_lab
    tokens = [lab.add_user(f"many{i}")[1] for i in range(5)]
    token = tokens[0]
    uploads = [
        threading.Thread(target=upload, args=(lab, tokens[i % 5], guide_torchscript + bytes([i])))
        for i in range(20)
    ]
    for thread in uploads:
        thread.start()
    models = lab.app.state.models
    eventually(lambda: models.queue.running == 1 and models.queue.queued == 19, "all waiting")

    answers: list[int] = []
    write = threading.Thread(
        target=lambda: answers.append(
            lab.client.post(
                "/v1/tokens", json={"name": "meanwhile"}, headers=bearer(token)
            ).status_code
        ),
        daemon=True,
    )
    write.start()
    write.join(timeout=60)
    held.hold = False
    for gate in held.gates:
        gate.set()
    eventually(lambda: len(held.gates) == 20, "every upload compiled")
    for gate in held.gates:
        gate.set()
    for thread in uploads:
        thread.join(timeout=60)
    assert answers == [201]


def test_an_upload_cut_off_by_the_shutdown_grace_gets_a_503(
    held_lab: Lab, held: HeldCompiles, guide_torchscript: bytes
) -> None:
    """uvicorn cancels requests still running when its graceful shutdown time is up."""
    _, token = held_lab.add_user("cut")

    async def shut_down_while_compiling(request: asyncio.Task[None]) -> None:
        assert await anyio.to_thread.run_sync(held.entered.acquire, True, 60)
        request.cancel("Task cancelled, timeout graceful shutdown exceeded")
        held.gates[0].set()  # the compile ends (the pool is stopped next)

    sent = send_raw(
        held_lab,
        iter([multipart_head(), guide_torchscript, MULTIPART_TAIL]),
        headers=form_headers(token),
        meanwhile=shut_down_while_compiling,
    )
    assert sent.status == 503
    assert json.loads(sent.body)["code"] == "daemon_stopping"
    assert not list(held_lab.app.state.models.uploads.root.rglob("*"))


def test_orphans_are_collected_periodically(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with running_lab(tmp_path / "data", database, orphan_collect_interval_s=0.05) as lab:
        uploads = lab.app.state.models.uploads
        orphan = uploads.put(b"written after start-up, never referred to")
        eventually(lambda: uploads.get(orphan) is None, "the orphan collected")


def test_the_quota_refuses_what_does_not_fit_and_counts_one_upload_once(
    tmp_path: Path, database_url: str, held: HeldCompiles, guide_torchscript: bytes
) -> None:
    held.hold = False
    quota = len(guide_torchscript) + 100
    with running_lab(tmp_path / "data", database_url, model_quota_bytes=quota) as lab:
        _, token = lab.add_user("quo")
        first = upload(lab, token, guide_torchscript)
        assert first.status_code == 201, first.text
        again = upload(lab, token, guide_torchscript, name="same bytes, no new cost")
        assert again.status_code == 201, again.text

        other = torchscript_bytes(guide_network(seed=1))
        refused = upload(lab, token, other)
        assert refused.status_code == 413
        body = refused.json()
        assert body["code"] == "quota_exceeded"
        assert str(quota) in body["message"]
        assert body["detail"] == {
            "quota_bytes": quota,
            "used_bytes": len(guide_torchscript),
            "upload_bytes": len(other),
        }
        # Another user has a quota of their own.
        _, second = lab.add_user("quo2")
        assert upload(lab, second, other).status_code == 201

        for model in (first.json(), again.json()):
            lab.client.delete(f"/v1/models/{model['id']}", headers=bearer(token))
        assert upload(lab, token, other).status_code == 201
