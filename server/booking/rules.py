"""Booking rules as pure functions over plain data: no database, no clock of their own.

Windows are half-open, ``[start, end)``: a booking ending at 10:00 and one starting at 10:00 do
not overlap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from specklab.schemas.booking import BookingStatus
from specklab.schemas.errors import DomainError

#: What an early end of an active booking turns its status into.
_ENDED_STATES = {
    "cancelled": BookingStatus.CANCELLED,
    "released": BookingStatus.RELEASED,
    "preempted": BookingStatus.PREEMPTED,
    "expired": BookingStatus.EXPIRED,
}


class BookingRuleError(DomainError):
    """A request the rules refuse: 422, but 409 for a quota the user's other bookings used up
    (cancelling one of them makes it possible)."""

    def __init__(self, code: str, message: str, detail: Any = None, *, status: int = 422) -> None:
        super().__init__(status, code, message, detail)


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    def overlaps(self, other: Window) -> bool:
        return self.start < other.end and other.start < self.end


def held_window(starts_at: datetime, ends_at: datetime, ended_at: datetime | None) -> Window | None:
    """The time a booking actually held its device: cut short by an early end, None if never."""
    end = min(ends_at, ended_at) if ended_at is not None else ends_at
    return Window(starts_at, end) if end > starts_at else None


def booking_status(state: str, window: Window, now: datetime) -> BookingStatus:
    if state != "active":
        return _ENDED_STATES[state]
    if now < window.start:
        return BookingStatus.UPCOMING
    return BookingStatus.RUNNING if now < window.end else BookingStatus.FINISHED


def check_window(window: Window, *, now: datetime, max_length: timedelta) -> None:
    if window.end <= now:
        raise BookingRuleError("invalid_window", f"the window ends in the past ({window.end})")
    if window.length > max_length:
        raise too_long(max_length)


def too_long(max_length: timedelta) -> BookingRuleError:
    minutes = int(max_length.total_seconds() // 60)
    return BookingRuleError(
        "booking_too_long",
        f"a booking may last at most {minutes} minutes",
        {"max_minutes": minutes},
    )


def check_horizon(start: datetime, *, now: datetime, horizon: timedelta) -> None:
    """Refuse a window starting more than ``horizon`` from now (it also keeps every time the
    rules compute far from ``datetime``'s year 9999 limit)."""
    if start - now > horizon:
        days = horizon.days
        raise BookingRuleError(
            "too_far_ahead",
            f"a booking may start at most {days} days from now",
            {"max_days_ahead": days},
        )


def next_free(busy: Iterable[Window], *, after: datetime, length: timedelta) -> datetime:
    """The earliest start at or after ``after`` where ``length`` fits between ``busy`` windows."""
    start = after
    for window in sorted(busy, key=lambda w: w.start):
        if window.end <= start:
            continue
        if window.start >= start + length:
            break
        start = window.end
    return start


def free_until(busy: Iterable[Window], *, after: datetime) -> datetime | None:
    """The start of the first busy window at or after ``after`` (None: free for ever)."""
    starts = [w.start for w in busy if w.start >= after]
    return min(starts, default=None)


def earliest_slot(
    busy_by_device: Mapping[str, Iterable[Window]], *, after: datetime, length: timedelta
) -> tuple[str, datetime]:
    """The device free soonest for ``length`` (ties: the first id in sorted order)."""
    if not busy_by_device:
        raise ValueError("no candidate device")
    return min(
        (
            (device, next_free(busy, after=after, length=length))
            for device, busy in busy_by_device.items()
        ),
        key=lambda pair: (pair[1], pair[0]),
    )


def _days(window: Window) -> Iterable[tuple[date, Window]]:
    """``window`` split at UTC midnights."""
    start = window.start
    while start < window.end:
        day = start.astimezone(UTC).date()
        midnight = datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)
        end = min(midnight, window.end)
        yield day, Window(start, end)
        start = end


def check_quota(existing: Iterable[Window], new: Window, *, per_day: timedelta) -> None:
    """Refuse ``new`` if it takes a user's booked time on any UTC day past ``per_day``."""
    used: dict[date, timedelta] = {}
    for window in existing:
        for day, part in _days(window):
            used[day] = used.get(day, timedelta()) + part.length
    for day, part in _days(new):
        total = used.get(day, timedelta()) + part.length
        if total > per_day:
            quota = int(per_day.total_seconds() // 60)
            already = int(used.get(day, timedelta()).total_seconds() // 60)
            raise BookingRuleError(
                "quota_exceeded",
                f"this would book {int(total.total_seconds() // 60)} minutes on {day} (UTC); "
                f"the daily quota is {quota} minutes and {already} are booked already",
                {"day": day.isoformat(), "quota_minutes": quota, "used_minutes": already},
                status=409,
            )


def idle_deadline(
    *, starts_at: datetime, last_used_at: datetime | None, idle: timedelta
) -> datetime:
    """When a running booking is released for want of use: ``idle`` after its holder last used
    it (a deploy, a stream, a heartbeat, a call naming it), or after its start if never."""
    return max(starts_at, last_used_at or starts_at) + idle


def idle_reason(idle: timedelta) -> str:
    return f"idle for {_minutes(idle)} minutes"


def _minutes(length: timedelta) -> str:
    minutes = length.total_seconds() / 60
    return f"{minutes:g}" if minutes < 10 else str(round(minutes))


def end_reason(state: str, *, actor_name: str | None, owner_name: str, reason: str = "") -> str:
    """Why a booking ended early, in words its holder reads (stored on the booking)."""
    by = "its holder" if actor_name in (None, owner_name) else actor_name
    if state == "preempted":
        return f"preempted by {actor_name}" + (f": {reason}" if reason else "")
    if state == "cancelled":
        return f"cancelled by {by}"
    return f"released by {by}"


#: Why a booking that ran to its end stopped.
WINDOW_OVER = "its window is over"
