"""Health and version: the only endpoints that need no token."""

from __future__ import annotations

import importlib.metadata
import platform

import anyio
import numpy as np
from fastapi import APIRouter

from specklab.schemas.api import Health, Version

from ..compiler.sandbox import LAYERS, missing_layers
from ..devices.samna_probe import probe_samna

router = APIRouter(prefix="/v1", tags=["meta"])


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@router.get("/health", response_model=Health)
async def health() -> Health:
    return Health()


@router.get("/version", response_model=Version)
async def version() -> Version:
    missing = await anyio.to_thread.run_sync(missing_layers)
    return Version(
        specklab=_installed_version("specklab") or "unknown",
        python=platform.python_version(),
        numpy=np.__version__,
        # Read from metadata: importing torch would cost seconds and memory in the daemon.
        torch=_installed_version("torch"),
        samna=probe_samna().describe(),
        compile_sandbox={layer: layer not in missing for layer in LAYERS},
    )
