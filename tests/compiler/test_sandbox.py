"""The compile worker's sandbox, attacked from inside: every attack fails with every layer on,
and switching any one layer off lets the attack only that layer stops through.

The attacks run in ``sandbox_probe.py``, started the way the pool starts a worker and entering
the sandbox the way the worker does; the layers are switched off through the same setting the
pool passes its workers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import tempfile
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi import FastAPI

from specklab.server.compiler import CompilerPool, sandbox
from specklab.server.models import lifespan
from specklab.server.settings import Settings
from specklab.server.storage import Database, upgrade

from .sandbox_probe import PROBE_PATH, worker_process

SECRETS = {
    "SPECKLAB_DATABASE_URL": "postgresql://specklab:hunter2-db-password@localhost/specklab",
    "SPECKLAB_ADMIN_TOKEN": "admin-token-that-must-stay-in-the-daemon",
}
#: Each layer and an attack it alone stops (the others being on).
ONLY_STOPPED_BY = {
    "uid": "run as the daemon's uid",
    "mount": "write by the mount table",
    "network": "see the host's UNIX sockets",
    "pid": "see the daemon's process",
    "landlock": "read the database",
    "seccomp": "open a network socket",
}
ATTACKS = [
    "read the database",
    "list the data dir",
    "read another upload",
    "connect to the daemon's port",
    "open a network socket",
    "signal the daemon",
    "ptrace the daemon",
    "read the daemon's cmdline",
    "read the daemon's environ",
    "see the daemon's process",
    "unlink a file",
    "create a file",
    "create a file in /tmp",
    "run a program",
    "see inherited descriptors",
    "see the daemon's secrets",
    "see the host's UNIX sockets",
    "list the root directory",
    "write by the mount table",
    "run as the daemon's uid",
]

pytestmark = pytest.mark.skipif(
    bool(sandbox.missing_layers()),
    reason=f"this kernel lacks sandbox layers: {sandbox.missing_layers()}",
)


@pytest.fixture
def targets(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A daemon's things to attack: a data dir laid out as the daemon's (world-readable, as
    the default umask makes it, and outside /tmp), its listening port, an abstract UNIX socket,
    secrets in its environment and a descriptor it let be inherited."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    with (
        tempfile.TemporaryDirectory(dir="/var/tmp") as data,
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.socket(socket.AF_UNIX) as abstract,
        open(os.devnull) as leaked,
    ):
        data_dir = Path(data)
        data_dir.chmod(0o755)
        (data_dir / "specklab.db").write_bytes(b"SQLite format 3\x00" + bytes(100))
        (data_dir / "models").mkdir()
        upload = data_dir / "models" / ("ab" * 32)
        upload.write_bytes(b"another user's model")
        victim = data_dir / "victim"
        victim.write_bytes(b"keep me")
        victim.chmod(0o666)
        name = f"specklab-sandbox-test-{os.getpid()}"
        abstract.bind(f"\0{name}")
        abstract.listen()
        os.set_inheritable(leaked.fileno(), True)
        yield {
            "database": str(data_dir / "specklab.db"),
            "data_dir": str(data_dir),
            "upload": str(upload),
            "victim": str(victim),
            "new_file": str(data_dir / "created"),
            "port": listener.getsockname()[1],
            "abstract_socket": name,
            "daemon_pid": os.getpid(),
            "daemon_uid": os.geteuid(),
            "secrets": list(SECRETS.values()),
        }


def _probe(
    layers: Collection[str], targets: dict[str, Any], then_signal: int | None = None
) -> tuple[dict[str, tuple[bool, str]], int]:
    setup = {"layers": sorted(layers), "targets": targets, "then_signal": then_signal}
    with sandbox.start([str(PROBE_PATH), json.dumps(setup)]) as process:
        out, err = process.communicate(timeout=120)
    assert out, err.decode(errors="replace")
    results = {name: (allowed, detail) for name, (allowed, detail) in json.loads(out).items()}
    return results, process.returncode


def test_every_attack_fails_inside_the_sandbox(targets: dict[str, Any]) -> None:
    results, returncode = _probe(sandbox.LAYERS, targets)
    assert returncode == 0
    assert sorted(results) == sorted(ATTACKS)
    allowed = {name: detail for name, (ok, detail) in results.items() if ok}
    assert allowed == {}
    assert Path(targets["victim"]).read_bytes() == b"keep me"
    assert not Path(targets["new_file"]).exists()


def test_without_the_sandbox_the_attacks_succeed(targets: dict[str, Any]) -> None:
    """The probes can tell: with no layer, what the old worker allowed is allowed again."""
    results, _ = _probe([], targets)
    for attack in ONLY_STOPPED_BY.values():
        assert results[attack][0], (attack, results[attack][1])
    for attack in ("unlink a file", "create a file", "create a file in /tmp"):
        assert results[attack][0], (attack, results[attack][1])
    for attack in ("read the daemon's cmdline", "connect to the daemon's port", "run a program"):
        assert results[attack][0], (attack, results[attack][1])
    assert not Path(targets["victim"]).exists()
    # Never, layers or not: the pool passes no descriptor and an environment of its own.
    assert not results["see inherited descriptors"][0]
    assert not results["see the daemon's secrets"][0]


@pytest.mark.parametrize("layer", sandbox.LAYERS)
def test_switching_one_layer_off_lets_what_it_stops_through(
    layer: str, targets: dict[str, Any]
) -> None:
    results, _ = _probe(set(sandbox.LAYERS) - {layer}, targets)
    attack = ONLY_STOPPED_BY[layer]
    assert results[attack][0], (attack, results[attack][1])
    still_stopped = set(ONLY_STOPPED_BY.values()) - {attack}
    assert not {name for name in still_stopped if results[name][0]}


def test_a_death_by_signal_inside_reaches_the_pool_as_that_signal(
    targets: dict[str, Any],
) -> None:
    """The worker is a grandchild in its pid namespace: a CPU-limit kill must still read as one."""
    _, returncode = _probe(sandbox.LAYERS, targets, then_signal=signal.SIGXCPU)
    assert returncode == -signal.SIGXCPU


def test_libraries_asking_for_a_temporary_directory_get_one() -> None:
    """tempfile's own search writes a file in each candidate, which fails everywhere here."""
    code = (
        "import tempfile; from specklab.server.compiler import sandbox; "
        "sandbox.enter(sandbox.LAYERS); print(tempfile.gettempdir())"
    )
    with sandbox.start(["-c", code]) as process:
        out, err = process.communicate(timeout=120)
    assert out.decode().strip() == sandbox.TEMP_DIR, err.decode(errors="replace")


def _app_with_database(data_dir: Path) -> FastAPI:
    """The app state the model store starts from: a migrated database."""
    app = FastAPI()
    app.state.db = Database(f"sqlite:///{data_dir / 'specklab.db'}")
    upgrade(app.state.db)
    return app


def test_the_daemon_compiles_with_two_workers_by_default(tmp_path: Path) -> None:
    async def workers() -> int:
        app = _app_with_database(tmp_path)
        async with lifespan.model_store(app, Settings(data_dir=tmp_path)):
            return app.state.models.workers

    assert anyio.run(workers) == 2


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, value in (line.split(":", 1) for line in lines)}


def _namespace(pid: int | str, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def test_the_pools_workers_run_inside_every_layer(pool: CompilerPool) -> None:
    assert pool.layers == frozenset(sandbox.LAYERS)
    pool.warm_up()
    [started] = pool.pids
    worker = worker_process(started)
    assert worker != started  # the pid namespace's worker, a grandchild
    status = _status(worker)
    assert status["Uid"].split() == [str(sandbox.SANDBOX_ID)] * 4
    assert status["Gid"].split() == [str(sandbox.SANDBOX_ID)] * 4
    assert status["Groups"] == ""
    assert status["CapEff"] == status["CapPrm"] == "0000000000000000"
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"
    for kind in ("mnt", "net", "pid", "ipc"):
        assert _namespace(worker, kind) != _namespace("self", kind), kind
    environment = Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
    assert sorted(e.split(b"=")[0].decode() for e in environment if e) == sorted(
        sandbox.worker_env()
    )


def test_a_missing_layer_is_logged_at_start_and_reported_by_version(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from specklab.server.api import meta

    missing = {"landlock": "OSError: [Errno 38] landlock: Function not implemented"}
    monkeypatch.setattr(lifespan, "missing_layers", lambda: missing)
    monkeypatch.setattr(meta, "missing_layers", lambda: missing)
    lifespan.warn_about_missing_sandbox_layers()
    [record] = [r for r in caplog.records if "COMPILE SANDBOX INCOMPLETE" in r.message]
    assert record.levelname == "WARNING"
    assert "'landlock'" in record.message and "Function not implemented" in record.message
    version = meta.version()
    assert version.compile_sandbox == {layer: layer != "landlock" for layer in sandbox.LAYERS}

    async def start_and_stop() -> None:
        async with lifespan.model_store(_app_with_database(tmp_path), Settings(data_dir=tmp_path)):
            pass

    caplog.clear()
    anyio.run(start_and_stop)
    deadline = time.monotonic() + 60  # the check runs beside start-up, in a thread
    while not any("COMPILE SANDBOX INCOMPLETE" in r.message for r in caplog.records):
        assert time.monotonic() < deadline, "no warning logged by the daemon's start-up"
        time.sleep(0.05)
