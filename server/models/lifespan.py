"""Start-up and shutdown of the model store and its compiler pool."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from ..compiler.sandbox import LAYERS, missing_layers
from ..settings import Settings
from ..storage.blobs import BlobStore
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
    models = ModelService(
        uploads=BlobStore(settings.data_dir / "models"),
        compiled=BlobStore(settings.data_dir / "compiled"),
        workers=settings.compile_workers,
        max_upload_bytes=settings.max_upload_bytes,
    )
    app.state.models = models
    # In the background: testing the kernel takes a second that start-up need not wait for.
    threading.Thread(target=warn_about_missing_sandbox_layers, daemon=True).start()
    try:
        yield
    finally:
        await anyio.to_thread.run_sync(models.close)
