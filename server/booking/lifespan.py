"""Start-up and shutdown of the database, accounts and bookings (called from the app's lifespan).

At start: migrate the database, create the first admin, put the shared objects on ``app.state``
(``db``, ``auth``, ``booking_policy``, ``booking_events``), check in as a host and start the
sweeper and (PostgreSQL) the listener of the lab's booking changes. At shutdown: stop them, take
this host's devices offline, close the pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial

import anyio
from fastapi import FastAPI

from ..auth.accounts import Authenticator
from ..auth.bootstrap import ensure_admin
from ..auth.dependencies import SessionLimits
from ..background import background
from ..settings import Settings
from ..storage import Database, upgrade
from . import lab
from .devices_view import device_bookings
from .notifications import BookingEvents
from .service import BookingPolicy
from .sweeper import Sweeper


def local_devices(app: FastAPI) -> list[lab.LocalDevice]:
    """This daemon's devices, from the device manager (none before it has started)."""
    manager = getattr(app.state, "devices", None)
    if manager is None:
        return []
    return [
        lab.LocalDevice(
            state.description.id, state.description.name, state.description.type, state.online
        )
        for state in manager.states()
    ]


@asynccontextmanager
async def accounts_and_bookings(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    db = Database(settings.effective_database_url, host_name=settings.host_name)
    await anyio.to_thread.run_sync(upgrade, db)
    await anyio.to_thread.run_sync(ensure_admin, db, settings)
    policy = BookingPolicy.from_settings(settings)
    events = BookingEvents()
    app.state.db = db
    app.state.auth = Authenticator(db)
    app.state.session_limits = SessionLimits()
    app.state.booking_policy = policy
    app.state.booking_events = events
    sweeper = Sweeper(
        db=db,
        policy=policy,
        events=events,
        host_name=settings.host_name,
        url=settings.effective_public_url,
        interval_s=settings.sweep_interval_s,
        local_devices=lambda: local_devices(app),
    )
    manager = getattr(app.state, "devices", None)
    if manager is not None:
        manager.booking_lookup = partial(device_bookings, db)
    # Check in before serving, so this host's devices are bookable from the first request.
    await anyio.to_thread.run_sync(sweeper.tick, local_devices(app))
    try:
        async with AsyncExitStack() as tasks:
            await tasks.enter_async_context(background(sweeper.run(), name="booking-sweeper"))
            if not db.is_sqlite:  # one host on SQLite: its own changes are published in-process
                from .listener import listen  # psycopg: the postgres extra, absent on SQLite

                listener = listen(db.url, events)
                await tasks.enter_async_context(background(listener, name="booking-listener"))
            yield
    finally:
        await anyio.to_thread.run_sync(sweeper.withdraw)
        db.dispose()
