"""Record a device's DVS sensor (or its monitored layers) for a while, keep the events, export
them, replay them into a device.

Events are kept as ``data_dir/recordings/<id>.npy`` (a structured array of the schemas' dtype,
readable with ``np.load`` alone). A recording stops early, keeping what it has, once it holds
``max_events`` or fills its owner's storage; its ``duration_s`` then says how long it ran.

Files are only ever written under a temporary name and renamed to ``<id>.*`` while the row is
locked and known to exist, and deleting a row removes its files after the row is gone: an
export still running when its recording is deleted is thrown away, never left as a file.
Ids are never reused (migration 0003), so no file can be served as another recording.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import anyio
import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from specklab.schemas.errors import DomainError
from specklab.schemas.events import DTYPES, EventKind, copy_events
from specklab.schemas.frames import FrameError
from specklab.schemas.inputs import InputCheck
from specklab.schemas.recordings import Recording, RecordingRequest, ReplayRequest

from ..auth.ownership import get_owned, visible_rows
from ..auth.principal import Principal
from ..deployments import Deployments, DeviceHub, EndReason, OutputSubscription
from ..storage import Database
from ..storage.audit import audit
from ..storage.lab_blobs import LabBlobs
from ..storage.public import public
from ..storage.tables import RecordingRecord, User
from .aedat import ExportFailed, export_aedat4


@dataclass(frozen=True, slots=True)
class RecordingLimits:
    #: Events one recording keeps at most.
    max_events: int
    #: Recordings one user may run at once (on this daemon).
    concurrent_per_user: int
    #: Bytes of events one user may keep stored.
    storage_per_user: int


@dataclass(eq=False, repr=False, kw_only=True)
class RecordingService:
    root: Path
    db: Database
    deployments: Deployments
    limits: RecordingLimits
    #: The lab's copy of the ``.npy`` files, for hosts sharing a database.
    lab: LabBlobs | None = None
    _running: dict[int, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def npy_path(self, recording_id: int) -> Path:
        return self.root / f"{recording_id}.npy"

    def _local_npy(self, recording_id: int) -> Path:
        """The recording's ``.npy`` here, fetched from the lab's copy when another host made
        it (missing when neither has it)."""
        path = self.npy_path(recording_id)
        if self.lab is not None and not path.exists():
            data = self.lab.fetch(path.name)
            if data is not None:
                partial = self._partial_path(recording_id, ".npy")
                partial.write_bytes(data)
                partial.replace(path)
        return path

    def aedat4_path(self, recording_id: int) -> Path:
        return self.root / f"{recording_id}.aedat4"

    def _partial_path(self, recording_id: int, suffix: str) -> Path:
        return self.root / f".partial-{uuid.uuid4().hex}-{recording_id}{suffix}"

    # ----- recording -----

    async def record(self, user: Principal, request: RecordingRequest) -> Recording:
        if not user.can_write:
            raise DomainError(403, "read_only", "observers cannot record")
        kind = EventKind.DVS if request.source == "dvs" else EventKind.SPIKE
        with self._one_more_running(user):
            max_events = await self._room_for(user, kind)
            if request.source == "dvs":
                sensor_hub = self.deployments.sensor_hub(user, request.device_id, raw=True)
                async with sensor_hub as hub, hub.sensor():
                    events, seconds = await self._capture(hub, kind, request.duration_s, max_events)
            else:
                hub = await self.deployments.hub_for_use(user, request.device_id)
                events, seconds = await self._capture(hub, kind, request.duration_s, max_events)
            return await self._store(user, request, events, seconds)

    @contextmanager
    def _one_more_running(self, user: Principal) -> Iterator[None]:
        running = self._running.get(user.id, 0)
        if running >= self.limits.concurrent_per_user:
            raise DomainError(
                409,
                "too_many_recordings",
                f"you have {running} recordings running; at most "
                f"{self.limits.concurrent_per_user} may run at once",
                {"limit": self.limits.concurrent_per_user},
            )
        self._running[user.id] = running + 1
        try:
            yield
        finally:
            self._running[user.id] -= 1
            if not self._running[user.id]:
                del self._running[user.id]

    async def _room_for(self, user: Principal, kind: EventKind) -> int:
        """How many events of ``kind`` fit in ``user``'s storage (413 when none do)."""

        def used(session: Session) -> int:
            total = session.scalar(
                select(func.coalesce(func.sum(RecordingRecord.size_bytes), 0)).where(
                    RecordingRecord.user_id == user.id
                )
            )
            return int(total or 0)

        in_use = await self.db.run(used)
        room = (self.limits.storage_per_user - in_use) // DTYPES[kind].itemsize
        if room <= 0:
            raise DomainError(
                413,
                "storage_full",
                f"your recordings take {in_use} bytes, the limit is "
                f"{self.limits.storage_per_user}: delete some first",
                {"used_bytes": in_use, "limit_bytes": self.limits.storage_per_user},
            )
        return min(self.limits.max_events, room)

    async def _capture(
        self, hub: DeviceHub, kind: EventKind, duration_s: float, max_events: int
    ) -> tuple[np.ndarray, float]:
        """Events of ``kind`` that leave ``hub`` for ``duration_s`` (at most ``max_events``),
        timed from the start."""
        parts: list[np.ndarray] = []
        count = 0
        # Alone on the device, the stopwatch restarts so times count from the recording's
        # start; next to other consumers it runs on and times are shifted instead.
        restarted = await hub.restart_stopwatch()
        async with hub.subscribe(max_events=max_events) as subscription:
            started = time.monotonic()
            while (remaining := duration_s - (time.monotonic() - started)) > 0:
                events = await _next_events(subscription, kind, remaining)
                if events is None:
                    continue
                parts.append(events)
                count += len(events)
                if count >= max_events:
                    break
            elapsed = min(duration_s, time.monotonic() - started)
        events = np.concatenate(parts) if parts else np.zeros(0, DTYPES[kind])
        if not restarted and len(events):
            events["t"] -= events["t"][0]
        # The device's clock and this loop's differ by a read: keep the recording's window.
        events = events[events["t"] < int(elapsed * 1e6)][:max_events]
        return events, elapsed

    async def _store(
        self, user: Principal, request: RecordingRequest, events: np.ndarray, seconds: float
    ) -> Recording:
        kind = EventKind.DVS if request.source == "dvs" else EventKind.SPIKE

        def insert(session: Session) -> RecordingRecord:
            record = RecordingRecord(
                user_id=user.id,
                name=request.name or f"{request.source} of {request.device_id}",
                device_id=request.device_id,
                source=request.source,
                kind=kind.value,
                duration_s=seconds,
                event_count=len(events),
                size_bytes=events.nbytes,
            )
            session.add(record)
            session.flush()
            partial = self._partial_path(record.id, ".npy")
            np.save(partial, events, allow_pickle=False)
            partial.replace(self.npy_path(record.id))
            if self.lab is not None:
                self.lab.put(session, f"{record.id}.npy", self.npy_path(record.id).read_bytes())
            audit(
                session,
                user,
                "recording.create",
                f"recording:{record.id}",
                {"device_id": request.device_id, "events": len(events)},
            )
            session.commit()
            return record

        record = await self.db.run(insert, write=True)
        return _public(record, user.name)

    # ----- the stored recordings -----

    async def list(self, user: Principal) -> list[Recording]:
        def query(session: Session) -> list[Recording]:
            rows = visible_rows(session, RecordingRecord, user)
            return [_public(record, owner) for record, owner in rows]

        return await self.db.run(query)

    async def get(self, user: Principal, recording_id: int) -> Recording:
        def query(session: Session) -> Recording:
            record = get_owned(session, RecordingRecord, recording_id, user, what="recording")
            return _public(record, record_owner(session, record))

        return await self.db.run(query)

    async def events(self, user: Principal, recording_id: int) -> np.ndarray:
        await self.get(user, recording_id)
        try:
            return await anyio.to_thread.run_sync(
                lambda: np.load(self._local_npy(recording_id), allow_pickle=False)
            )
        except FileNotFoundError:
            await self.get(user, recording_id)  # deleted meanwhile: 404
            raise

    async def open_aedat4(self, user: Principal, recording_id: int) -> BinaryIO:
        """The recording as an AEDAT4 file, open for reading (made on first download, then
        kept). Opened, then the row checked again: a file deleted with its row after the
        check is still read whole; a row deleted before it is a 404."""
        path = await self._aedat4(user, recording_id)
        try:
            handle = await anyio.to_thread.run_sync(path.open, "rb")
        except FileNotFoundError:
            handle = None
        try:
            await self.get(user, recording_id)
        except DomainError:
            if handle is not None:
                handle.close()
            raise
        if handle is None:
            raise DomainError(
                409, "recording_changed", "the export was removed meanwhile; try again"
            )
        return handle

    async def _aedat4(self, user: Principal, recording_id: int) -> Path:
        recording = await self.get(user, recording_id)
        if recording.kind is not EventKind.DVS:
            raise DomainError(
                422,
                "not_dvs",
                f"recording {recording_id} holds {recording.kind.value} events; "
                "only DVS recordings export to AEDAT4 (download the .npy instead)",
            )
        path = self.aedat4_path(recording_id)
        if path.exists():
            return path
        partial = self._partial_path(recording_id, ".aedat4")
        try:
            try:
                npy = await anyio.to_thread.run_sync(self._local_npy, recording_id)
                await export_aedat4(npy, partial)
            except ExportFailed as exc:
                await self.get(user, recording_id)  # deleted during the export: 404
                raise DomainError(500, "export_failed", str(exc)) from exc
            await self.db.run(
                lambda session: self._land(session, recording_id, partial), write=True
            )
        finally:
            partial.unlink(missing_ok=True)
        return path

    def _land(self, session: Session, recording_id: int, partial: Path) -> None:
        """Rename an export to its final name, only while its row is locked and exists."""
        if session.get(RecordingRecord, recording_id, with_for_update=True) is None:
            raise DomainError(404, "recording_not_found", f"no recording {recording_id}")
        partial.replace(self.aedat4_path(recording_id))
        session.commit()

    async def delete(self, user: Principal, recording_id: int) -> None:
        if not user.can_write:
            raise DomainError(403, "read_only", "observers cannot delete recordings")

        def remove(session: Session) -> None:
            record = get_owned(session, RecordingRecord, recording_id, user, what="recording")
            session.delete(record)
            if self.lab is not None:
                self.lab.delete(session, f"{recording_id}.npy")
            audit(session, user, "recording.delete", f"recording:{recording_id}", None)
            session.commit()

        await self.db.run(remove, write=True)
        # After the commit: an export landing now finds no row (``_land``).
        self.npy_path(recording_id).unlink(missing_ok=True)
        self.aedat4_path(recording_id).unlink(missing_ok=True)

    async def replay(self, user: Principal, recording_id: int, request: ReplayRequest) -> int:
        """Send a DVS recording into the DVS layer of the user's deployment, paced by the
        device's stopwatch (restarted), ``speed`` times real time. Returns the event count."""
        recording = await self.get(user, recording_id)
        if recording.kind is not EventKind.DVS:
            raise DomainError(
                422, "not_dvs", "only DVS recordings replay (into the DVS layer of a deployment)"
            )
        hub = await self.deployments.hub_for_use(user, request.device_id)
        if not hub.deployment.dvs_input:
            raise DomainError(
                409,
                "no_dvs_input",
                f"the deployment on {request.device_id} takes no DVS input: "
                "compile the model with dvs_input",
            )
        events = await self.events(user, recording_id)
        events = copy_events(events)
        events["t"] = (events["t"] / request.speed).astype(events["t"].dtype)
        try:
            events = InputCheck(hub.config).events(EventKind.DVS, events)
        except FrameError as exc:
            raise DomainError(422, exc.code, exc.message) from None
        await hub.restart_stopwatch(only_if_alone=False)
        await hub.write(None, events)
        return len(events)


async def _next_events(
    subscription: OutputSubscription, kind: EventKind, timeout: float
) -> np.ndarray | None:
    try:
        item = await asyncio.wait_for(subscription.get(), timeout)
    except TimeoutError:
        return None
    if isinstance(item, EndReason):
        raise DomainError(409, item.code, f"the recording stopped: {item.message}")
    events = item.dvs if kind is EventKind.DVS else item.spikes
    return events if len(events) else None


def record_owner(session: Session, record: RecordingRecord) -> str:
    owner = session.get(User, record.user_id)
    return owner.name if owner else ""


def _public(record: RecordingRecord, owner: str) -> Recording:
    return public(Recording, record, owner=owner)
