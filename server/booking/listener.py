"""Each host of a PostgreSQL lab listens to the booking changes the others commit (``NOTIFY``
on ``notifications.CHANNEL``, sent by ``notifications.announce``) and publishes them to its own
streams, so that they learn of them at once rather than at the next sweep.

One connection per host, outside the request pool, kept open for the daemon's life (behind
PgBouncer it must be a session-pooled or a direct connection: ``docs/scaling.md``). When it
breaks, it is opened again after ``retry_s``; what was committed meanwhile reaches the streams
through the sweeper, which stays the fallback.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg
from sqlalchemy import make_url

from .notifications import CHANNEL, BookingEvent, BookingEvents

log = logging.getLogger("specklab.booking")


def libpq_url(database_url: str) -> str:
    """The SQLAlchemy URL ``database_url`` as psycopg connects to it."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def listen(database_url: str, events: BookingEvents, *, retry_s: float = 2.0) -> None:
    """Publish every booking change of the lab to ``events``, until cancelled."""
    conninfo = libpq_url(database_url)
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                conninfo, autocommit=True, connect_timeout=10
            ) as connection:
                await connection.execute(f"LISTEN {CHANNEL}")
                async for notify in connection.notifies():
                    _publish(events, notify.payload)
        except (psycopg.Error, OSError) as exc:
            log.warning(
                "listening to the lab's booking changes failed (%s); the sweeper brings them "
                "meanwhile, retrying in %.0f s",
                exc,
                retry_s,
            )
        await asyncio.sleep(retry_s)


def _publish(events: BookingEvents, payload: str) -> None:
    try:
        event = BookingEvent.from_json(payload)
    except (ValueError, KeyError, TypeError):
        # Anyone who may connect may NOTIFY: a stray payload is logged, not obeyed.
        log.warning("ignored a malformed booking notification: %.200r", payload)
        return
    events.publish(event)
