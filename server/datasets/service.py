"""Upload, list, read and delete datasets.

An upload is stored under its sha256 in ``data_dir/datasets``, next to its canonical form
(``formats.Samples`` as ``.samples.npz``) that jobs read; the same bytes uploaded again are
stored once, whoever uploads them, and each upload gets its owner's own row. What a user's
datasets hold counts against their dataset quota. A dataset that unfinished jobs read cannot
be deleted.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

import anyio
import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from specklab.schemas.errors import DomainError
from specklab.schemas.events import DVS_DTYPE
from specklab.schemas.jobs import DatasetInfo, JobState

from ..auth.ownership import get_owned, visible_rows
from ..auth.principal import Principal
from ..auth.quota import check_quota
from ..recordings import RecordingService
from ..storage import Database
from ..storage.blobs import BlobStore, Incoming, sha256_hex
from ..storage.public import public
from ..storage.tables import DatasetRecord, JobRecord, User
from .formats import DatasetError, Samples, load_canonical, save_canonical
from .isolated import ParseLimits, read_isolated

SAMPLES = ".samples.npz"
_UNFINISHED = (JobState.QUEUED, JobState.RUNNING)


def invalid(message: str) -> DomainError:
    return DomainError(422, "invalid_dataset", message)


@dataclass(frozen=True, slots=True)
class DatasetLimits:
    max_upload_bytes: int
    max_events: int
    quota_bytes: int

    @property
    def parse(self) -> ParseLimits:
        # An archive of recordings may unpack to what an upload may hold, four times over.
        return ParseLimits(self.max_events, max_unpacked_bytes=4 * self.max_upload_bytes)


class DatasetService:
    def __init__(self, store: BlobStore, db: Database, limits: DatasetLimits) -> None:
        self.store = store
        self.db = db
        self.limits = limits
        # Held while blobs gain or lose the rows that refer to them.
        self._references = threading.Lock()

    async def upload(self, user: Principal, file: Incoming, name: str) -> DatasetInfo:
        """Keep a received upload once it reads as a dataset (422 otherwise)."""
        try:
            kind, samples = await anyio.to_thread.run_sync(
                read_isolated, file.flushed(), self.limits.parse
            )
        except DatasetError as exc:
            raise invalid(str(exc)) from exc
        canonical = await anyio.to_thread.run_sync(save_canonical, samples)
        # Both are kept, and a small compressed upload can hold a large dataset: the quota
        # counts what is stored.
        stored = file.size + len(canonical)
        return await self._keep(user, name, kind, file.digest, stored, samples, canonical, file)

    async def from_recordings(
        self,
        user: Principal,
        recordings: RecordingService,
        ids: list[int],
        labels: list[int],
        name: str,
    ) -> DatasetInfo:
        """A dataset of the user's DVS recordings, one sample each, labelled ``labels``."""
        if len(ids) != len(labels):
            raise invalid(f"{len(ids)} recordings but {len(labels)} labels")
        parts = []
        for recording_id in ids:
            events = await recordings.events(user, recording_id)
            if events.dtype != DVS_DTYPE:
                raise invalid(f"recording {recording_id} holds spikes, not DVS events")
            parts.append(events)
        sizes = [len(part) for part in parts]
        if sum(sizes) > self.limits.max_events:
            raise invalid(f"the recordings hold more than {self.limits.max_events} events")

        def canonical() -> tuple[Samples, bytes]:
            events = np.concatenate(parts) if parts else np.zeros(0, DVS_DTYPE)
            offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            for start, end in itertools.pairwise(offsets):
                if end > start:
                    events["t"][start:end] -= events["t"][start]
            samples = Samples(events, offsets, np.asarray(labels, np.int64))
            return samples, save_canonical(samples)

        samples, data = await anyio.to_thread.run_sync(canonical)
        digest = sha256_hex(data)
        return await self._keep(user, name, "recordings", digest, len(data), samples, data, None)

    async def _keep(
        self,
        user: Principal,
        name: str,
        kind: str,
        digest: str,
        size: int,
        samples: Samples,
        canonical: bytes,
        upload: Incoming | None,
    ) -> DatasetInfo:
        events = samples.events
        longest, largest = _figures(samples)
        record = DatasetRecord(
            user_id=user.id,
            name=name,
            sha256=digest,
            format=kind,
            samples=len(samples),
            events=len(events),
            classes=int(samples.labels.max()) + 1,
            max_x=int(events["x"].max()) if len(events) else 0,
            max_y=int(events["y"].max()) if len(events) else 0,
            max_p=int(events["p"].max()) if len(events) else 0,
            longest_sample_us=longest,
            largest_sample_events=largest,
            size_bytes=size,
        )

        def store(session: Session) -> None:
            with self._references:
                check_quota(session, DatasetRecord, user, digest, size, self.limits.quota_bytes)
                if upload is not None:
                    upload.commit()
                self.store.put(canonical, SAMPLES, digest=digest)
                self.store.share(session, digest, SAMPLES, canonical)
                session.add(record)
                session.commit()

        await self.db.run(store, write=True)
        return _public(record, user.name)

    def list(self, session: Session, user: Principal) -> list[DatasetInfo]:
        rows = visible_rows(session, DatasetRecord, user)
        return [_public(record, owner) for record, owner in rows]

    def get(self, session: Session, user: Principal, dataset_id: int) -> DatasetRecord:
        return get_owned(session, DatasetRecord, dataset_id, user, what="dataset")

    def info(self, session: Session, user: Principal, dataset_id: int) -> DatasetInfo:
        record = self.get(session, user, dataset_id)
        owner = session.get(User, record.user_id)
        return _public(record, owner.name if owner else "")

    async def with_figures(self, record: DatasetRecord) -> DatasetRecord:
        """``record`` with its per-sample figures (``longest_sample_us``,
        ``largest_sample_events``), which datasets stored before migration 0009 lack: computed
        from the stored canonical arrays the first time a job needs them, and stored in every
        row of the same bytes."""
        if record.events == 0 or record.largest_sample_events > 0:
            return record  # known (a dataset with events has a sample with one)
        samples = await anyio.to_thread.run_sync(self.samples, record.sha256)
        longest, largest = _figures(samples)

        def store(session: Session) -> DatasetRecord:
            session.execute(
                update(DatasetRecord)
                .where(
                    DatasetRecord.sha256 == record.sha256,
                    DatasetRecord.largest_sample_events == 0,
                )
                .values(longest_sample_us=longest, largest_sample_events=largest)
            )
            session.commit()
            found = session.get(DatasetRecord, record.id)
            if found is None:  # deleted meanwhile: 404 as for any dataset that is gone
                raise DomainError(404, "dataset_not_found", f"no dataset {record.id}")
            session.expunge(found)
            return found

        return await self.db.run(store, write=True)

    def samples(self, digest: str) -> Samples:
        data = self.store.get(digest, SAMPLES)
        if data is None:
            raise DomainError(
                404, "dataset_not_found", "the dataset's events are gone from the store"
            )
        return load_canonical(data)

    def delete(self, session: Session, user: Principal, dataset_id: int) -> None:
        record = self.get(session, user, dataset_id)
        digest = record.sha256
        with self._references:
            running = session.scalar(
                select(JobRecord.id).where(
                    JobRecord.dataset_id == record.id, JobRecord.state.in_(_UNFINISHED)
                )
            )
            if running is not None:
                raise DomainError(
                    409,
                    "dataset_in_use",
                    f"job {running} is evaluating this dataset; cancel it or wait for it",
                )
            session.delete(record)
            session.commit()
            # Another row, or another user's job, may still read the same bytes.
            still_used = session.scalar(
                select(DatasetRecord.id).where(DatasetRecord.sha256 == digest)
            ) or session.scalar(
                select(JobRecord.id).where(
                    JobRecord.dataset_sha256 == digest, JobRecord.state.in_(_UNFINISHED)
                )
            )
            if still_used is None:
                self.store.unshare(session, digest, SAMPLES)
                session.commit()
                self.store.delete(digest)
                self.store.delete(digest, SAMPLES)


def _figures(samples: Samples) -> tuple[int, int]:
    """The longest sample's span (us) and the most events of one sample."""
    sizes = np.diff(samples.offsets)
    return samples.longest_us(), int(sizes.max()) if len(sizes) else 0


def _public(record: DatasetRecord, owner: str) -> DatasetInfo:
    return public(DatasetInfo, record, owner=owner)
