"""Worker processes that run chunks of samples on virtual chips, one chunk each at a time.

Processes, not threads: the simulator's compiled loop releases the GIL, but a sample of a
small network spends most of its time in the Python around it (sorting, counting), so
threads would not scale. Each worker keeps the last configuration's simulator and the last
dataset it read, so the chunks of one job pay for loading once per worker. Each has its own
cancel flag, which it checks between samples and which the simulator checks between its
compiled calls, so a cancelled chunk stops within a fraction of a second.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.jobs import JobOptions

#: A worker told to stop that has not stopped after this long is killed (and replaced on
#: the slot's next chunk): a cancel frees its workers within about this time.
CANCEL_GRACE_S = 0.8
_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class ChunkTask:
    config_path: Path
    dataset_path: Path
    options: JobOptions
    start: int
    stop: int
    #: The job's owner (a booked device checks they still hold its booking).
    user_id: int


class ChunkCancelled(Exception):
    """The chunk stopped because its job was cancelled."""


class ChunkFailed(Exception):
    """The chunk could not run (a bad sample, a worker that died); the message says why."""


def _serve(conn: Connection, cancel: Event) -> None:
    """A worker's loop: one task in, one answer out, until the pipe closes."""
    from ..datasets.formats import load_canonical
    from ..simulator import ChipSimulator, SimulatorError
    from ..simulator.engine import Cancelled
    from .evaluate import Plan, job_config, run_samples

    loaded: dict[str, Any] = {}
    while True:
        try:
            task: ChunkTask = conn.recv()
        except EOFError:
            return
        try:
            key = (task.config_path, task.options.model_dump_json())
            if loaded.get("config") != key:
                config = ChipConfig.model_validate_json(task.config_path.read_bytes())
                plan = Plan.of(job_config(config, task.options), task.options)
                loaded.update(config=key, plan=plan, sim=ChipSimulator(plan.config))
            if loaded.get("dataset") != task.dataset_path:
                samples = load_canonical(task.dataset_path.read_bytes())
                loaded.update(dataset=task.dataset_path, samples=samples)
            rows = run_samples(
                loaded["sim"], loaded["plan"], loaded["samples"], task.start, task.stop, cancel
            )
            conn.send(("ok", rows))
        except Cancelled:
            conn.send(("cancelled", None))
        except (SimulatorError, ValueError, OSError) as exc:
            loaded.clear()
            conn.send(("failed", str(exc)))


class _Worker:
    def __init__(self, context: Any) -> None:
        self.cancel = context.Event()
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(child, self.cancel), daemon=True, name="specklab-evaluate"
        )
        self.process.start()
        child.close()
        #: When the running chunk was told to stop (monotonic), None while it may run.
        self.cancelled_at: float | None = None

    def stop(self) -> None:
        if self.cancelled_at is None:
            self.cancelled_at = time.monotonic()
        self.cancel.set()

    def run(self, task: ChunkTask) -> list[dict[str, Any]]:
        self.cancel.clear()
        self.cancelled_at = None
        self.conn.send(task)
        try:
            while not self.conn.poll(_POLL_S):
                if self.cancelled_at is not None and (
                    time.monotonic() - self.cancelled_at > CANCEL_GRACE_S
                ):
                    # Still starting up, or stuck outside the simulator's checks: the
                    # worker is not worth waiting for.
                    self.process.kill()
                    raise ChunkCancelled()
            outcome, value = self.conn.recv()
        except (EOFError, OSError) as exc:
            raise ChunkFailed(f"the evaluation worker died ({exc or 'no answer'})") from None
        if outcome == "cancelled":
            raise ChunkCancelled()
        if outcome == "failed":
            raise ChunkFailed(value)
        return value

    def close(self) -> None:
        self.conn.close()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class EvaluationPool:
    """``size`` worker slots; slot ``i`` runs one chunk at a time (:meth:`run`, blocking, from
    a thread) and can be told to stop it (:meth:`cancel`). Processes start on first use and
    a slot whose process died gets a new one."""

    def __init__(self, size: int) -> None:
        self.size = size
        # spawn: the daemon has threads, which a forked child would inherit half-held locks of.
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker | None] = [None] * size
        self._lock = threading.Lock()
        self._closed = False

    def run(self, slot: int, task: ChunkTask) -> list[dict[str, Any]]:
        with self._lock:
            if self._closed:
                raise ChunkCancelled()
            worker = self._workers[slot]
            if worker is None or not worker.process.is_alive():
                worker = self._workers[slot] = _Worker(self._context)
        try:
            return worker.run(task)
        except (ChunkFailed, ChunkCancelled):
            if not worker.process.is_alive():
                with self._lock:
                    self._workers[slot] = None
            raise

    def cancel(self, slot: int) -> None:
        worker = self._workers[slot]
        if worker is not None:
            worker.stop()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, [None] * self.size
        for worker in workers:
            if worker is not None:
                worker.stop()
                worker.close()
