"""ORM tables. The schema changes only through migrations (``migrations/versions``); a test
checks that the migrations produce exactly these tables."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    String,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from .types import UtcDateTime, utcnow


class BookingState(StrEnum):
    """What the table stores; the public status also needs the clock (``booking_status``)."""

    ACTIVE = "active"
    CANCELLED = "cancelled"
    RELEASED = "released"
    PREEMPTED = "preempted"
    EXPIRED = "expired"


_STATE_LIST = ", ".join(f"'{state}'" for state in BookingState)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map: ClassVar = {datetime: UtcDateTime()}


#: SQLite hands out ids again (largest + 1) without AUTOINCREMENT; ids must never be reused
#: (migration 0003). PostgreSQL's sequences never are.
_NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


class _UsersRow:
    """The columns of a row that one user owns: an id never reused, and the owner (the row goes
    with its user)."""

    __table_args__ = _NEVER_REUSE_IDS

    # sort_order: first in the table, as the migrations create them.
    id: Mapped[int] = mapped_column(primary_key=True, sort_order=-1)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, sort_order=-1
    )


class User(Base):
    __tablename__ = "users"
    __table_args__ = _NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = _NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    #: sha256 of the whole token, hex: the token itself is never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(lazy="joined")


class Booking(Base):
    """A device held by one user for ``[starts_at, ends_at)``.

    ``device_id`` is a plain string, not a foreign key: bookings outlive a device going offline.
    Two active bookings of one device never overlap: PostgreSQL enforces it with an exclusion
    constraint, SQLite with triggers (both created in the migration).
    """

    __tablename__ = "bookings"
    __table_args__ = (
        CheckConstraint("ends_at > starts_at", name="window"),
        CheckConstraint(f"state IN ({_STATE_LIST})", name="state"),
        Index(None, "device_id", "starts_at"),
        _NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    device_id: Mapped[str] = mapped_column(String(128))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16), default=BookingState.ACTIVE)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
    #: The holder's last use of the booking (deploy, stream, heartbeat, a call naming it);
    #: ``None`` until the first. The column keeps its first name, from when only heartbeats
    #: counted.
    lease_renewed_at: Mapped[datetime | None]
    #: Why the booking ended early, in words for its holder (``None`` while active).
    end_reason: Mapped[str | None] = mapped_column(String(300))
    #: Booked by type for the next free slot, later than asked: the device type whose first
    #: device to free early takes the booking at once (``None`` otherwise, and once started).
    waits_for_type: Mapped[str | None] = mapped_column(String(64))

    user: Mapped[User] = relationship(lazy="joined")


class Host(Base):
    """A daemon of the lab: where clients reach the devices it serves."""

    __tablename__ = "hosts"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    url: Mapped[str] = mapped_column(String(512))
    last_seen_at: Mapped[datetime]


class DeviceRecord(Base):
    """A device as the lab knows it, upserted by the daemon that serves it."""

    __tablename__ = "devices"

    #: Unique in the lab (``devices/naming.py``).
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    #: The guide's ``TYPE:INDEX`` on its host: unique per host, not in the lab.
    name: Mapped[str] = mapped_column(String(128), index=True)
    device_type: Mapped[str] = mapped_column(String(64))
    host_name: Mapped[str] = mapped_column(ForeignKey("hosts.name"), index=True)
    #: False once the serving daemon no longer sees the device (unplugged).
    present: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime]

    host: Mapped[Host] = relationship(lazy="joined")


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = _NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    #: Kept as text so the entry still reads right after the user is gone.
    actor_name: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(256))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    host_name: Mapped[str] = mapped_column(String(128))


class ModelRecord(_UsersRow, Base):
    """An uploaded model. The upload and its compiled forms live in the content-addressed
    store under ``sha256``; a row is one user's handle on them."""

    __tablename__ = "models"

    name: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    #: sha256 of the canonical compile options: with ``sha256``, the compiled result's key.
    options_key: Mapped[str] = mapped_column(String(64))
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    format: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RecordingRecord(_UsersRow, Base):
    """Events captured from a device; the events are a ``.npy`` file in the data directory."""

    __tablename__ = "recordings"

    name: Mapped[str] = mapped_column(String(200))
    device_id: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    duration_s: Mapped[float] = mapped_column(Float)
    event_count: Mapped[int]
    size_bytes: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetRecord(_UsersRow, Base):
    """An uploaded, labelled event dataset. The upload and its canonical form live in the
    content-addressed store under ``sha256``; a row is one user's handle on them."""

    __tablename__ = "datasets"

    name: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    format: Mapped[str] = mapped_column(String(16))
    samples: Mapped[int]
    events: Mapped[int] = mapped_column(BigInteger)
    classes: Mapped[int]
    max_x: Mapped[int]
    max_y: Mapped[int]
    max_p: Mapped[int]
    #: The longest sample's span (its last event's time + 1) and the most events of one
    #: sample, for the per-sample limits of jobs (``jobs/limits.py``).
    longest_sample_us: Mapped[int] = mapped_column(BigInteger, server_default="0")
    largest_sample_events: Mapped[int] = mapped_column(BigInteger, server_default="0")
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobRecord(_UsersRow, Base):
    """An evaluation job: a model's chip configuration run over a dataset, in chunks."""

    __tablename__ = "jobs"

    #: Plain ids, not foreign keys: a job's results outlive the model and dataset rows.
    model_id: Mapped[int]
    dataset_id: Mapped[int]
    dataset_sha256: Mapped[str] = mapped_column(String(64))
    #: The configuration the job runs, in the job store under this digest.
    config_sha256: Mapped[str] = mapped_column(String(64))
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    reproducibility: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: The model layers counted, in the order of each row's per-layer columns.
    layers: Mapped[list[int]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)
    samples: Mapped[int]
    samples_done: Mapped[int] = mapped_column(default=0)
    #: Seconds of sample runs summed over finished chunks.
    sample_time_s: Mapped[float] = mapped_column(Float, default=0.0)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: The per-sample columns as the ``.npz`` users download, made once with the summary
    #: (building it from a large job's rows costs seconds and a gigabyte); loaded only when
    #: read. None: a job finished before migration 0010, or not done.
    samples_npz: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    error: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class JobChunk(Base):
    """A run of consecutive samples of a job: what one worker claims (``jobs/queue.py``)."""

    __tablename__ = "job_chunks"
    __table_args__ = (Index(None, "state", "user_id"), _NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    #: The job's owner, repeated so fair claiming counts running chunks per user in one table.
    user_id: Mapped[int]
    start: Mapped[int]
    stop: Mapped[int]
    state: Mapped[str] = mapped_column(String(16))
    #: The booked device that runs it (one of ``JobOptions.devices``; another of them after a
    #: hand-over); None: the evaluation workers.
    device: Mapped[str | None] = mapped_column(String(128))
    #: The host running it and until when its claim holds without renewal.
    host_name: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None]
    #: Per-sample rows (``jobs/evaluate.py``), once done.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class LabBlob(Base):
    """A stored file of one of the data dir's stores (``models``, ``compiled``,
    ``recordings``), kept in the database for every host of the lab (``storage/lab_blobs.py``)."""

    __tablename__ = "lab_blobs"

    store: Mapped[str] = mapped_column(String(16), primary_key=True)
    #: The file's name in its store (``<sha256>``, ``<key>.report.json``, ``<id>.npy``).
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    #: Of the whole content: checked by every host that fetches it.
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    chunks: Mapped[int]


class LabBlobChunk(Base):
    __tablename__ = "lab_blob_chunks"

    store: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    seq: Mapped[int] = mapped_column(primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


def is_booking_overlap(error: IntegrityError) -> bool:
    """Whether a flush failed on the database's no-overlap rule (see the first migration)."""
    sqlstate = getattr(error.orig, "sqlstate", None)
    return sqlstate == "23P01" or "booking_overlap" in str(error.orig)
