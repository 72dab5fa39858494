"""The app factory and its lifespan, which owns start-up and shutdown of every subsystem."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry

from .api import PUBLIC_ROUTERS, ROUTERS, meta
from .api.errors import install_error_handlers
from .auth.dependencies import require_user
from .booking.lifespan import accounts_and_bookings
from .dashboard import install as install_dashboard
from .deployments.lifespan import deployments
from .devices.lifespan import device_manager
from .draining import Draining, begin_shutdown
from .forwarding import DeviceRouting
from .jobs.lifespan import job_service
from .logs import redact_also
from .metrics import AppCollector, MetricsMiddleware
from .models.lifespan import model_store
from .recordings.lifespan import recording_store
from .settings import Settings, load_settings

log = logging.getLogger("specklab.server")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    # Not generated ``spk_`` tokens necessarily: named so no log line can show them.
    redact_also(settings.admin_token.get_secret_value())
    redact_also(settings.metrics_token.get_secret_value())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if os.environ.get("PYTHONASYNCIODEBUG") or sys.flags.dev_mode:
            # Uvicorn starts its loop with debug off on Python 3.11, whatever the environment
            # says; debug mode logs every callback over 100 ms (tests/test_event_loop.py).
            asyncio.get_running_loop().set_debug(True)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        log.info("starting", extra={"data_dir": str(settings.data_dir)})
        # Devices first: the booking sweeper records them from its first check-in.
        async with (
            device_manager(app, settings),
            accounts_and_bookings(app, settings),
            model_store(app, settings),
            deployments(app),
            recording_store(app, settings),
            job_service(app, settings),
        ):
            # Built once here, off the loop: built by the first /openapi.json request, it
            # blocked the loop for seconds.
            await anyio.to_thread.run_sync(app.openapi)
            # What start-up built (modules, routes, the OpenAPI document: over 150,000 objects)
            # lives as long as the daemon: frozen, no full collection walks it again. A walk
            # holds the GIL, whichever thread runs it, and stopped the loop for 0.1-0.8 s.
            # Start-up's own cyclic garbage waits for the unfreeze (bounded, once).
            gc.freeze()
            try:
                yield
            finally:
                gc.unfreeze()  # in-process tests run many apps, one after another
                # Normally set already by the server's signal handling (``cli``); at the
                # latest here, before the subsystems close under requests still arriving.
                begin_shutdown(app.state)
        log.info("stopped")

    app = FastAPI(
        title="specklab",
        summary="A shared, remote lab for SynSense Speck / DYNAP-CNN devkits.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics_registry = CollectorRegistry(auto_describe=True)
    app.state.metrics_registry.register(AppCollector(app))
    install_error_handlers(app)
    # The last added runs first: metrics time the 503s of a draining daemon too, and a
    # draining daemon forwards nothing.
    app.add_middleware(DeviceRouting, state=app.state)
    app.add_middleware(Draining, state=app.state)
    app.add_middleware(MetricsMiddleware, state=app.state)
    for router in PUBLIC_ROUTERS:
        app.include_router(router)
    app.include_router(meta.metrics_router)
    for router in ROUTERS:
        # Protected at inclusion, so a new router cannot be forgotten (WebSockets included).
        app.include_router(router, dependencies=[Depends(require_user)])
    install_dashboard(app)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("specklab")
    except PackageNotFoundError:
        return "0+unknown"
