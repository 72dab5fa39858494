"""Worker processes that run chunks of samples on virtual chips, one chunk each at a time.

Processes, not threads: the simulator's compiled loop releases the GIL, but a sample of a
small network spends most of its time in the Python around it (sorting, counting), so
threads would not scale. Each worker keeps the last configuration's simulator and the last
dataset it read, so the chunks of one job pay for loading once per worker. Each has its own
cancel flag in shared memory, which it checks between samples and which the simulator checks
between its compiled calls, so a cancelled chunk stops within a fraction of a second. The
runner may send a slot's next chunk ahead (:meth:`EvaluationPool.send_ahead`): it waits in the
worker's pipe and starts the moment the chunk before it has answered, so the worker does not
wait for the daemon between chunks.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

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


class _Flag:
    """The cancel flag of one task, as ``run_samples`` and the simulator check it: set when
    the task's slot in the worker's shared flags holds its number (a read of shared memory,
    no lock nor system call)."""

    __slots__ = ("_flags", "_seq")

    def __init__(self, flags: Any, seq: int) -> None:
        self._flags, self._seq = flags, seq

    def is_set(self) -> bool:
        return bool(self._flags[self._seq % 2] == self._seq)


def _serve(conn: Connection, flags: Any) -> None:
    """A worker's loop: numbered tasks in, one answer each out, until the pipe closes. A task
    sent ahead waits in the pipe and starts as soon as the one before it has answered."""
    from ..datasets.formats import load_canonical
    from ..simulator import ChipSimulator, SimulatorError
    from ..simulator.engine import Cancelled
    from .evaluate import Plan, job_config, run_samples

    loaded: dict[str, Any] = {}
    while True:
        try:
            seq, task = conn.recv()
        except EOFError:
            return
        cancel = _Flag(flags, seq)
        try:
            if cancel.is_set():  # withdrawn while it waited
                raise Cancelled("the chunk was cancelled")
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
            conn.send((seq, "ok", rows))
        except Cancelled:
            conn.send((seq, "cancelled", None))
        except (SimulatorError, ValueError, OSError) as exc:
            loaded.clear()
            conn.send((seq, "failed", str(exc)))


class _Worker:
    """One worker process. Its tasks are numbered; at most two are out at a time (the one
    running and one sent ahead), so a task's cancel flag is ``flags[seq % 2] == seq``."""

    def __init__(self, context: Any) -> None:
        self.flags = context.Array("q", 2, lock=False)  # zeros: no task is numbered 0
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(child, self.flags), daemon=True, name="specklab-evaluate"
        )
        self.process.start()
        child.close()
        self._send_lock = threading.Lock()
        self._last_seq = 0
        #: The task sent ahead of the running one, and its number.
        self.ahead: tuple[ChunkTask, int] | None = None
        #: The number of the task :meth:`run` waits for.
        self.running = 0
        #: When the running chunk was told to stop (monotonic), None while it may run.
        self.cancelled_at: float | None = None

    def _send(self, task: ChunkTask) -> int:
        self._last_seq += 1
        self.conn.send((self._last_seq, task))
        return self._last_seq

    def send_ahead(self, task: ChunkTask) -> None:
        """Only behind a running task (sent first, so the pipe keeps their order)."""
        with self._send_lock:
            if self.ahead is None and self.running:
                self.ahead = (task, self._send(task))

    def withdraw(self, task: ChunkTask) -> None:
        """The task sent ahead will not be run: it answers "cancelled" without starting."""
        ahead = self.ahead
        if ahead is not None and ahead[0] is task:
            self.flags[ahead[1] % 2] = ahead[1]

    def stop(self) -> None:
        if self.cancelled_at is None:
            self.cancelled_at = time.monotonic()
        if self.running:
            self.flags[self.running % 2] = self.running

    def run(self, task: ChunkTask) -> list[dict[str, Any]]:
        self.cancelled_at = None
        try:
            with self._send_lock:
                ahead, self.ahead = self.ahead, None
                seq = ahead[1] if ahead is not None and ahead[0] is task else self._send(task)
                self.running = seq
            while True:
                while not self.conn.poll(_POLL_S):
                    if self.cancelled_at is not None and (
                        time.monotonic() - self.cancelled_at > CANCEL_GRACE_S
                    ):
                        # Still starting up, or stuck outside the simulator's checks: the
                        # worker is not worth waiting for.
                        self.process.kill()
                        raise ChunkCancelled()
                answered, outcome, value = self.conn.recv()
                if answered == seq:
                    break  # earlier numbers: tasks sent ahead and withdrawn
        except (EOFError, OSError) as exc:
            raise ChunkFailed(f"the evaluation worker died ({exc or 'no answer'})") from None
        finally:
            self.running = 0
        if outcome == "cancelled":
            raise ChunkCancelled()
        if outcome == "failed":
            raise ChunkFailed(value)
        return cast(list[dict[str, Any]], value)

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

    def send_ahead(self, slot: int, task: ChunkTask) -> None:
        """Hand ``task`` to the slot's worker now, to start as soon as its running chunk
        ends (its :meth:`run` then only waits for it); or :meth:`withdraw` it."""
        with self._lock:
            worker = self._workers[slot]
        if worker is not None and worker.process.is_alive():
            # A worker that died meanwhile: run() starts a new one and sends the task there.
            with contextlib.suppress(OSError):
                worker.send_ahead(task)

    def withdraw(self, slot: int, task: ChunkTask) -> None:
        """``task``, sent ahead, will not be run (from any thread)."""
        worker = self._workers[slot]
        if worker is not None:
            worker.withdraw(task)

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
                if worker.ahead is not None:
                    worker.withdraw(worker.ahead[0])
                worker.stop()
                worker.close()
