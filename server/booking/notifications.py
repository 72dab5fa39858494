"""Live booking notifications, in-process: streams learn that their booking ended.

::

    async with app.state.booking_events.subscribe("speck2fdevkit:0") as events:
        event = await events.get()          # or: async for event in events
        if event.kind in ("preempted", "ended") and event.booking_id == my_booking.id: ...

``publish`` may be called from any thread (request handlers run in a thread pool). Daemons of a
lab do not talk to each other, only to the shared database:

- on PostgreSQL, :func:`announce` also sends the change as a ``NOTIFY`` on :data:`CHANNEL` in
  the transaction that makes it (delivered when it commits, never for a rollback), and every
  host listens (``booking/listener.py``): a preemption made through host A reaches a stream
  served by host B in milliseconds;
- the sweeper of each host also reads booking changes back from the database and publishes
  those it has not announced yet, so what a lost listening connection missed arrives within
  one sweep interval, as does a booking reaching its end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..storage import on_commit

log = logging.getLogger("specklab.booking")

EventKind = Literal["preempted", "ended", "extended"]
#: PostgreSQL's notification channel of booking changes, shared by every host of the lab.
CHANNEL = "specklab_booking"
#: Events queued per subscriber; a subscriber this far behind loses the oldest (counted).
QUEUE_SIZE = 64
#: Events remembered to announce each once.
_REMEMBERED = 4096


@dataclass(frozen=True, slots=True)
class BookingEvent:
    kind: EventKind
    booking_id: int
    device_id: str
    user_id: int
    #: ``cancelled``, ``released``, ``expired``, ``finished`` or ``preempted``; for ``extended``
    #: the new end is in ``ends_at``.
    reason: str
    ends_at: datetime

    def to_json(self) -> str:
        fields = {name: getattr(self, name) for name in self.__slots__}
        return json.dumps({**fields, "ends_at": self.ends_at.isoformat()})

    @classmethod
    def from_json(cls, text: str) -> BookingEvent:
        """Raises ValueError (or KeyError, TypeError) for a payload not made by ``to_json``."""
        fields = json.loads(text)
        return cls(**{**fields, "ends_at": datetime.fromisoformat(fields["ends_at"])})


def announce(session: Session, events: BookingEvents, event: BookingEvent) -> None:
    """Publish ``event`` once ``session`` commits, on this host and (PostgreSQL) the lab's."""
    on_commit(session, lambda: events.publish(event))
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(CHANNEL, event.to_json())))


class Subscription:
    def __init__(self, device_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.device_id = device_id
        self.loop = loop
        self.dropped = 0
        self._queue: asyncio.Queue[BookingEvent] = asyncio.Queue(QUEUE_SIZE)

    async def get(self) -> BookingEvent:
        return await self._queue.get()

    def __aiter__(self) -> AsyncIterator[BookingEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[BookingEvent]:
        while True:
            yield await self._queue.get()

    def _put(self, event: BookingEvent) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)


class BookingEvents:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._lock = threading.Lock()
        # What went out already: the sweeper re-reads changes this daemon announced itself.
        self._recent: OrderedDict[tuple[int, str, datetime], None] = OrderedDict()

    @asynccontextmanager
    async def subscribe(self, device_id: str) -> AsyncIterator[Subscription]:
        subscription = Subscription(device_id, asyncio.get_running_loop())
        with self._lock:
            self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            with self._lock:
                self._subscriptions.discard(subscription)

    def publish(self, event: BookingEvent) -> None:
        """Tell the subscribers of ``event.device_id``, once per distinct event."""
        key = (event.booking_id, event.kind, event.ends_at)
        with self._lock:
            if key in self._recent:
                return
            self._recent[key] = None
            if len(self._recent) > _REMEMBERED:
                self._recent.popitem(last=False)
            targets = [s for s in self._subscriptions if s.device_id == event.device_id]
        for subscription in targets:
            try:
                subscription.loop.call_soon_threadsafe(subscription._put, event)
            except RuntimeError:  # the subscriber's loop has closed
                log.debug("dropped a booking event for a closed loop", extra={"event": event})
