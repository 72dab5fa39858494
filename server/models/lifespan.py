"""Start-up and shutdown of the model store, its compile queue and its compiler pool."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from ..background import background
from ..compiler.sandbox import LAYERS, missing_layers
from ..settings import Settings
from ..storage import Database
from ..storage.blobs import BlobStore
from ..storage.lab_blobs import LabBlobs
from .service import ModelService

log = logging.getLogger(__name__)


def warn_about_missing_sandbox_layers() -> None:
    """Log, loudly, each layer of the compile sandbox this kernel cannot give."""
    missing = missing_layers()
    for layer, reason in missing.items():
        log.warning(
            "COMPILE SANDBOX INCOMPLETE: layer %r is off (%s). %d of %d layers are on; "
            "see docs/security.md for what that layer stops",
            layer,
            reason,
            len(LAYERS) - len(missing),
            len(LAYERS),
        )


@asynccontextmanager
async def model_store(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    db: Database = app.state.db
    models = ModelService(
        uploads=BlobStore(settings.data_dir / "models", LabBlobs.for_lab(db, "models")),
        compiled=BlobStore(settings.data_dir / "compiled", LabBlobs.for_lab(db, "compiled")),
        workers=settings.compile_workers,
        max_upload_bytes=settings.max_upload_bytes,
        quota_bytes=settings.model_quota_bytes,
        uploads_per_user=settings.max_uploads_per_user,
    )
    # Before serving, nothing is arriving: unfinished temporary files go too.
    await _collect(models, db, partial=True)
    app.state.models = models
    # In the background: testing the kernel takes a second that start-up need not wait for.
    threading.Thread(target=warn_about_missing_sandbox_layers, daemon=True).start()
    collecting = _collect_periodically(models, db, settings.orphan_collect_interval_s)
    try:
        async with background(collecting, name="orphan-collector"):
            yield
    finally:
        models.stop_accepting()
        await anyio.to_thread.run_sync(models.close)


async def _collect(models: ModelService, db: Database, *, partial: bool) -> None:
    freed = await db.run(lambda session: models.collect_orphans(session, partial=partial))
    if freed:
        log.info("collected orphaned model files", extra={"bytes": freed})


async def _collect_periodically(models: ModelService, db: Database, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await _collect(models, db, partial=False)
        except Exception:  # a failed sweep (database briefly away) is retried next interval
            log.exception("collecting orphaned model files failed")
