"""The periodic task of each daemon: check in as a host, record its devices, end abandoned
leases, and announce bookings that ended (here or through another host of the lab)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import anyio

from ..storage import Database, utcnow
from . import lab, service
from .notifications import BookingEvents
from .service import BookingPolicy

log = logging.getLogger("specklab.booking")


class Sweeper:
    def __init__(
        self,
        *,
        db: Database,
        policy: BookingPolicy,
        events: BookingEvents,
        host_name: str,
        url: str,
        interval_s: float,
        local_devices: Callable[[], Sequence[lab.LocalDevice]],
    ) -> None:
        self._db = db
        self._policy = policy
        self._events = events
        self._host_name = host_name
        self._url = url
        self._interval_s = interval_s
        self._local_devices = local_devices
        # Changes are read back this far, to catch other hosts' commits that land late.
        self._lookback = timedelta(seconds=2 * interval_s + 5)
        self._last: datetime | None = None
        self._clashes: set[str] = set()

    def tick(self, devices: Sequence[lab.LocalDevice], now: datetime | None = None) -> None:
        now = now or utcnow()
        with self._db.write_session() as session:
            lab.check_in(session, name=self._host_name, url=self._url, now=now)
            clashes = lab.sync_devices(
                session,
                host_name=self._host_name,
                devices=devices,
                now=now,
                stale_after=self._policy.host_stale_after,
            )
            service.sweep_leases(session, policy=self._policy, events=self._events, now=now)
            session.commit()
        for device_id in set(clashes) - self._clashes:
            log.warning(
                "device %s is served by another live host of the lab under the same id; "
                "it is left out of the lab's list here",
                device_id,
            )
        self._clashes = set(clashes)
        since = (self._last or now) - self._lookback
        with self._db.session() as session:
            for event in service.ended_between(session, since=since, now=now):
                self._events.publish(event)
        self._last = now

    async def run(self) -> None:
        while True:
            try:
                devices = self._local_devices()
                await anyio.to_thread.run_sync(self.tick, devices)
            except Exception:  # a database hiccup must not end the sweeping for good
                log.exception("booking sweep failed; retrying")
            await asyncio.sleep(self._interval_s)

    def withdraw(self) -> None:
        with self._db.write_session() as session:
            lab.withdraw(session, host_name=self._host_name, now=utcnow())
            session.commit()
