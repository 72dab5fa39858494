"""A warm pool of isolated compile workers, and :func:`compile_model`, the one entry point.

Each worker is a child process (see ``worker.py``) in a sandbox (``sandbox.py``) that pays the
torch import once and then compiles uploads one at a time, under an address-space limit, a
per-compile CPU-time limit and a wall-clock timeout enforced from here. Several workers serve
compiles side by side, so one slow or hostile upload holds one worker, not the daemon's
compiling. A worker that times out is killed; one that
dies (CPU limit, memory, crash) is replaced; either way the pool keeps serving. The daemon
holds one pool for its lifetime; :meth:`CompilerPool.compile` is blocking and thread-safe
(call it with ``asyncio.to_thread``).

This process only ever decodes msgpack and JSON from a worker: user data is never unpickled
here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import msgpack

from specklab.schemas.compile import CompileOptions, CompileReport

from . import sandbox
from .archive import ArchiveLimits, check_upload_size
from .errors import CompileTimeout, ResourceLimit, WorkerCrashed, error_from_code
from .pipeline import CompileResult
from .protocol import HEADER, encode

_GIB = 1024**3
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerLimits:
    #: CPU seconds one compile may use in its worker.
    cpu_seconds: int = 30
    #: Address space of a worker, torch included (about 0.75 GiB idle).
    memory_bytes: int = 3 * _GIB
    #: Wall-clock seconds one compile may take.
    timeout_seconds: float = 60.0
    #: Wall-clock seconds a new worker may take to import torch and report ready.
    startup_seconds: float = 120.0
    archive: ArchiveLimits = field(default_factory=ArchiveLimits)


class _WorkerGone(Exception):
    def __init__(self, returncode: int | None) -> None:
        super().__init__(f"worker exited with {returncode}")
        self.returncode = returncode


class _Deadline(Exception):
    pass


def _whenever_ready(fd: int, event: int, deadline: float) -> Iterator[int]:
    """Yield ``fd`` each time it is ready for ``event``; raise _Deadline at the deadline."""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, event)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise _Deadline
            yield fd


class _Worker:
    """One child process and its pipes."""

    def __init__(self, limits: WorkerLimits, warm: bool, layers: frozenset[str]) -> None:
        setup = {"limits": asdict(limits), "warm": warm, "layers": sorted(layers)}
        self.process = sandbox.start(["-m", "specklab.server.compiler.worker", json.dumps(setup)])
        self.limits = limits
        self.ready = False
        threading.Thread(
            target=self._log_stderr, name=f"compile-worker-{self.pid}", daemon=True
        ).start()

    def _log_stderr(self) -> None:
        assert self.process.stderr is not None
        # Closed here, at its end: closing it from another thread would wait for this read.
        with self.process.stderr as stderr:
            for line in stderr:
                log.warning(
                    "compile worker %d: %s", self.pid, line.decode(errors="replace").rstrip()
                )

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self, size: int, deadline: float) -> bytes:
        assert self.process.stdout is not None
        if not size:
            return b""
        chunks, left = [], size
        for fd in _whenever_ready(self.process.stdout.fileno(), selectors.EVENT_READ, deadline):
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                raise _WorkerGone(self.process.wait())
            chunks.append(chunk)
            left -= len(chunk)
            if not left:
                break
        return b"".join(chunks)

    def _receive(self, deadline: float) -> dict[str, Any]:
        (size,) = HEADER.unpack(self._read(HEADER.size, deadline))
        return msgpack.unpackb(self._read(size, deadline), raw=False)

    def wait_ready(self) -> None:
        if not self.ready:
            self._receive(time.monotonic() + self.limits.startup_seconds)
            self.ready = True

    def _write(self, data: bytes, deadline: float) -> None:
        """Under the deadline too: a worker that stops reading must not block us (the pipe
        holds 64 KiB, an upload up to the size limit)."""
        assert self.process.stdin is not None
        os.set_blocking(self.process.stdin.fileno(), False)
        left = memoryview(data)
        for fd in _whenever_ready(self.process.stdin.fileno(), selectors.EVENT_WRITE, deadline):
            try:
                left = left[os.write(fd, left) :]
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise _WorkerGone(self.process.wait()) from exc
            if not left:
                break

    def call(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.wait_ready()
        deadline = time.monotonic() + timeout
        self._write(encode(message), deadline)
        return self._receive(deadline)

    def stop(self, grace: float = 2.0) -> None:
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def kill(self) -> None:
        self.process.kill()
        self.stop(grace=5.0)


class CompilerPool:
    """``workers`` warm compile processes; see the module docstring."""

    def __init__(
        self,
        workers: int = 2,
        limits: WorkerLimits | None = None,
        *,
        warm: bool = True,
        layers: Collection[str] | None = None,
    ) -> None:
        """``warm``: workers import everything up front (a one-off compile imports lazily).

        ``layers``: the sandbox layers of the workers; by default every one the kernel gives.
        """
        if workers < 1:
            raise ValueError("a compiler pool needs at least one worker")
        self.limits = limits or WorkerLimits()
        self.warm = warm
        self.layers = sandbox.available_layers() if layers is None else frozenset(layers)
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._lock = threading.Lock()
        self._workers: set[_Worker] = set()
        self._closed = False
        for _ in range(workers):
            self._start()

    def _start(self) -> None:
        worker = _Worker(self.limits, self.warm, self.layers)
        with self._lock:
            self._workers.add(worker)
        self._idle.put(worker)

    def _retire(self, worker: _Worker, *, kill: bool) -> None:
        if kill:
            worker.kill()
        else:
            worker.stop()
        with self._lock:
            self._workers.discard(worker)
            closed = self._closed
        if not closed:
            self._start()

    @property
    def pids(self) -> list[int]:
        """The processes started (with the ``pid`` layer, the sandboxed worker is a grandchild)."""
        with self._lock:
            return sorted(w.pid for w in self._workers)

    def warm_up(self) -> None:
        """Wait until every worker has imported torch (optional: compiles wait anyway)."""
        taken = [self._idle.get() for _ in range(self._idle.qsize())]
        try:
            for worker in taken:
                worker.wait_ready()
        finally:
            for worker in taken:
                self._idle.put(worker)

    def compile(
        self, source: bytes, options: CompileOptions, *, timeout: float | None = None
    ) -> CompileResult:
        """Compile an upload in a worker. Raises a :class:`~.errors.CompileError`.

        ``timeout`` (seconds) overrides the limits' ``timeout_seconds`` for this compile.
        """
        timeout = self.limits.timeout_seconds if timeout is None else timeout
        if self._closed:
            raise RuntimeError("the compiler pool is closed")
        check_upload_size(len(source), self.limits.archive)
        worker = self._idle.get()
        while worker.process.poll() is not None:  # died while idle (killed from outside)
            self._retire(worker, kill=False)
            worker = self._idle.get()
        request = {"op": "compile", "data": source, "options": options.model_dump_json()}
        try:
            reply = worker.call(request, timeout)
        except _Deadline:
            self._retire(worker, kill=True)
            raise CompileTimeout(
                f"compiling took longer than {timeout:g} s; the worker was stopped"
            ) from None
        except _WorkerGone as gone:
            self._retire(worker, kill=False)
            raise self._death(gone.returncode) from None
        except BaseException:
            self._retire(worker, kill=True)
            raise
        if reply.get("fatal"):
            self._retire(worker, kill=False)
        else:
            self._idle.put(worker)
        return _result(reply)

    def _death(self, returncode: int | None) -> Exception:
        if returncode == -signal.SIGXCPU:
            return ResourceLimit(
                f"compiling used more than {self.limits.cpu_seconds} s of CPU time; "
                "the worker was stopped"
            )
        cause = (
            f"signal {signal.Signals(-returncode).name}"
            if returncode is not None and returncode < 0
            else f"exit status {returncode}"
        )
        return WorkerCrashed(f"the compile worker died ({cause}) while reading the model")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = list(self._workers)
            self._workers.clear()
        for worker in workers:
            worker.stop()

    def __enter__(self) -> CompilerPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _result(reply: dict[str, Any]) -> CompileResult:
    report_json = reply.get("report")
    report = CompileReport.model_validate_json(report_json) if report_json else None
    if reply.get("ok"):
        assert report is not None
        return CompileResult(reply["config"], report)
    raise error_from_code(
        str(reply.get("code")), str(reply.get("message")), json.loads(reply["detail"]), report
    )


def compile_model(
    source: bytes | Path, options: CompileOptions, *, pool: CompilerPool | None = None
) -> CompileResult:
    """Compile a TorchScript / torch.export / NIR model for a Speck chip, in an isolated worker.

    ``source`` is the upload's bytes or a file path (format detected by content). Without a
    ``pool``, a one-off worker is started (cold: about 2-4 s for the torch import). Raises a
    :class:`~.errors.CompileError`: an :class:`~.errors.InputError` for unreadable input, a
    :class:`~.errors.ModelError` (with ``.report``) when the model does not fit the chip.
    """
    if pool is None:
        with CompilerPool(1, warm=False) as own:
            return compile_model(source, options, pool=own)
    if isinstance(source, Path):
        check_upload_size(source.stat().st_size, pool.limits.archive)
        source = source.read_bytes()
    return pool.compile(source, options)
