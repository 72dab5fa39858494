"""This host's share of the lab's jobs: claim chunks while workers are free, run them in
the evaluation pool, renew their leases, store their rows.

One asyncio task (:meth:`JobRunner.serve`) wakes when a job is submitted or cancelled here,
when a chunk ends, and at least every ``poll_s`` (for work and cancels from other hosts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import anyio
from sqlalchemy.orm import Session

from specklab.schemas.jobs import JobOptions, JobState

from ..storage import Database
from ..storage.types import utcnow
from . import queue
from .pool import ChunkCancelled, ChunkFailed, ChunkTask
from .results import columns, npz_bytes, summarize

log = logging.getLogger(__name__)


class Executor(Protocol):
    """Where a runner's chunks run: the evaluation pool, or a booked device."""

    size: int

    def run(self, slot: int, task: ChunkTask) -> list[dict[str, Any]]:
        """Run ``task`` on ``slot`` (blocking, from a thread); ChunkCancelled, ChunkFailed."""
        ...

    def cancel(self, slot: int) -> None: ...


@runtime_checkable
class Pipelined(Executor, Protocol):
    """An executor that takes a slot's next task while the slot runs (the evaluation pool;
    a booked device's runner is a plain :class:`Executor`)."""

    def send_ahead(self, slot: int, task: ChunkTask) -> None: ...

    def withdraw(self, slot: int, task: ChunkTask) -> None: ...


@dataclass(slots=True)
class _Running:
    claim: queue.Claim
    task: asyncio.Task[None] | None = None
    #: The slot's next chunk, claimed while this one runs so the worker never waits for the
    #: database between chunks; ``skip``: its job was cancelled before it started.
    following: queue.Claim | None = None
    #: ``following``'s task, sent ahead to a pipelined executor.
    following_task: ChunkTask | None = None
    skip: bool = False

    def claims(self) -> list[queue.Claim]:
        return [self.claim] if self.following is None else [self.claim, self.following]


@dataclass(eq=False, repr=False)
class JobRunner:
    db: Database
    pool: Executor
    _: KW_ONLY
    host: str
    #: Where a job's configuration and dataset are on this host, by their sha256.
    config_path: Callable[[str], Path]
    dataset_path: Callable[[str], Path]
    #: Makes a job's configuration and dataset (by their sha256) present on this host,
    #: fetching them from the lab's copy if they are not (blocking).
    fetch: Callable[[str, str], None]
    lease_s: float
    poll_s: float = 0.25
    #: The booked device whose chunks this runner runs; None: the evaluation workers'.
    device: str | None = None
    _slots: dict[int, _Running] = field(init=False, default_factory=dict)
    _wake: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _stopping: bool = field(init=False, default=False)
    _last_requeue: float = field(init=False, default=float("-inf"))

    def wake(self) -> None:
        self._wake.set()

    def cancel_job(self, job_id: int) -> None:
        """Stop this host's chunks of ``job_id`` now (the job is already cancelled). Called
        from request threads: the slots are copied first, as the loop may change them."""
        for slot, running in list(self._slots.items()):
            if running.claim.job_id == job_id:
                self.pool.cancel(slot)
            if running.following is not None and running.following.job_id == job_id:
                running.skip = True
                self._withdraw(slot, running)

    async def serve(self) -> None:
        """Run until cancelled; chunks running then go back to the queue."""
        if self.device is None:  # this host's first runner: what it held before is free
            await self.db.run(lambda s: queue.requeue(s, host=self.host), write=True)
        last_renewal = asyncio.get_running_loop().time()
        try:
            while True:
                try:
                    await self._fill_slots()
                    now = asyncio.get_running_loop().time()
                    if now - last_renewal >= min(self.poll_s, self.lease_s / 3):
                        last_renewal = now
                        await self._renew()
                except Exception:  # the database briefly away: try again at the next wake
                    log.exception("job runner step failed")
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_s)
        finally:
            self._stopping = True
            for slot in list(self._slots):
                self.pool.cancel(slot)
            tasks = [running.task for running in self._slots.values() if running.task]
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _fill_slots(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_requeue >= self.lease_s / 3:
            self._last_requeue = loop.time()
            expired = utcnow()
            await self.db.run(lambda s: queue.requeue(s, now=expired), write=True)
        free = [slot for slot in range(self.pool.size) if slot not in self._slots]
        # A read first: an idle lab costs no write transaction per poll.
        if not free or not await self.db.run(lambda s: queue.anything_queued(s, self.device)):
            return
        for slot in free:
            claim = await self.db.run(self._claim, write=True)
            if claim is None:
                return
            running = self._slots[slot] = _Running(claim)
            running.task = asyncio.create_task(self._run(slot, running), name=f"job-slot-{slot}")

    async def _renew(self) -> None:
        held = {
            chunk_id: (slot, claim)
            for slot, running in self._slots.items()
            for claim in running.claims()
            for chunk_id in claim.chunk_ids
        }
        if not held:  # an idle host writes nothing: its polls stay reads
            return
        stop = await self.db.run(
            lambda s: queue.renew(s, self.host, list(held), self.lease_s), write=True
        )
        for chunk_id in stop:
            slot, claim = held[chunk_id]
            running = self._slots.get(slot)
            # The slot may have moved on while the renewal ran (the chunk finished and was
            # stored, which is why it is no longer running): stop only what it still holds.
            if running is not None and running.claim is claim:
                self.pool.cancel(slot)
            elif running is not None and running.following is claim:
                running.skip = True
                self._withdraw(slot, running)

    async def _run(self, slot: int, running: _Running) -> None:
        """Run the slot's chunks one after another: while one runs, the next is claimed and
        the one before is stored, so the worker does not wait for the database."""
        storing: list[asyncio.Task[None]] = []
        try:
            while True:
                task = running.following_task or self._task(running.claim)
                running.following_task = None
                work = asyncio.ensure_future(
                    anyio.to_thread.run_sync(self.pool.run, slot, task, abandon_on_cancel=False)
                )
                if not self._stopping:
                    running.following = await self._claim_ahead()
                    self._send_ahead(slot, running)
                try:
                    outcome: list[dict[str, Any]] | Exception = await work
                except (ChunkCancelled, ChunkFailed) as exc:
                    outcome = exc
                ended = utcnow()
                storing = [task for task in storing if not task.done()]
                storing.append(asyncio.create_task(self._store(running.claim, outcome, ended)))
                following, skip = running.following, running.skip or self._stopping
                running.following, running.skip = None, False
                if following is None:
                    return
                if skip:
                    self._withdraw(slot, running)
                    await self._release(following, cancelled=not self._stopping)
                    return
                running.claim = following
        finally:
            if running.following is not None:  # claimed, never started: someone else's now
                self._withdraw(slot, running)
                await self._release(running.following, cancelled=False)
            await asyncio.gather(*storing, return_exceptions=True)
            del self._slots[slot]
            self.wake()

    def _send_ahead(self, slot: int, running: _Running) -> None:
        """Hand the slot's next chunk to its worker now, when the executor takes tasks ahead:
        it starts the moment the running one ends, without a round trip through the loop."""
        following = running.following
        if following is None or running.skip or not isinstance(self.pool, Pipelined):
            return
        running.following_task = self._task(following)
        self.pool.send_ahead(slot, running.following_task)

    def _withdraw(self, slot: int, running: _Running) -> None:
        task = running.following_task
        if task is not None and isinstance(self.pool, Pipelined):
            self.pool.withdraw(slot, task)

    def _claim(self, session: Session, *, ahead: bool = False) -> queue.Claim | None:
        claim = queue.claim(
            session, self.host, self.lease_s, self.device, self.pool.size, ahead=ahead
        )
        if claim is not None:
            # A job submitted through another host of the lab: its files come from the lab's
            # copy, here in the claim's thread rather than on the event loop.
            self.fetch(claim.config_sha256, claim.dataset_sha256)
        return claim

    def _task(self, claim: queue.Claim) -> ChunkTask:
        return ChunkTask(
            config_path=self.config_path(claim.config_sha256),
            dataset_path=self.dataset_path(claim.dataset_sha256),
            options=JobOptions.model_validate(claim.options),
            start=claim.start,
            stop=claim.stop,
            user_id=claim.user_id,
        )

    async def _claim_ahead(self) -> queue.Claim | None:
        try:
            return await self.db.run(lambda s: self._claim(s, ahead=True), write=True)
        except Exception:  # the database briefly away: the loop claims again later
            log.exception("claiming a job chunk failed")
            return None

    async def _release(self, claim: queue.Claim, *, cancelled: bool) -> None:
        await self.db.run(
            lambda s: queue.release(s, claim, self.host, cancelled=cancelled),
            write=True,
        )

    async def _store(
        self, claim: queue.Claim, outcome: list[dict[str, Any]] | Exception, ended: datetime
    ) -> None:
        """Record how a chunk ended (at ``ended``). Should the database fail here, the chunk's
        lease runs out and it runs again."""
        try:
            await self._record(claim, outcome, ended)
        except Exception:
            log.exception("storing job chunks %s failed", claim.chunk_ids)

    async def _record(
        self, claim: queue.Claim, outcome: list[dict[str, Any]] | Exception, ended: datetime
    ) -> None:
        if isinstance(outcome, ChunkCancelled):
            await self._release(claim, cancelled=not self._stopping)
        elif isinstance(outcome, ChunkFailed):
            if self._stopping:  # the pool closed under it: another life runs it again
                await self._release(claim, cancelled=False)
            else:
                message = f"samples {claim.start}-{claim.stop - 1}: {outcome}"
                await self.db.run(lambda s: queue.fail(s, claim, self.host, message), write=True)
        else:
            await self.db.run(lambda s: _finish(s, claim, self.host, outcome, ended), write=True)


def _finish(
    session: Session, claim: queue.Claim, host: str, rows: list[dict[str, Any]], ended: datetime
) -> None:
    """Store a claim's rows; the job's last chunk summarizes it, its wall time ending when
    that chunk's worker answered (``ended``), not after the summary."""
    job = queue.finish(session, claim, host, rows)
    if job is None:
        return
    table = columns(queue.chunk_rows(session, job.id), len(job.layers))
    job.samples_npz = npz_bytes(table)
    summary = summarize(table, 0)
    started = job.started_at or job.created_at
    summary["wall_time_s"] = (ended - started) / timedelta(seconds=1)
    job.summary = summary
    queue.end_job(session, job, JobState.DONE)
    session.commit()
