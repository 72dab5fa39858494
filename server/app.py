"""The app factory and its lifespan, which owns start-up and shutdown of every subsystem."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from .api import PUBLIC_ROUTERS, ROUTERS
from .auth.dependencies import require_user
from .booking.lifespan import accounts_and_bookings
from .dashboard import install as install_dashboard
from .deployments.lifespan import deployments
from .devices.lifespan import device_manager
from .errors import install_error_handlers
from .models.lifespan import model_store
from .recordings.lifespan import recording_store
from .settings import Settings, load_settings

log = logging.getLogger("specklab.server")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        log.info("starting", extra={"data_dir": str(settings.data_dir)})
        # Devices first: the booking sweeper records them from its first check-in.
        async with (
            device_manager(app, settings),
            accounts_and_bookings(app, settings),
            model_store(app, settings),
            deployments(app),
            recording_store(app, settings),
        ):
            yield
        log.info("stopped")

    app = FastAPI(
        title="specklab",
        summary="A shared, remote lab for SynSense Speck / DYNAP-CNN devkits.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    for router in PUBLIC_ROUTERS:
        app.include_router(router)
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
