"""REST and WebSocket routers, one module per resource."""

from fastapi import APIRouter

from . import (
    audit,
    bookings,
    datasets,
    deployments,
    devices,
    jobs,
    meta,
    models,
    recordings,
    streams,
    tokens,
    users,
)

#: Routers anyone may call: health and version.
PUBLIC_ROUTERS: list[APIRouter] = [meta.router]
#: Every other router; the app includes these behind a valid token (``auth.require_user``).
ROUTERS: list[APIRouter] = [
    users.router,
    tokens.router,
    bookings.router,
    audit.router,
    devices.router,
    models.router,
    deployments.router,
    streams.router,
    recordings.router,
    datasets.router,
    jobs.router,
]
