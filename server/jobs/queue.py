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

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from sqlalchemy import (
    BindParameter,
    Float,
    Integer,
    Select,
    String,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased

from specklab.schemas.jobs import JobState

from ..booking import lab
from ..storage.tables import JobChunk, JobRecord
from ..storage.types import utcnow

QUEUED, RUNNING, DONE, CANCELLED = "queued", "running", "done", "cancelled"
UNFINISHED = (JobState.QUEUED.value, JobState.RUNNING.value)


@dataclass(frozen=True, slots=True)
class Claim:
    """Consecutive chunks of one job, run as one task: one chunk, or several when the job's
    samples are quick (``claim``)."""

    chunk_ids: tuple[int, ...]
    job_id: int
    user_id: int
    #: Where each chunk starts, then where the last one stops.
    bounds: tuple[int, ...]
    config_sha256: str
    dataset_sha256: str
    options: dict[str, Any]

    @property
    def start(self) -> int:
        return self.bounds[0]

    @property
    def stop(self) -> int:
        return self.bounds[-1]


#: A claim of the evaluation workers takes further chunks of its job until it holds about
#: this much work (judged by the job's samples so far), as one task: a chunk's claim and
#: finish cost the daemon about a millisecond of CPU each, which quick samples would otherwise
#: pay every few tens of milliseconds, on the cores the workers need.
CLAIM_TARGET_S = 0.1
#: The most chunks one claim holds: the job's samples so far only predict its next ones, and
#: a dataset whose first samples are quick and the rest slow must not hold a worker for
#: much longer than its chunks would one by one (other users' chunks wait for it).
CLAIM_MAX_CHUNKS = 8


def _runs_on(device: str | BindParameter[str] | None) -> Any:
    """The chunks of the evaluation workers (None), or of one booked device."""
    return JobChunk.device.is_(None) if device is None else JobChunk.device == device


def _fairest_queued(device: BindParameter[str] | None) -> Select[Any]:
    """The next chunk to claim among those that run on ``device`` (None: the evaluation
    workers; a bind parameter: one booked device), with what its worker needs of its job."""
    running = aliased(JobChunk)
    running_of_owner = (
        select(func.count())
        .where(running.state == RUNNING, running.user_id == JobChunk.user_id)
        .correlate(JobChunk)
        .scalar_subquery()
    )
    return (
        select(
            JobChunk.id,
            JobChunk.job_id,
            JobRecord.user_id,
            JobChunk.start,
            JobChunk.stop,
            JobRecord.config_sha256,
            JobRecord.dataset_sha256,
            JobRecord.options,
            JobRecord.samples_done,
            JobRecord.sample_time_s,
        )
        .join(JobRecord, JobRecord.id == JobChunk.job_id)
        .where(JobChunk.state == QUEUED, JobRecord.state.in_(UNFINISHED), _runs_on(device))
        .order_by(running_of_owner, JobChunk.job_id, JobChunk.start)
        .limit(1)
        .with_for_update(skip_locked=True, of=JobChunk)
    )


# The statements of a chunk's claim, renewal and finish are built once and run on the session's
# connection, as Core statements (the sessions that run them hold no ORM objects to keep in
# step): building them per call (the aliased subquery above all), loading objects and the
# ORM's execution path cost the daemon more CPU per chunk than the database's work, CPU that
# the evaluation workers need.
_FAIREST_FOR_WORKERS = _fairest_queued(None)
_FAIREST_FOR_DEVICE = _fairest_queued(bindparam("device", type_=String))
_NEXT_OF_JOB = (
    select(JobChunk.id, JobChunk.start, JobChunk.stop)
    .where(
        JobChunk.job_id == bindparam("job_id"),
        JobChunk.state == QUEUED,
        JobChunk.device.is_(None),
        JobChunk.start >= bindparam("after"),
    )
    .order_by(JobChunk.start)
    .limit(CLAIM_MAX_CHUNKS * 2)
    .with_for_update(skip_locked=True)
)
_CHUNKS = JobChunk.id.in_(bindparam("chunk_ids", expanding=True))
_TAKE = (
    update(JobChunk)
    .where(_CHUNKS)
    .values(state=RUNNING, host_name=bindparam("host"), lease_until=bindparam("lease_end"))
)
_START_JOB = (
    update(JobRecord)
    .where(JobRecord.id == bindparam("job_id"), JobRecord.state == JobState.QUEUED.value)
    .values(state=JobState.RUNNING.value, started_at=bindparam("now"))
)
_MARK_DONE = (
    update(JobChunk)
    .where(
        JobChunk.id == bindparam("chunk_id"),
        JobChunk.state == RUNNING,
        JobChunk.host_name == bindparam("host"),
    )
    .values(state=DONE, result=bindparam("rows"), host_name=None, lease_until=None)
    .returning(JobChunk.job_id)
)
# Also takes the job row's lock, so that exactly one finishing chunk sees its job complete.
_COUNT_DONE = (
    update(JobRecord)
    .where(JobRecord.id == bindparam("job_id"), JobRecord.state == JobState.RUNNING.value)
    .values(
        samples_done=JobRecord.samples_done + bindparam("added_samples", type_=Integer),
        sample_time_s=JobRecord.sample_time_s + bindparam("added_time_s", type_=Float),
    )
    .returning(JobRecord.id)
)
_CANCEL_CHUNKS = update(JobChunk).where(_CHUNKS).values(state=CANCELLED, result=None)
_UNDONE = select(func.count()).where(JobChunk.job_id == bindparam("job_id"), JobChunk.state != DONE)


def claim(
    session: Session,
    host: str,
    lease_s: float,
    device: str | None = None,
    workers: int = 1,
    *,
    ahead: bool = False,
) -> Claim | None:
    """Take the fairest queued chunk for ``host``'s ``workers`` (or ``device``), or None when
    nothing is queued for them. For the workers, when the job's samples so far say the chunk
    is quick, the job's next queued chunks come with it: up to ``CLAIM_TARGET_S`` of work, and
    at most a share of what is left, so that the job's last chunks still spread: each worker
    holds two claims (the one it runs and the one sent ahead), so 1/(2 ``workers``).

    ``ahead``: a claim to send to a worker ahead of its running one, which the workers decline
    (None) for a job's last ``workers`` chunks: those go to whichever worker is free first, so
    that no worker waits at the job's end for another's queue of two."""
    if device is None:
        query, params = _FAIREST_FOR_WORKERS, {}
    else:
        query, params = _FAIREST_FOR_DEVICE, {"device": device}
    db = session.connection()
    row = db.execute(query, params).first()
    if row is None:
        session.commit()
        return None
    chunk_id, job_id, user_id, start, stop, config, dataset, options, done, time_s = row
    chunk_ids, bounds = [chunk_id], [start, stop]
    quick = done and time_s > 0
    if device is None and (quick or ahead):
        following = db.execute(_NEXT_OF_JOB, {"job_id": job_id, "after": stop}).all()
        if ahead and len(following) < min(workers, CLAIM_MAX_CHUNKS * 2):
            session.commit()
            return None
        if quick:
            wanted = min(
                math.ceil(CLAIM_TARGET_S / (time_s / done * (stop - start))),
                math.ceil((len(following) + 1) / (2 * max(workers, 1))),
                CLAIM_MAX_CHUNKS,
            )
            for next_id, next_start, next_stop in following[: wanted - 1]:
                if next_start != bounds[-1]:
                    break
                chunk_ids.append(next_id)
                bounds.append(next_stop)
    now = utcnow()
    taken = {"chunk_ids": chunk_ids, "host": host, "lease_end": now + timedelta(seconds=lease_s)}
    db.execute(_TAKE, taken)
    db.execute(_START_JOB, {"job_id": job_id, "now": now})
    session.commit()
    return Claim(tuple(chunk_ids), job_id, user_id, tuple(bounds), config, dataset, options)


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


_HELD = (_CHUNKS, JobChunk.host_name == bindparam("host"), JobChunk.state == RUNNING)
_RELEASE = (
    update(JobChunk)
    .where(*_HELD)
    .values(state=bindparam("new_state"), host_name=None, lease_until=None)
)
_RENEW = update(JobChunk).where(*_HELD).values(lease_until=bindparam("lease_end"))
_STILL_RUNNING = (
    select(JobChunk.id)
    .join(JobRecord, JobRecord.id == JobChunk.job_id)
    .where(*_HELD, JobRecord.state == JobState.RUNNING.value)
)


def renew(session: Session, host: str, chunk_ids: list[int], lease_s: float) -> set[int]:
    """Extend ``host``'s claims; returns the chunks it should stop (cancelled, or no longer
    its own: its lease ran out and another host took them)."""
    if not chunk_ids:
        return set()
    held = {"chunk_ids": chunk_ids, "host": host}
    db = session.connection()
    db.execute(_RENEW, {**held, "lease_end": utcnow() + timedelta(seconds=lease_s)})
    kept = set(db.scalars(_STILL_RUNNING, held))
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


def release(session: Session, claim: Claim, host: str, *, cancelled: bool) -> None:
    """A claim stopped before its end: cancelled with its job, or back in the queue."""
    held = {"chunk_ids": list(claim.chunk_ids), "host": host}
    session.connection().execute(
        _RELEASE, {**held, "new_state": CANCELLED if cancelled else QUEUED}
    )
    session.commit()


def finish(
    session: Session, claim: Claim, host: str, rows: list[dict[str, Any]]
) -> JobRecord | None:
    """Store a claim's rows, each chunk its own; returns the job when this finished its last
    chunk (the caller then summarizes it in the same session and commits). A chunk no longer
    held by ``host`` is dropped: whoever holds it now runs it again."""
    db = session.connection()
    stored, counted = [], []
    for chunk_id, (lo, hi) in zip(claim.chunk_ids, pairwise(claim.bounds), strict=True):
        part = rows[lo - claim.start : hi - claim.start]
        marked = {"chunk_id": chunk_id, "host": host, "rows": {"rows": part}}
        if db.scalar(_MARK_DONE, marked) is not None:
            stored.append(chunk_id)
            counted.extend(part)
    if not stored:
        session.commit()
        return None
    added = {"added_samples": len(counted), "added_time_s": sum(r["time_s"] for r in counted)}
    if db.scalar(_COUNT_DONE, {"job_id": claim.job_id, **added}) is None:
        db.execute(_CANCEL_CHUNKS, {"chunk_ids": stored})  # its job ended meanwhile
        session.commit()
        return None
    if db.scalar(_UNDONE, {"job_id": claim.job_id}):
        session.commit()
        return None
    return session.get(JobRecord, claim.job_id)


def fail(session: Session, claim: Claim, host: str, message: str) -> None:
    """A claim that cannot run fails its job (running it elsewhere would fail the same way),
    unless it ran on a booked device whose booking its owner no longer holds: then it is
    handed over to another device of the job that they still hold (``hand_over``)."""
    chunks = [
        chunk
        for chunk in (session.get(JobChunk, i, with_for_update=True) for i in claim.chunk_ids)
        if chunk is not None and chunk.state == RUNNING and chunk.host_name == host
    ]
    if chunks:
        job = session.get(JobRecord, claim.job_id, with_for_update=True)
        device = chunks[0].device
        if job is not None and job.state in UNFINISHED and device is not None:
            heir, why = hand_over(session, job, device)
            if heir is not None:
                for chunk in chunks:
                    chunk.device, chunk.state = heir, QUEUED
                    chunk.host_name, chunk.lease_until = None, None
                session.commit()
                return
            message += why
        for chunk in chunks:
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


def chunk_rows(session: Session, job_id: int) -> Iterator[list[dict[str, Any]]]:
    """The job's per-sample rows, a finished chunk's at a time, in sample order."""
    results = session.scalars(
        select(JobChunk.result)
        .where(JobChunk.job_id == job_id, JobChunk.state == DONE)
        .order_by(JobChunk.start)
        .execution_options(yield_per=16)
    )
    return (result["rows"] for result in results)
