"""The recording store on both databases, without a device: exports racing deletes, and the
per-user limits on recordings running at once and on storage."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest

from specklab.schemas.accounts import Role
from specklab.schemas.errors import DomainError
from specklab.schemas.events import DVS_DTYPE, SPIKE_DTYPE, EventKind, empty
from specklab.schemas.recordings import RecordingRequest
from specklab.server.auth.principal import Principal
from specklab.server.deployments import EndReason
from specklab.server.devices.base import DeviceOutput
from specklab.server.recordings import service as recordings_module
from specklab.server.recordings.service import RecordingLimits, RecordingService
from specklab.server.storage import Database
from specklab.server.storage.tables import User

from .db_fixtures import stored_recording

LIMITS = RecordingLimits(max_events=1_000_000, concurrent_per_user=2, storage_per_user=10_000)


def _principal(db: Database, name: str = "ada") -> Principal:
    with db.write_session() as session:
        user = User(name=name, role="user")
        session.add(user)
        session.commit()
        return Principal(id=user.id, name=name, role=Role.USER)


class _Hub:
    """What a recording needs of a deployment: outputs to subscribe to, until released."""

    def __init__(self, outputs: list[DeviceOutput]) -> None:
        self.outputs = outputs
        self.subscribed = 0
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def restart_stopwatch(self) -> bool:
        return True

    @asynccontextmanager
    async def subscribe(self, max_events: int) -> AsyncIterator[_Hub]:
        self.subscribed += 1
        self.max_events = max_events
        if self.subscribed == 2:
            self.entered.set()
        yield self

    async def get(self) -> DeviceOutput | EndReason:
        if self.outputs:
            return self.outputs.pop(0)
        await self.release.wait()
        return EndReason("deployment_removed", "released by the test")


class _Deployments:
    def __init__(self, hub: _Hub) -> None:
        self._hub = hub

    async def hub_for_use(self, user: Principal, device_id: str) -> _Hub:
        return self._hub


def _store(db: Database, root: Path, hub: _Hub | None = None, **limits: int) -> RecordingService:
    return RecordingService(
        root=root,
        db=db,
        deployments=_Deployments(hub or _Hub([])),  # type: ignore[arg-type]
        limits=dataclasses.replace(LIMITS, **limits),
    )


def _one_recording(db: Database, tmp_path: Path) -> tuple[RecordingService, Principal, int]:
    """A store holding one recording of ten DVS events, its owner, and its id."""
    store = _store(db, tmp_path / "recordings")
    ada = _principal(db)
    return store, ada, stored_recording(store, ada.id, np.zeros(10, DVS_DTYPE))


def _monitor(seconds: float) -> RecordingRequest:
    return RecordingRequest(device_id="d:0", duration_s=seconds, source="monitor")


async def test_an_export_of_a_recording_deleted_meanwhile_never_lands(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, ada, recording_id = _one_recording(db, tmp_path)
    exporting, finish = asyncio.Event(), asyncio.Event()

    async def slow_export(npy: Path, target: Path) -> None:
        target.write_bytes(b"#!AER-DAT4.0 the deleted recording's events")
        exporting.set()
        await finish.wait()

    monkeypatch.setattr(recordings_module, "export_aedat4", slow_export)
    download = asyncio.create_task(store.open_aedat4(ada, recording_id))
    await exporting.wait()
    await store.delete(ada, recording_id)
    finish.set()
    with pytest.raises(DomainError) as refused:
        await download
    assert (refused.value.status, refused.value.body.code) == (404, "recording_not_found")
    assert list(store.root.iterdir()) == []  # neither the export nor a temporary file


async def test_a_finished_export_is_served_and_kept_until_its_recording_is_deleted(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, ada, recording_id = _one_recording(db, tmp_path)

    async def export(npy: Path, target: Path) -> None:
        target.write_bytes(b"exported")

    monkeypatch.setattr(recordings_module, "export_aedat4", export)
    with await store.open_aedat4(ada, recording_id) as handle:
        assert handle.read() == b"exported"
    assert store.aedat4_path(recording_id).exists()
    await store.delete(ada, recording_id)
    assert list(store.root.iterdir()) == []


async def test_a_user_runs_at_most_the_limit_of_recordings_at_once(
    db: Database, tmp_path: Path
) -> None:
    hub = _Hub([])
    store = _store(db, tmp_path / "recordings", hub)
    ada, bob = _principal(db), _principal(db, "bob")
    running = [asyncio.create_task(store.record(ada, _monitor(3600))) for _ in range(2)]
    await hub.entered.wait()
    with pytest.raises(DomainError) as refused:
        await store.record(ada, _monitor(3600))
    assert (refused.value.status, refused.value.body.code) == (409, "too_many_recordings")
    # Another user is not held back by ada's.
    hub.release.set()
    with pytest.raises(DomainError, match="released by the test"):
        await store.record(bob, _monitor(3600))
    for task in running:
        with pytest.raises(DomainError, match="released by the test"):
            await task
    # Finished recordings free their places.
    with pytest.raises(DomainError, match="released by the test"):
        await store.record(ada, _monitor(3600))


async def test_a_full_storage_refuses_new_recordings_and_stops_one_that_fills_it(
    db: Database, tmp_path: Path
) -> None:
    item = SPIKE_DTYPE.itemsize
    many = empty(EventKind.SPIKE, 1000)
    hub = _Hub([DeviceOutput(spikes=many)])
    store = _store(db, tmp_path / "recordings", hub, storage_per_user=100 * item)
    ada = _principal(db)
    stored_recording(store, ada.id, np.zeros(2, DVS_DTYPE))
    kept = await store.record(ada, _monitor(3600))
    assert kept.event_count == (100 * item - 2 * DVS_DTYPE.itemsize) // item
    with pytest.raises(DomainError) as refused:
        await store.record(ada, _monitor(1))
    assert (refused.value.status, refused.value.body.code) == (413, "storage_full")
    assert refused.value.body.detail == {
        "used_bytes": 2 * 13 + kept.size_bytes,
        "limit_bytes": 100 * item,
    }
