"""The job queue on the database: chunks claimed, renewed, finished, released.

Any host with a free worker claims the next chunk with the database's work-queue idiom:
``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL (hosts never wait for each other's
claims), a write transaction on SQLite (``BEGIN IMMEDIATE``: one host). The next chunk is
the first chunk of the oldest job of the user with the fewest chunks running in the lab, so
one user's long job does not starve another's short one. A claim is a lease: the host renews
it while the chunk runs; a chunk whose lease ran out (its host died) is queued again, and a
restarting host re-queues the chunks it held before, so a job resumes from its last finished
chunks. Every function takes a write session and commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, aliased

from specklab.schemas.jobs import JobState

from ..booking import lab
from ..storage.tables import JobChunk, JobRecord
from ..storage.types import utcnow

QUEUED, RUNNING, DONE, CANCELLED = "queued", "running", "done", "cancelled"
UNFINISHED = (JobState.QUEUED.value, JobState.RUNNING.value)


@dataclass(frozen=True, slots=True)
class Claim:
    chunk_id: int
    job_id: int
    user_id: int
    start: int
    stop: int
    config_sha256: str
    dataset_sha256: str
    options: dict[str, Any]


def _runs_on(device: str | None) -> Any:
    """The chunks of the evaluation workers (None), or of one booked device."""
    return JobChunk.device.is_(None) if device is None else JobChunk.device == device


def claim(session: Session, host: str, lease_s: float, device: str | None = None) -> Claim | None:
    """Take the fairest queued chunk for ``host``'s workers (or ``device``), or None when
    nothing is queued for them."""
    running = aliased(JobChunk)
    running_of_owner = (
        select(func.count())
        .where(running.state == RUNNING, running.user_id == JobChunk.user_id)
        .correlate(JobChunk)
        .scalar_subquery()
    )
    query = (
        select(JobChunk)
        .join(JobRecord, JobRecord.id == JobChunk.job_id)
        .where(JobChunk.state == QUEUED, JobRecord.state.in_(UNFINISHED), _runs_on(device))
        .order_by(running_of_owner, JobChunk.job_id, JobChunk.start)
        .limit(1)
        .with_for_update(skip_locked=True, of=JobChunk)
    )
    chunk = session.scalars(query).first()
    if chunk is None:
        session.commit()
        return None
    now = utcnow()
    chunk.state, chunk.host_name = RUNNING, host
    chunk.lease_until = now + timedelta(seconds=lease_s)
    job = session.get(JobRecord, chunk.job_id)
    assert job is not None  # the join found it, and chunks go with their job
    if job.state == JobState.QUEUED:
        job.state, job.started_at = JobState.RUNNING.value, now
    found = Claim(
        chunk.id,
        job.id,
        job.user_id,
        chunk.start,
        chunk.stop,
        job.config_sha256,
        job.dataset_sha256,
        job.options,
    )
    session.commit()
    return found


def anything_queued(session: Session, device: str | None = None) -> bool:
    query = (
        select(JobChunk.id)
        .join(JobRecord, JobRecord.id == JobChunk.job_id)
        .where(JobChunk.state == QUEUED, JobRecord.state.in_(UNFINISHED), _runs_on(device))
        .limit(1)
    )
    return session.scalar(query) is not None


def queued_devices(session: Session) -> set[str]:
    """The booked devices that queued chunks wait for."""
    query = (
        select(JobChunk.device)
        .join(JobRecord, JobRecord.id == JobChunk.job_id)
        .where(
            JobChunk.state == QUEUED,
            JobRecord.state.in_(UNFINISHED),
            JobChunk.device.is_not(None),
        )
        .distinct()
    )
    return {device for device in session.scalars(query) if device is not None}


def renew(session: Session, host: str, chunk_ids: list[int], lease_s: float) -> set[int]:
    """Extend ``host``'s claims; returns the chunks it should stop (cancelled, or no longer
    its own: its lease ran out and another host took them)."""
    if not chunk_ids:
        return set()
    session.execute(
        update(JobChunk)
        .where(JobChunk.id.in_(chunk_ids), JobChunk.host_name == host, JobChunk.state == RUNNING)
        .values(lease_until=utcnow() + timedelta(seconds=lease_s))
    )
    kept = set(
        session.scalars(
            select(JobChunk.id)
            .join(JobRecord, JobRecord.id == JobChunk.job_id)
            .where(
                JobChunk.id.in_(chunk_ids),
                JobChunk.host_name == host,
                JobChunk.state == RUNNING,
                JobRecord.state == JobState.RUNNING,
            )
        )
    )
    session.commit()
    return set(chunk_ids) - kept


def requeue(session: Session, *, host: str | None = None, now: datetime | None = None) -> int:
    """Queue again the running chunks of ``host`` (a host starting up: they are from its
    previous life), or those whose lease ended before ``now``."""
    condition = JobChunk.host_name == host if host is not None else JobChunk.lease_until < now
    result = session.execute(
        update(JobChunk)
        .where(JobChunk.state == RUNNING, condition)
        .values(state=QUEUED, host_name=None, lease_until=None)
    )
    session.commit()
    return int(result.rowcount or 0)


def _own_running_chunk(session: Session, chunk_id: int, host: str) -> JobChunk | None:
    chunk = session.get(JobChunk, chunk_id, with_for_update=True)
    if chunk is None or chunk.state != RUNNING or chunk.host_name != host:
        return None
    return chunk


def release(session: Session, chunk_id: int, host: str, *, cancelled: bool) -> None:
    """A chunk stopped before its end: cancelled with its job, or back in the queue."""
    chunk = _own_running_chunk(session, chunk_id, host)
    if chunk is not None:
        chunk.state = CANCELLED if cancelled else QUEUED
        chunk.host_name, chunk.lease_until = None, None
    session.commit()


def finish(
    session: Session, chunk_id: int, host: str, rows: list[dict[str, Any]]
) -> JobRecord | None:
    """Store a chunk's rows; returns its job when this was the job's last chunk (the caller
    then summarizes it in the same session and commits). A chunk no longer held by ``host``
    is dropped: whoever holds it now runs it again."""
    chunk = _own_running_chunk(session, chunk_id, host)
    if chunk is None:
        session.commit()
        return None
    # The job row is locked too, so that exactly one finishing chunk sees it complete.
    job = session.get(JobRecord, chunk.job_id, with_for_update=True)
    assert job is not None
    if job.state != JobState.RUNNING:
        chunk.state, chunk.host_name, chunk.lease_until = CANCELLED, None, None
        session.commit()
        return None
    chunk.state, chunk.result = DONE, {"rows": rows}
    chunk.host_name, chunk.lease_until = None, None
    job.samples_done += len(rows)
    job.sample_time_s += sum(row["time_s"] for row in rows)
    session.flush()
    left = session.scalar(
        select(func.count()).where(JobChunk.job_id == job.id, JobChunk.state != DONE)
    )
    if left:
        session.commit()
        return None
    return job


def fail(session: Session, chunk_id: int, host: str, message: str) -> None:
    """A chunk that cannot run fails its job (running it elsewhere would fail the same way),
    unless it ran on a booked device whose booking its owner no longer holds: then it is
    handed over to another device of the job that they still hold (``hand_over``)."""
    chunk = _own_running_chunk(session, chunk_id, host)
    if chunk is not None:
        job = session.get(JobRecord, chunk.job_id, with_for_update=True)
        if job is not None and job.state in UNFINISHED and chunk.device is not None:
            heir, why = hand_over(session, job, chunk.device)
            if heir is not None:
                chunk.device, chunk.state = heir, QUEUED
                chunk.host_name, chunk.lease_until = None, None
                session.commit()
                return
            message += why
        chunk.state, chunk.host_name, chunk.lease_until = CANCELLED, None, None
        if job is not None and job.state in UNFINISHED:
            end_job(session, job, JobState.FAILED, error=message[:1000])
    session.commit()


def hand_over(session: Session, job: JobRecord, device: str) -> tuple[str | None, str]:
    """When ``job``'s owner no longer holds the booking of ``device``: the next of the job's
    devices (in their order, after ``device``) whose running booking they hold, which takes
    over the job's queued chunks of ``device``; None, and why, when there is none. (None and
    no reason while they still hold ``device``: the chunk failed for another reason.)"""
    devices: list[str] = job.options.get("devices") or [device]
    running = lab.current_bookings(session, now=utcnow(), device_ids=devices)
    held = [d for d in devices if d in running and running[d].user_id == job.user_id]
    if device in held:
        return None, ""
    others = [d for d in devices if d != device]
    if not held:
        why = f"; nor of the job's other devices ({', '.join(others)})" if others else ""
        return None, why
    place = devices.index(device) if device in devices else -1
    heir = next(d for d in devices[place + 1 :] + devices[: place + 1] if d in held)
    session.execute(
        update(JobChunk)
        .where(JobChunk.job_id == job.id, JobChunk.state == QUEUED, JobChunk.device == device)
        .values(device=heir)
    )
    return heir, ""


def end_job(session: Session, job: JobRecord, state: JobState, error: str | None = None) -> None:
    """``job`` ends in ``state``: its queued chunks will not run (running ones stop when their
    hosts renew their leases). The caller commits."""
    job.state, job.finished_at, job.error = state.value, utcnow(), error
    session.execute(
        update(JobChunk)
        .where(JobChunk.job_id == job.id, JobChunk.state == QUEUED)
        .values(state=CANCELLED)
    )


def rows_of(session: Session, job_id: int) -> list[dict[str, Any]]:
    """The job's per-sample rows, in sample order."""
    results = session.scalars(
        select(JobChunk.result)
        .where(JobChunk.job_id == job_id, JobChunk.state == DONE)
        .order_by(JobChunk.start)
    )
    return [row for result in results for row in result["rows"]]
