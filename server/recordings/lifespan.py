"""Start-up of the recording store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ..settings import Settings
from ..storage.lab_blobs import LabBlobs
from .service import RecordingLimits, RecordingService


@asynccontextmanager
async def recording_store(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    app.state.recordings = RecordingService(
        root=settings.data_dir / "recordings",
        db=app.state.db,
        deployments=app.state.deployments,
        limits=RecordingLimits(
            max_events=settings.max_recording_events,
            concurrent_per_user=settings.max_concurrent_recordings_per_user,
            storage_per_user=settings.recording_storage_per_user_bytes,
        ),
        lab=LabBlobs.for_lab(app.state.db, "recordings"),
    )
    yield
