"""Start-up and shutdown of the device manager (called from the app's lifespan)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from ..settings import Settings
from ..simulator.warmup import warm_up
from .manager import DeviceManager
from .samna_loader import SamnaLoader

log = logging.getLogger("specklab.devices")


@asynccontextmanager
async def device_manager(app: FastAPI, settings: Settings) -> AsyncIterator[DeviceManager]:
    """First scan (samna imported off the loop if it is the real one), virtual devkits,
    periodic rescans; ``app.state.devices`` holds the manager while the app runs."""
    manager = DeviceManager(
        host=settings.host_name,
        virtual=settings.virtual,
        samna=SamnaLoader(timeout_s=settings.samna_import_timeout_s),
        max_output_events=settings.max_batch_output_events,
    )
    await manager.start(rescan_interval_s=settings.device_rescan_s)
    if any(state.description.virtual for state in manager.states()):
        log.info("loading the virtual devkit's compiled kernels (compiled once per install)")
        await anyio.to_thread.run_sync(warm_up)
    app.state.devices = manager
    try:
        yield manager
    finally:
        await manager.stop()
