"""The job queue on both databases: fair claims, leases, restarts, cancel, completion."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from specklab.schemas.jobs import JobState
from specklab.server.jobs import queue
from specklab.server.storage import Database
from specklab.server.storage.tables import JobChunk, JobRecord, User
from specklab.server.storage.types import utcnow

from ..rows import queued_job_row, stored_rows

LEASE_S = 30.0


def add_job(db: Database, user: str, chunks: int) -> int:
    with db.write_session() as session:
        owner = session.scalar(select(User).where(User.name == user))
        if owner is None:
            owner = User(name=user, role="user")
            session.add(owner)
            session.flush()
        job = queued_job_row(owner.id, chunks)
        session.add(job)
        session.flush()
        session.add_all(
            JobChunk(job_id=job.id, user_id=owner.id, start=k, stop=k + 1, state=queue.QUEUED)
            for k in range(chunks)
        )
        session.commit()
        return job.id


def claim(db: Database, host: str = "a") -> queue.Claim | None:
    with db.write_session() as session:
        return queue.claim(session, host, LEASE_S)


def cancel(db: Database, job_id: int) -> None:
    with db.write_session() as session:
        job = session.get(JobRecord, job_id)
        assert job is not None
        queue.end_job(session, job, JobState.CANCELLED)
        session.commit()


def row(time_s: float = 0.5) -> dict:
    return {"label": 0, "prediction": 0, "time_s": time_s}


def test_the_user_with_fewest_running_chunks_goes_next(db: Database) -> None:
    big = add_job(db, "ann", 100)
    small = add_job(db, "bob", 2)
    first = claim(db)
    assert first is not None and (first.job_id, first.start) == (big, 0)
    # ann runs one chunk, bob none: bob's job goes next although ann's is older.
    second = claim(db)
    assert second is not None and second.job_id == small
    # One each running: the oldest job's next chunk.
    third = claim(db)
    assert third is not None and (third.job_id, third.start) == (big, 1)
    fourth = claim(db)
    assert fourth is not None and (fourth.job_id, fourth.start) == (small, 1)
    assert [claim(db).job_id for _ in range(3)] == [big] * 3  # type: ignore[union-attr]


def test_a_chunk_is_claimed_once(db: Database) -> None:
    add_job(db, "ann", 3)
    claims = [claim(db, host) for host in ("a", "b", "c", "d")]
    assert sorted(c.start for c in claims if c is not None) == [0, 1, 2]
    assert claims[-1] is None


def test_expired_leases_and_a_restarting_hosts_chunks_are_queued_again(db: Database) -> None:
    add_job(db, "ann", 3)
    mine, theirs = claim(db, "a"), claim(db, "b")
    assert mine is not None and theirs is not None
    with db.write_session() as session:
        assert queue.requeue(session, now=utcnow()) == 0  # leases still hold
        later = utcnow() + timedelta(seconds=LEASE_S + 1)
        assert queue.requeue(session, now=later) == 2
    again = claim(db, "c")
    assert again is not None and again.start == 0
    with db.write_session() as session:
        assert queue.requeue(session, host="c") == 1
        # The first claimers lost their chunks: their results are not stored, and renewing
        # tells them to stop.
        assert queue.finish(session, mine, "a", [row()]) is None
    with db.write_session() as session:
        assert queue.renew(session, "a", list(mine.chunk_ids), LEASE_S) == set(mine.chunk_ids)


def test_the_last_finished_chunk_completes_the_job(db: Database) -> None:
    job_id = add_job(db, "ann", 2)
    a, b = claim(db), claim(db)
    assert a is not None and b is not None
    with db.write_session() as session:
        assert queue.finish(session, b, "a", [row()]) is None
    with db.write_session() as session:
        job = queue.finish(session, a, "a", [row(0.25)])
        assert job is not None and job.id == job_id
        assert (job.samples_done, job.sample_time_s) == (2, pytest.approx(0.75))
        session.commit()
    with db.session() as session:
        assert [r["time_s"] for r in stored_rows(session, job_id)] == [
            0.25,
            0.5,
        ]


def test_cancelling_a_job_stops_its_running_chunks_and_queues_nothing_more(db: Database) -> None:
    job_id = add_job(db, "ann", 3)
    running = claim(db)
    assert running is not None
    cancel(db, job_id)
    with db.write_session() as session:
        assert queue.renew(session, "a", list(running.chunk_ids), LEASE_S) == set(running.chunk_ids)
    assert claim(db) is None
    with db.write_session() as session:
        queue.release(session, running, "a", cancelled=True)
    with db.session() as session:
        states = session.scalars(select(JobChunk.state).where(JobChunk.job_id == job_id))
        assert set(states) == {queue.CANCELLED}


def test_a_failed_chunk_fails_its_job(db: Database) -> None:
    job_id = add_job(db, "ann", 2)
    first = claim(db)
    assert first is not None
    with db.write_session() as session:
        queue.fail(session, first, "a", "samples 0-0: bad")
    with db.session() as session:
        job = session.get(JobRecord, job_id)
        assert job is not None and (job.state, job.error) == ("failed", "samples 0-0: bad")
    assert claim(db) is None


def test_a_claim_starts_its_job_and_leases_the_chunk_to_its_host(db: Database) -> None:
    job_id = add_job(db, "ann", 2)
    before = utcnow()
    taken = claim(db, "b")
    assert taken is not None and (taken.job_id, taken.start, taken.stop) == (job_id, 0, 1)
    with db.session() as session:
        job = session.get(JobRecord, job_id)
        chunk = session.get(JobChunk, taken.chunk_ids[0])
        assert job is not None and chunk is not None
        assert job.state == JobState.RUNNING and job.started_at is not None
        assert job.started_at >= before
        assert (chunk.state, chunk.host_name) == (queue.RUNNING, "b")
        assert chunk.lease_until is not None
        assert chunk.lease_until >= before + timedelta(seconds=LEASE_S)
    started = job.started_at
    assert claim(db, "c") is not None
    with db.session() as session:
        job = session.get(JobRecord, job_id)
        assert job is not None and job.started_at == started  # the first claim started it


def test_a_chunk_finishing_after_its_job_ended_stores_nothing(db: Database) -> None:
    job_id = add_job(db, "ann", 2)
    running = claim(db)
    assert running is not None
    cancel(db, job_id)
    with db.write_session() as session:
        assert queue.finish(session, running, "a", [row()]) is None
    with db.session() as session:
        chunk = session.get(JobChunk, running.chunk_ids[0])
        job = session.get(JobRecord, job_id)
        assert chunk is not None and job is not None
        assert (chunk.state, chunk.result, chunk.host_name) == (queue.CANCELLED, None, None)
        assert (job.samples_done, job.sample_time_s) == (0, 0.0)
        assert stored_rows(session, job_id) == []


def workers_claim(
    db: Database, workers: int, host: str = "a", *, ahead: bool = False
) -> queue.Claim | None:
    with db.write_session() as session:
        return queue.claim(session, host, LEASE_S, workers=workers, ahead=ahead)


def finish_rows(db: Database, taken: queue.Claim, time_s: float, host: str = "a") -> None:
    rows = [{"label": k, "prediction": k, "time_s": time_s} for k in range(taken.start, taken.stop)]
    with db.write_session() as session:
        if queue.finish(session, taken, host, rows) is not None:
            session.commit()


def test_quick_samples_are_claimed_many_chunks_at_a_time_and_stored_per_chunk(
    db: Database,
) -> None:
    job_id = add_job(db, "ann", 12)
    first = workers_claim(db, workers=2)
    assert first is not None and first.bounds == (0, 1)  # nothing known of its samples yet
    finish_rows(db, first, time_s=0.01)
    # A chunk takes 0.01 s: 10 of them make CLAIM_TARGET_S, but a claim takes at most a
    # quarter of the chunks left (two workers, each holding two claims), so that the others
    # get their share: 3 of the 11 left, then 2 of the 8 left.
    second = workers_claim(db, workers=2)
    assert second is not None and second.bounds == (1, 2, 3, 4)
    third = workers_claim(db, workers=2)
    assert third is not None and third.bounds == (4, 5, 6)
    finish_rows(db, third, time_s=0.01)
    finish_rows(db, second, time_s=0.01)
    with db.session() as session:
        assert [r["label"] for r in stored_rows(session, job_id)] == list(range(6))
        job = session.get(JobRecord, job_id)
        assert job is not None and job.samples_done == 6
        done = session.scalar(
            select(func.count()).where(JobChunk.job_id == job_id, JobChunk.state == queue.DONE)
        )
        assert done == 6  # every chunk keeps its own rows: a restart resumes per chunk


def test_a_jobs_last_chunks_are_not_claimed_ahead_but_left_to_the_first_free_worker(
    db: Database,
) -> None:
    job_id = add_job(db, "ann", 5)
    # Three workers: a claim ahead of a running chunk must leave three chunks behind it.
    for start in (0, 1):
        ahead = workers_claim(db, workers=3, ahead=True)
        assert ahead is not None and ahead.bounds == (start, start + 1)
    assert workers_claim(db, workers=3, ahead=True) is None  # chunk 2: two follow it
    with db.session() as session:
        states = session.scalars(
            select(JobChunk.state).where(JobChunk.job_id == job_id).order_by(JobChunk.start)
        ).all()
        assert states == [queue.RUNNING] * 2 + [queue.QUEUED] * 3  # the declined one waits
    taken = [workers_claim(db, workers=3) for _ in range(3)]
    assert [t.bounds if t else None for t in taken] == [(2, 3), (3, 4), (4, 5)]
    # One worker: its job's last chunk is not claimed ahead either.
    add_job(db, "bob", 1)
    assert workers_claim(db, workers=1, ahead=True) is None
    assert workers_claim(db, workers=1) is not None


def test_a_claim_holds_at_most_claim_max_chunks(db: Database) -> None:
    add_job(db, "ann", 40)
    first = workers_claim(db, workers=1)
    assert first is not None
    # Samples this quick would fill CLAIM_TARGET_S with 100 chunks; slower ones may follow.
    finish_rows(db, first, time_s=0.001)
    merged = workers_claim(db, workers=1)
    assert merged is not None and len(merged.chunk_ids) == queue.CLAIM_MAX_CHUNKS
    assert merged.bounds == tuple(range(1, queue.CLAIM_MAX_CHUNKS + 2))


def test_slow_samples_are_claimed_a_chunk_at_a_time(db: Database) -> None:
    add_job(db, "ann", 10)
    first = workers_claim(db, workers=1)
    assert first is not None
    finish_rows(db, first, time_s=queue.CLAIM_TARGET_S)
    second = workers_claim(db, workers=1)
    assert second is not None and second.bounds == (1, 2)


def test_a_claim_takes_only_consecutive_chunks_still_queued(db: Database) -> None:
    add_job(db, "ann", 10)
    first = workers_claim(db, workers=1)
    assert first is not None
    finish_rows(db, first, time_s=0.001)
    with db.write_session() as session:  # another host runs chunk 4
        session.execute(
            update(JobChunk)
            .where(JobChunk.start == 4)
            .values(state=queue.RUNNING, host_name="b", lease_until=utcnow())
        )
        session.commit()
    merged = workers_claim(db, workers=1)
    assert merged is not None and merged.bounds == (1, 2, 3, 4)
    rest = workers_claim(db, workers=1)
    assert rest is not None and rest.bounds == (5, 6, 7, 8)  # half of the 5 left


def test_a_merged_claim_is_released_renewed_and_finished_chunk_by_chunk(db: Database) -> None:
    job_id = add_job(db, "ann", 11)
    first = workers_claim(db, workers=1)
    assert first is not None
    finish_rows(db, first, time_s=0.001)
    merged = workers_claim(db, workers=1)
    assert merged is not None and merged.bounds == (1, 2, 3, 4, 5, 6)
    with db.write_session() as session:
        queue.release(session, merged, "a", cancelled=False)
    again = workers_claim(db, workers=1)
    assert again is not None and again.chunk_ids == merged.chunk_ids
    # Chunk 2's lease runs out and host b takes it: host a keeps and stores the others only.
    with db.write_session() as session:
        session.execute(
            update(JobChunk)
            .where(JobChunk.id == again.chunk_ids[1])
            .values(host_name="b", lease_until=utcnow())
        )
        session.commit()
    with db.write_session() as session:
        lost = queue.renew(session, "a", list(again.chunk_ids), LEASE_S)
        assert lost == {again.chunk_ids[1]}
    finish_rows(db, again, time_s=0.001)
    with db.session() as session:
        assert [r["label"] for r in stored_rows(session, job_id)] == [
            0,
            1,
            3,
            4,
            5,
        ]
        job = session.get(JobRecord, job_id)
        assert job is not None and (job.samples_done, job.state) == (5, JobState.RUNNING)
        states = session.scalars(
            select(JobChunk.state).where(JobChunk.job_id == job_id).order_by(JobChunk.start)
        )
        assert list(states) == [
            *(queue.DONE, queue.DONE, queue.RUNNING, queue.DONE, queue.DONE, queue.DONE),
            *[queue.QUEUED] * 5,
        ]
