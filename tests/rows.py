"""Rows of the tables users own, with placeholder values: for tests that need such a row to exist
(ownership, ids, queues) rather than what it holds."""

from __future__ import annotations

from itertools import chain
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from specklab.server.jobs import queue
from specklab.server.storage.tables import DatasetRecord, JobRecord, ModelRecord, RecordingRecord

T = TypeVar("T", ModelRecord, RecordingRecord, DatasetRecord, JobRecord)

#: What each table's rows hold unless a test says otherwise (only the columns the table has
#: had from its first migration, so that a row also fits the schema a migration test starts at).
_PLACEHOLDERS: dict[type, dict[str, Any]] = {
    ModelRecord: dict(
        name="m", sha256="0" * 64, options_key="0" * 64, options={}, format="nir", size_bytes=1
    ),
    RecordingRecord: dict(
        name="r",
        device_id="d:0",
        source="dvs",
        kind="dvs",
        duration_s=1.0,
        event_count=0,
        size_bytes=0,
    ),
    DatasetRecord: dict(
        name="d",
        sha256="0" * 64,
        format="npz",
        samples=1,
        events=0,
        classes=1,
        max_x=0,
        max_y=0,
        max_p=0,
        size_bytes=1,
    ),
    JobRecord: dict(
        model_id=1,
        dataset_id=1,
        dataset_sha256="0" * 64,
        config_sha256="0" * 64,
        options={},
        reproducibility={},
        layers=[],
        state="queued",
        samples=1,
    ),
}


def placeholder_row(table: type[T], user_id: int, **columns: Any) -> T:
    """A row of ``table`` owned by ``user_id``: ``columns``, and placeholders for the rest."""
    return table(user_id=user_id, **{**_PLACEHOLDERS[table], **columns})


def queued_job_row(user_id: int, samples: int, **columns: Any) -> JobRecord:
    """A queued job of ``samples`` samples, none done, for the queue's tests."""
    return placeholder_row(
        JobRecord,
        user_id,
        dataset_sha256="d" * 64,
        config_sha256="c" * 64,
        layers=[0],
        samples=samples,
        samples_done=0,
        sample_time_s=0.0,
        **columns,
    )


def stored_rows(session: Session, job_id: int) -> list[dict[str, Any]]:
    """A job's per-sample rows stored so far, in sample order."""
    return list(chain.from_iterable(queue.chunk_rows(session, job_id)))
