"""Start-up and shutdown of deployments: at shutdown every device is released."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .hub import BatchLimits
from .registry import Deployments


@asynccontextmanager
async def deployments(app: FastAPI) -> AsyncIterator[None]:
    settings = app.state.settings
    registry = Deployments(
        devices=app.state.devices,
        db=app.state.db,
        booking_events=app.state.booking_events,
        policy=app.state.booking_policy,
        models=app.state.models,
        limits=BatchLimits(
            span_s=settings.max_batch_span_s,
            ticks=settings.max_batch_ticks,
            output_events=settings.max_batch_output_events,
        ),
    )
    app.state.deployments = registry
    try:
        yield
    finally:
        await registry.close()
