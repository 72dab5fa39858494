"""A chunk whose booked device's booking ended is handed over to another device of its job
that the owner still holds (on both databases): no sample lost or counted twice; the job fails
only when none is left, or when the chunk failed for another reason."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from specklab.schemas.jobs import JobState
from specklab.server.jobs import queue
from specklab.server.storage import Database
from specklab.server.storage.tables import Booking, BookingState, JobChunk, JobRecord, User
from specklab.server.storage.types import utcnow

from ..rows import queued_job_row, stored_rows

LEASE_S = 30.0
DEVICES = ["virtual-speck2fdevkit:0@h", "virtual-speck2fdevkit:1@h", "virtual-speck2fdevkit:2@h"]


def booked_job(db: Database, devices: list[str], chunks: int) -> tuple[int, list[int]]:
    """A job of ``chunks`` one-sample chunks, chunk k on device k mod n, and its owner's
    running bookings of ``devices``; the job id and the booking ids."""
    now = utcnow()
    with db.write_session() as session:
        owner = User(name="owner", role="user")
        stranger = User(name="stranger", role="user")
        session.add_all([owner, stranger])
        session.flush()
        bookings = [
            Booking(
                user_id=owner.id,
                device_id=device,
                starts_at=now - timedelta(minutes=1),
                ends_at=now + timedelta(minutes=30),
            )
            for device in devices
        ]
        session.add_all(bookings)
        job = queued_job_row(owner.id, chunks, options={"devices": devices})
        session.add(job)
        session.flush()
        session.add_all(
            JobChunk(
                job_id=job.id,
                user_id=owner.id,
                start=k,
                stop=k + 1,
                state=queue.QUEUED,
                device=devices[k % len(devices)],
            )
            for k in range(chunks)
        )
        session.commit()
        return job.id, [booking.id for booking in bookings]


def release_booking(db: Database, booking_id: int) -> None:
    with db.write_session() as session:
        booking = session.get(Booking, booking_id)
        assert booking is not None
        booking.state, booking.ended_at = BookingState.RELEASED, utcnow()
        session.commit()


def claim(db: Database, device: str) -> queue.Claim:
    with db.write_session() as session:
        found = queue.claim(session, "h", LEASE_S, device)
    assert found is not None
    return found


def fail(db: Database, running: queue.Claim, message: str) -> None:
    with db.write_session() as session:
        queue.fail(session, running, "h", message)


def chunks_of(db: Database, job_id: int) -> list[tuple[int, str, str | None]]:
    with db.session() as session:
        rows = session.scalars(
            select(JobChunk).where(JobChunk.job_id == job_id).order_by(JobChunk.start)
        )
        return [(chunk.start, chunk.state, chunk.device) for chunk in rows]


def job_row(db: Database, job_id: int) -> JobRecord:
    with db.session() as session:
        job = session.get(JobRecord, job_id)
        assert job is not None
        return job


def finish(db: Database, running: queue.Claim) -> None:
    with db.write_session() as session:
        job = queue.finish(session, running, "h", [{"label": 0, "prediction": 0, "time_s": 0.1}])
        if job is not None:
            queue.end_job(session, job, JobState.DONE)
        session.commit()


def test_a_running_chunk_and_the_queued_ones_go_to_the_next_device_still_booked(
    db: Database,
) -> None:
    job_id, bookings = booked_job(db, DEVICES, 6)
    running = claim(db, DEVICES[1])  # chunk 1, mid-way when its booking is released
    release_booking(db, bookings[1])
    fail(db, running, "the booking of virtual-speck2fdevkit:1@h ended")

    chunks = chunks_of(db, job_id)
    # Device 1's chunks (1 and 4) now wait for device 2, the next in the job's order.
    assert chunks == [
        (0, queue.QUEUED, DEVICES[0]),
        (1, queue.QUEUED, DEVICES[2]),
        (2, queue.QUEUED, DEVICES[2]),
        (3, queue.QUEUED, DEVICES[0]),
        (4, queue.QUEUED, DEVICES[2]),
        (5, queue.QUEUED, DEVICES[2]),
    ]
    job = job_row(db, job_id)
    assert job.state == JobState.RUNNING and job.error is None and job.samples_done == 0

    # Every chunk then runs once: the job counts each sample exactly once.
    for device in (DEVICES[0], DEVICES[0], DEVICES[2], DEVICES[2], DEVICES[2], DEVICES[2]):
        finish(db, claim(db, device))
    job = job_row(db, job_id)
    assert (job.state, job.samples_done) == (JobState.DONE, 6)
    with db.session() as session:
        assert [row["label"] for row in stored_rows(session, job_id)] == [0] * 6


def test_the_hand_over_wraps_around_the_job_s_devices(db: Database) -> None:
    job_id, bookings = booked_job(db, DEVICES, 3)
    running = claim(db, DEVICES[2])
    release_booking(db, bookings[2])
    fail(db, running, "the job's owner no longer holds a booking")
    assert chunks_of(db, job_id)[2] == (2, queue.QUEUED, DEVICES[0])


def test_the_job_fails_when_no_device_of_it_is_booked_any_more(db: Database) -> None:
    job_id, bookings = booked_job(db, DEVICES[:2], 4)
    running = claim(db, DEVICES[0])
    for booking_id in bookings:
        release_booking(db, booking_id)
    fail(db, running, f"the booking of {DEVICES[0]} ended")
    job = job_row(db, job_id)
    assert job.state == JobState.FAILED
    assert job.error == (
        f"the booking of {DEVICES[0]} ended; nor of the job's other devices ({DEVICES[1]})"
    )
    assert {state for _, state, _ in chunks_of(db, job_id)} == {queue.CANCELLED}


def test_a_chunk_that_fails_on_a_device_still_booked_fails_its_job(db: Database) -> None:
    job_id, _ = booked_job(db, DEVICES[:2], 4)
    running = claim(db, DEVICES[0])
    fail(db, running, "the job's files cannot be read")
    job = job_row(db, job_id)
    assert (job.state, job.error) == (JobState.FAILED, "the job's files cannot be read")


def test_another_user_s_booking_of_the_device_does_not_count(db: Database) -> None:
    """The device booked again, by someone else: the chunk still leaves it."""
    job_id, bookings = booked_job(db, DEVICES[:2], 2)
    running = claim(db, DEVICES[0])
    release_booking(db, bookings[0])
    with db.write_session() as session:
        stranger = session.scalar(select(User).where(User.name == "stranger"))
        assert stranger is not None
        session.add(
            Booking(
                user_id=stranger.id,
                device_id=DEVICES[0],
                starts_at=utcnow() - timedelta(seconds=1),
                ends_at=utcnow() + timedelta(minutes=5),
            )
        )
        session.commit()
    fail(db, running, "the job's owner no longer holds a booking")
    assert chunks_of(db, job_id)[0] == (0, queue.QUEUED, DEVICES[1])
