"""Record a device's DVS sensor (or its monitored layers) for a while, keep the events, export
them, replay them into a device.

Events are kept as ``data_dir/recordings/<id>.npy`` (a structured array of the schemas' dtype,
readable with ``np.load`` alone). A recording stops early, keeping what it has, once it holds
``max_events``; its ``duration_s`` then says how long it really ran.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import anyio
import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from specklab.schemas.events import DTYPES, EventKind
from specklab.schemas.recordings import Recording, RecordingRequest, ReplayRequest

from ..auth.ownership import get_owned, visible_to
from ..auth.principal import Principal
from ..deployments import Deployments, DeviceHub, EndReason, OutputSubscription
from ..errors import ApiError
from ..storage import Database
from ..storage.audit import audit
from ..storage.tables import RecordingRecord, User
from .aedat import ExportFailed, export_aedat4


class RecordingService:
    def __init__(
        self, *, root: Path, db: Database, deployments: Deployments, max_events: int
    ) -> None:
        self.root = root
        self.db = db
        self.deployments = deployments
        self.max_events = max_events
        root.mkdir(parents=True, exist_ok=True)

    def npy_path(self, recording_id: int) -> Path:
        return self.root / f"{recording_id}.npy"

    # ----- recording -----

    async def record(self, user: Principal, request: RecordingRequest) -> Recording:
        if not user.can_write:
            raise ApiError(403, "read_only", "observers cannot record")
        if request.source == "dvs":
            sensor_hub = self.deployments.sensor_hub(user, request.device_id, raw=True)
            async with sensor_hub as hub, hub.sensor():
                events, seconds = await self._capture(hub, EventKind.DVS, request.duration_s)
        else:
            hub = await self.deployments.hub_for_use(user, request.device_id)
            events, seconds = await self._capture(hub, EventKind.SPIKE, request.duration_s)
        return await self._store(user, request, events, seconds)

    async def _capture(
        self, hub: DeviceHub, kind: EventKind, duration_s: float
    ) -> tuple[np.ndarray, float]:
        """Events of ``kind`` that leave ``hub`` for ``duration_s``, timed from the start."""
        parts: list[np.ndarray] = []
        count = 0
        # Alone on the device, the stopwatch restarts so times count from the recording's
        # start; next to other consumers it runs on and times are shifted instead.
        restarted = await hub.restart_stopwatch()
        async with hub.subscribe(max_events=self.max_events) as subscription:
            started = time.monotonic()
            while (remaining := duration_s - (time.monotonic() - started)) > 0:
                events = await _next_events(subscription, kind, remaining)
                if events is None:
                    continue
                parts.append(events)
                count += len(events)
                if count >= self.max_events:
                    break
            elapsed = min(duration_s, time.monotonic() - started)
        events = np.concatenate(parts) if parts else np.zeros(0, DTYPES[kind])
        if not restarted and len(events):
            events["t"] -= events["t"][0]
        # The device's clock and this loop's differ by a read: keep the recording's window.
        events = events[events["t"] < int(elapsed * 1e6)][: self.max_events]
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
            partial = self.npy_path(record.id).with_suffix(".partial.npy")
            np.save(partial, events, allow_pickle=False)
            partial.replace(self.npy_path(record.id))
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
            rows = session.execute(
                visible_to(
                    select(RecordingRecord, User.name).join(
                        User, RecordingRecord.user_id == User.id
                    ),
                    RecordingRecord.user_id,
                    user,
                ).order_by(RecordingRecord.id)
            )
            return [_public(record, owner) for record, owner in rows]

        return await self.db.run(query)

    async def get(self, user: Principal, recording_id: int) -> Recording:
        def query(session: Session) -> Recording:
            record = get_owned(session, RecordingRecord, recording_id, user, what="recording")
            return _public(record, record_owner(session, record))

        return await self.db.run(query)

    async def events(self, user: Principal, recording_id: int) -> np.ndarray:
        await self.get(user, recording_id)
        return await anyio.to_thread.run_sync(
            lambda: np.load(self.npy_path(recording_id), allow_pickle=False)
        )

    async def aedat4(self, user: Principal, recording_id: int) -> Path:
        """The recording as an AEDAT4 file (made on first download, then kept)."""
        recording = await self.get(user, recording_id)
        if recording.kind is not EventKind.DVS:
            raise ApiError(
                422,
                "not_dvs",
                f"recording {recording_id} holds {recording.kind.value} events; "
                "only DVS recordings export to AEDAT4 (download the .npy instead)",
            )
        path = self.root / f"{recording_id}.aedat4"
        if not path.exists():
            try:
                await export_aedat4(self.npy_path(recording_id), path)
            except ExportFailed as exc:
                raise ApiError(500, "export_failed", str(exc)) from exc
        return path

    async def delete(self, user: Principal, recording_id: int) -> None:
        if not user.can_write:
            raise ApiError(403, "read_only", "observers cannot delete recordings")

        def remove(session: Session) -> None:
            record = get_owned(session, RecordingRecord, recording_id, user, what="recording")
            session.delete(record)
            audit(session, user, "recording.delete", f"recording:{recording_id}", None)
            session.commit()

        await self.db.run(remove, write=True)
        self.npy_path(recording_id).unlink(missing_ok=True)
        (self.root / f"{recording_id}.aedat4").unlink(missing_ok=True)

    async def replay(self, user: Principal, recording_id: int, request: ReplayRequest) -> int:
        """Send a DVS recording into the DVS layer of the user's deployment, paced by the
        device's stopwatch (restarted), ``speed`` times real time. Returns the event count."""
        recording = await self.get(user, recording_id)
        if recording.kind is not EventKind.DVS:
            raise ApiError(
                422, "not_dvs", "only DVS recordings replay (into the DVS layer of a deployment)"
            )
        hub = await self.deployments.hub_for_use(user, request.device_id)
        if not hub.deployment.dvs_input:
            raise ApiError(
                409,
                "no_dvs_input",
                f"the deployment on {request.device_id} takes no DVS input: "
                "compile the model with dvs_input",
            )
        events = await self.events(user, recording_id)
        events = events.copy()
        events["t"] = (events["t"] / request.speed).astype(events["t"].dtype)
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
        raise ApiError(409, item.code, f"the recording stopped: {item.message}")
    events = item.dvs if kind is EventKind.DVS else item.spikes
    return events if len(events) else None


def record_owner(session: Session, record: RecordingRecord) -> str:
    owner = session.get(User, record.user_id)
    return owner.name if owner else ""


def _public(record: RecordingRecord, owner: str) -> Recording:
    return Recording(
        id=record.id,
        name=record.name,
        owner=owner,
        device_id=record.device_id,
        source=record.source,  # type: ignore[arg-type]
        kind=EventKind(record.kind),
        created_at=record.created_at,
        duration_s=record.duration_s,
        event_count=record.event_count,
        size_bytes=record.size_bytes,
    )
