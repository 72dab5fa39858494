"""Start-up and shutdown of the model store and its compiler pool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from ..settings import Settings
from ..storage.blobs import BlobStore
from .service import ModelService


@asynccontextmanager
async def model_store(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    models = ModelService(
        uploads=BlobStore(settings.data_dir / "models"),
        compiled=BlobStore(settings.data_dir / "compiled"),
        workers=settings.compile_workers,
        max_upload_bytes=settings.max_upload_bytes,
    )
    app.state.models = models
    try:
        yield
    finally:
        await anyio.to_thread.run_sync(models.close)
