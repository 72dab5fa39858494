"""Bookings and leases in the database: keyword-only functions that take the session.

Functions that change something add an audit entry and leave the commit to the caller; live
notifications (``BookingEvents``) go out only once that commit has happened. Two active bookings
of one device never overlap: the database refuses it (see the first migration), so the
functions here only translate that refusal into a 409 that says when the device is next free.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from specklab.schemas.booking import (
    BookingCreate,
    BookingExtend,
    BookingPublic,
    BookingStatus,
    ConflictDetail,
    LeasePublic,
)
from specklab.schemas.errors import DomainError

from ..auth.ownership import visible_to
from ..auth.principal import Principal
from ..devices.suggest import unknown_device
from ..settings import Settings
from ..storage import utcnow
from ..storage.audit import audit
from ..storage.tables import Booking, BookingState, DeviceRecord, User, is_booking_overlap
from . import lab, rules
from .notifications import BookingEvent, BookingEvents, EventKind, announce
from .rules import Window

#: A booking by device type that loses its slot to a concurrent request looks again this often.
_TYPE_ATTEMPTS = 5
_OPEN = (BookingStatus.UPCOMING, BookingStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class BookingPolicy:
    max_length: timedelta
    daily_quota: timedelta
    #: A running booking unused this long is released.
    idle: timedelta
    #: A host silent this long has its devices shown offline.
    host_stale_after: timedelta
    #: How far ahead a booking may start.
    horizon: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> BookingPolicy:
        return cls(
            max_length=timedelta(minutes=settings.booking_max_minutes),
            daily_quota=timedelta(minutes=settings.booking_daily_quota_minutes),
            idle=timedelta(seconds=settings.booking_idle_s),
            host_stale_after=lab.host_stale_after(settings.sweep_interval_s),
            horizon=timedelta(days=settings.booking_horizon_days),
        )

    def idle_deadline(self, booking: Booking) -> datetime:
        return rules.idle_deadline(
            starts_at=booking.starts_at, last_used_at=booking.lease_renewed_at, idle=self.idle
        )


def window_of(booking: Booking) -> Window:
    return Window(booking.starts_at, booking.ends_at)


def status_of(booking: Booking, now: datetime) -> BookingStatus:
    return rules.booking_status(booking.state, window_of(booking), now)


def ending_of(booking: Booking, now: datetime) -> str | None:
    """Why a booking is over (None while it is not)."""
    if booking.end_reason is not None:
        return booking.end_reason
    return rules.WINDOW_OVER if status_of(booking, now) is BookingStatus.FINISHED else None


def booking_public(booking: Booking, *, policy: BookingPolicy, now: datetime) -> BookingPublic:
    status = status_of(booking, now)
    return BookingPublic(
        id=booking.id,
        device_id=booking.device_id,
        user_id=booking.user_id,
        user_name=booking.user.name,
        starts_at=booking.starts_at,
        ends_at=booking.ends_at,
        status=status,
        created_at=booking.created_at,
        ended_at=booking.ended_at,
        end_reason=ending_of(booking, now),
        last_used_at=booking.lease_renewed_at,
        lease_expires_at=policy.idle_deadline(booking) if status is BookingStatus.RUNNING else None,
        waits_for_type=booking.waits_for_type if status is BookingStatus.UPCOMING else None,
    )


def _busy(
    session: Session, device_ids: Iterable[str], *, after: datetime, exclude: int | None = None
) -> dict[str, list[Window]]:
    """Active bookings' windows per device, those ending after ``after``."""
    busy: dict[str, list[Window]] = {device_id: [] for device_id in device_ids}
    query = select(Booking.device_id, Booking.starts_at, Booking.ends_at).where(
        Booking.state == BookingState.ACTIVE,
        Booking.device_id.in_(list(busy)),
        Booking.ends_at > after,
    )
    if exclude is not None:
        query = query.where(Booking.id != exclude)
    for device_id, starts_at, ends_at in session.execute(query):
        busy[device_id].append(Window(starts_at, ends_at))
    return busy


def _conflict(
    session: Session, device_id: str, wanted: Window, *, exclude: int | None = None
) -> DomainError:
    busy = _busy(session, [device_id], after=wanted.start, exclude=exclude)[device_id]
    free_at = rules.next_free(busy, after=wanted.start, length=wanted.length)
    until = rules.free_until(busy, after=wanted.start) if exclude is not None else None
    minutes = int(wanted.length.total_seconds() // 60)
    return DomainError(
        409,
        "booking_conflict",
        f"{device_id} is booked during that time; it is next free for {minutes} minutes "
        f"at {free_at.isoformat()}",
        ConflictDetail(device_id=device_id, next_free=free_at, free_until=until).model_dump(
            mode="json"
        ),
    )


def _all_busy(
    device_type: str, device_id: str, free_at: datetime, length: timedelta
) -> DomainError:
    minutes = int(length.total_seconds() // 60)
    return DomainError(
        409,
        "booking_conflict",
        f"every {device_type} device is booked then; {device_id} is next free for {minutes} "
        f"minutes at {free_at.isoformat(timespec='seconds')} (ask for the next free slot to "
        "book that)",
        ConflictDetail(device_id=device_id, next_free=free_at).model_dump(mode="json"),
    )


def _check_quota(
    session: Session,
    *,
    user_id: int,
    window: Window,
    policy: BookingPolicy,
    exclude: int | None = None,
) -> None:
    # One user's bookings are made one at a time (a no-op on SQLite, whose writes are serial),
    # so two concurrent requests cannot both fit under the quota.
    session.execute(select(User.id).where(User.id == user_id).with_for_update())
    first = datetime.combine(window.start.astimezone(UTC).date(), time(), tzinfo=UTC)
    last = datetime.combine(
        window.end.astimezone(UTC).date() + timedelta(days=1), time(), tzinfo=UTC
    )
    query = select(Booking).where(
        Booking.user_id == user_id,
        Booking.state != BookingState.CANCELLED,
        Booking.starts_at < last,
        Booking.ends_at > first,
    )
    if exclude is not None:
        query = query.where(Booking.id != exclude)
    held = [rules.held_window(b.starts_at, b.ends_at, b.ended_at) for b in session.scalars(query)]
    rules.check_quota([w for w in held if w], window, per_day=policy.daily_quota)


def _duration(minutes: int, policy: BookingPolicy) -> timedelta:
    """``minutes`` as a duration; past the longest booking it is refused (before a huge count
    could overflow ``timedelta``)."""
    if minutes * 60 > policy.max_length.total_seconds():
        raise rules.too_long(policy.max_length)
    return timedelta(minutes=minutes)


def _requested_window(request: BookingCreate, policy: BookingPolicy, now: datetime) -> Window:
    start = request.starts_at or now
    rules.check_horizon(start, now=now, horizon=policy.horizon)
    end = request.ends_at or start + _duration(request.minutes or 0, policy)
    if end <= now:
        raise DomainError(422, "invalid_window", f"the window ends in the past ({end.isoformat()})")
    # What has passed of a window (clock skew, a slow request) cannot be booked any more.
    return Window(max(start, now), end)


def _candidates(
    session: Session, request: BookingCreate, policy: BookingPolicy, now: datetime, user_id: int
) -> list[str]:
    if request.device_id is not None:
        device = lab.resolve_device(
            session,
            request.device_id,
            user_id=user_id,
            now=now,
            stale_after=policy.host_stale_after,
        )
        if device is None:
            known = [
                device.id
                for device in lab.lab_devices(session, now=now, stale_after=policy.host_stale_after)
            ]
            raise unknown_device(request.device_id, known, where=" in this lab")
        return [device.id]
    online = [
        device.id
        for device in lab.lab_devices(session, now=now, stale_after=policy.host_stale_after)
        if device.device_type == request.device_type and device.online
    ]
    if not online:
        raise DomainError(
            404, "device_not_found", f"no online device of type {request.device_type!r} in this lab"
        )
    return online


def create_booking(
    session: Session,
    *,
    user: Principal,
    request: BookingCreate,
    policy: BookingPolicy,
    now: datetime | None = None,
) -> Booking:
    """Book a device for a window, or the earliest slot of any online device of a type."""
    now = now or utcnow()
    window = _requested_window(request, policy, now)
    rules.check_window(window, now=now, max_length=policy.max_length)
    candidates = _candidates(session, request, policy, now, user.id)
    asked = window
    for _ in range(_TYPE_ATTEMPTS):
        device_id, waits_for_type = candidates[0], None
        if request.device_type is not None:
            busy = _busy(session, candidates, after=asked.start)
            device_id, start = rules.earliest_slot(busy, after=asked.start, length=asked.length)
            if start > asked.start:
                if not request.next_free:
                    raise _all_busy(request.device_type, device_id, start, asked.length)
                waits_for_type = request.device_type
            window = Window(start, start + asked.length)
        if not user.is_admin:
            _check_quota(session, user_id=user.id, window=window, policy=policy)
        booking = Booking(
            # The owner loaded now, in the transaction: the response shows their name.
            user=session.get_one(User, user.id),
            device_id=device_id,
            starts_at=window.start,
            ends_at=window.end,
            state=BookingState.ACTIVE,
            waits_for_type=waits_for_type,
        )
        try:
            with session.begin_nested():
                session.add(booking)
        except IntegrityError as error:
            if not is_booking_overlap(error):
                raise
            if request.device_id is not None:
                raise _conflict(session, device_id, window) from None
            continue
        audit(
            session,
            user,
            "booking.create",
            f"booking:{booking.id}",
            {
                "device_id": device_id,
                "starts_at": window.start.isoformat(),
                "ends_at": window.end.isoformat(),
            },
        )
        return booking
    raise DomainError(
        409,
        "booking_conflict",
        f"other requests kept taking the free slots of {request.device_type!r} devices; try again",
    )


def list_bookings(
    session: Session,
    *,
    user: Principal,
    now: datetime,
    device_id: str | None = None,
    user_id: int | None = None,
    current: bool = False,
    limit: int = 200,
) -> Sequence[Booking]:
    """Newest first; ``current`` keeps upcoming and running bookings only."""
    query = visible_to(select(Booking), Booking.user_id, user, lab_activity=True)
    if device_id is not None:
        query = query.where(Booking.device_id == device_id)
    if user_id is not None:
        query = query.where(Booking.user_id == user_id)
    if current:
        query = query.where(Booking.state == BookingState.ACTIVE, Booking.ends_at > now)
    return session.scalars(
        query.order_by(Booking.starts_at.desc(), Booking.id.desc()).limit(limit)
    ).all()


def _end(
    session: Session,
    booking: Booking,
    *,
    state: BookingState,
    actor: Principal | None,
    now: datetime,
    events: BookingEvents,
    reason: str,
    detail: dict[str, str] | None = None,
) -> None:
    freed = booking.starts_at <= now < booking.ends_at
    booking.state, booking.ended_at, booking.end_reason = state, now, reason
    action = {
        BookingState.CANCELLED: "booking.cancel",
        BookingState.RELEASED: "booking.release",
        BookingState.PREEMPTED: "booking.preempt",
        BookingState.EXPIRED: "booking.expire",
    }[state]
    audit(
        session,
        actor,
        action,
        f"booking:{booking.id}",
        {"device_id": booking.device_id, **(detail or {})},
    )
    kind: EventKind = "preempted" if state is BookingState.PREEMPTED else "ended"
    event = BookingEvent(kind, booking.id, booking.device_id, booking.user_id, reason, now)
    announce(session, events, event)
    if freed:
        _start_waiting(session, device_id=booking.device_id, now=now)


def _start_waiting(session: Session, *, device_id: str, now: datetime) -> None:
    """``device_id`` freed before its booking's end: the earliest booking waiting for a device
    of its type (``waits_for_type``) that fits there from now moves to it and starts now."""
    device = session.get(DeviceRecord, device_id)
    if device is None:
        return
    waiting = session.scalars(
        select(Booking)
        .where(
            Booking.state == BookingState.ACTIVE,
            Booking.waits_for_type == device.device_type,
            Booking.starts_at > now,
        )
        .order_by(Booking.starts_at, Booking.id)
        # Devices freeing at once on two daemons of a lab must not both take one booking.
        .with_for_update(skip_locked=True, of=Booking)
    ).all()
    for booking in waiting:
        was = {"device_id": booking.device_id, "starts_at": booking.starts_at.isoformat()}
        length = booking.ends_at - booking.starts_at
        try:
            with session.begin_nested():
                booking.device_id, booking.starts_at = device_id, now
                booking.ends_at, booking.waits_for_type = now + length, None
        except IntegrityError as error:
            if not is_booking_overlap(error):
                raise
            continue  # the device is booked again before this one would end: try a shorter one
        audit(
            session,
            None,
            "booking.start_early",
            f"booking:{booking.id}",
            {"device_id": device_id, "was": was, "ends_at": booking.ends_at.isoformat()},
        )
        return


def end_bookings_of(
    session: Session, *, user_id: int, actor: Principal, events: BookingEvents, reason: str
) -> None:
    """End ``user_id``'s open bookings now (their account is going): upcoming ones cancelled,
    running ones preempted, so that their live streams are told why."""
    now = utcnow()
    open_bookings = session.scalars(
        select(Booking).where(
            Booking.user_id == user_id, Booking.state == BookingState.ACTIVE, Booking.ends_at > now
        )
    ).all()  # read whole: ending one runs more queries (a waiting booking may start)
    for booking in open_bookings:
        running = booking.starts_at <= now
        state = BookingState.PREEMPTED if running else BookingState.CANCELLED
        words = rules.end_reason(
            state, actor_name=actor.name, owner_name=booking.user.name, reason=reason
        )
        _end(session, booking, state=state, actor=actor, now=now, events=events, reason=words)


def lock_booking(session: Session, booking_id: int, user: Principal) -> Booking:
    """Booking ``booking_id`` if ``user`` owns it or is an admin (404 otherwise), locked for
    the rest of the transaction and read after the lock, so concurrent changes queue instead
    of overwriting each other.

    Locks are taken in one order everywhere: the owner's user row (as ``create_booking``'s
    quota check does), then the booking.
    """
    owner_id = session.scalar(select(Booking.user_id).where(Booking.id == booking_id))
    if owner_id is None or not (user.is_admin or owner_id == user.id):
        raise DomainError(404, "booking_not_found", f"no booking {booking_id}")
    session.execute(select(User.id).where(User.id == owner_id).with_for_update())
    booking = session.get(
        Booking, booking_id, with_for_update={"of": Booking}, populate_existing=True
    )
    if booking is None:  # deleted with its owner in the meantime
        raise DomainError(404, "booking_not_found", f"no booking {booking_id}")
    return booking


def _require_open(booking: Booking, now: datetime) -> BookingStatus:
    status = status_of(booking, now)
    if status not in _OPEN:
        raise DomainError(
            409,
            "booking_over",
            f"booking {booking.id} is over: {_ended_when(booking, now)}",
            _ended_detail(booking, now),
        )
    return status


def _ended_when(booking: Booking, now: datetime) -> str:
    ended_at = booking.ended_at or booking.ends_at
    return f"{ending_of(booking, now)} (at {ended_at.isoformat(timespec='seconds')})"


def _ended_detail(booking: Booking, now: datetime) -> dict[str, object]:
    ended_at = booking.ended_at or booking.ends_at
    return {
        "booking_id": booking.id,
        "device_id": booking.device_id,
        "status": status_of(booking, now).value,
        "end_reason": ending_of(booking, now),
        "ended_at": ended_at.isoformat(),
    }


def cancel_booking(
    session: Session,
    *,
    booking: Booking,
    actor: Principal,
    events: BookingEvents,
    now: datetime | None = None,
) -> Booking:
    """Cancel an upcoming booking, or release a running one (the device is free at once)."""
    now = now or utcnow()
    status = _require_open(booking, now)
    state = BookingState.CANCELLED if status is BookingStatus.UPCOMING else BookingState.RELEASED
    reason = rules.end_reason(state, actor_name=actor.name, owner_name=booking.user.name)
    _end(session, booking, state=state, actor=actor, now=now, events=events, reason=reason)
    return booking


def preempt_booking(
    session: Session,
    *,
    booking: Booking,
    actor: Principal,
    reason: str,
    events: BookingEvents,
    now: datetime | None = None,
) -> Booking:
    """End someone's booking now (admins); its live streams are told ``preempted``."""
    now = now or utcnow()
    _require_open(booking, now)
    _end(
        session,
        booking,
        state=BookingState.PREEMPTED,
        actor=actor,
        now=now,
        events=events,
        reason=rules.end_reason(
            BookingState.PREEMPTED,
            actor_name=actor.name,
            owner_name=booking.user.name,
            reason=reason,
        ),
        detail={"reason": reason},
    )
    return booking


def extend_booking(
    session: Session,
    *,
    booking: Booking,
    actor: Principal,
    request: BookingExtend,
    policy: BookingPolicy,
    events: BookingEvents,
    now: datetime | None = None,
) -> Booking:
    """Move the end later if the device is free until then."""
    now = now or utcnow()
    _require_open(booking, now)
    old_end = booking.ends_at
    new_end = request.ends_at or old_end + _duration(request.minutes or 0, policy)
    if new_end <= old_end:
        raise DomainError(422, "invalid_window", f"the new end must be after {old_end.isoformat()}")
    rules.check_window(Window(booking.starts_at, new_end), now=now, max_length=policy.max_length)
    added = Window(old_end, new_end)
    if not actor.is_admin:
        _check_quota(session, user_id=booking.user_id, window=added, policy=policy)
    try:
        with session.begin_nested():
            booking.ends_at = new_end
    except IntegrityError as error:
        if not is_booking_overlap(error):
            raise
        raise _conflict(session, booking.device_id, added, exclude=booking.id) from None
    if actor.id == booking.user_id:
        booking.lease_renewed_at = now  # the holder's call counts as use
    audit(
        session,
        actor,
        "booking.extend",
        f"booking:{booking.id}",
        {"device_id": booking.device_id, "ends_at": new_end.isoformat()},
    )
    event = BookingEvent(
        "extended", booking.id, booking.device_id, booking.user_id, "extended", new_end
    )
    announce(session, events, event)
    return booking


def renew_lease(
    session: Session,
    *,
    booking: Booking,
    user: Principal,
    policy: BookingPolicy,
    now: datetime | None = None,
) -> LeasePublic:
    """A heartbeat from the owner: the first one starts the lease."""
    now = now or utcnow()
    if booking.user_id != user.id:
        raise DomainError(
            403, "not_your_booking", f"only {booking.user.name} holds booking {booking.id}'s lease"
        )
    status = status_of(booking, now)
    if status is BookingStatus.UPCOMING:
        raise DomainError(
            409,
            "booking_not_running",
            f"booking {booking.id} starts at {booking.starts_at.isoformat()}: a lease is held "
            "while the booking runs",
        )
    if status is not BookingStatus.RUNNING:
        raise DomainError(
            409,
            "booking_not_running",
            f"booking {booking.id} is over: {_ended_when(booking, now)}",
            _ended_detail(booking, now),
        )
    if booking.lease_renewed_at is None:
        audit(
            session, user, "lease.start", f"booking:{booking.id}", {"device_id": booking.device_id}
        )
    booking.lease_renewed_at = now
    return LeasePublic(
        booking_id=booking.id, renewed_at=now, expires_at=policy.idle_deadline(booking)
    )


def require_active_booking(
    session: Session, user: Principal, device_id: str, *, now: datetime | None = None
) -> Booking:
    """The running booking that lets ``user`` deploy to or stream from ``device_id``; the call
    counts as use of it (the caller commits).

    403 ``read_only`` for observers; 409 ``not_booked`` when nobody holds the device now (saying
    why the user's own booking of this time ended, if it did), 409 ``device_booked`` when someone
    else does (both with ``detail.next_free``).
    """
    now = now or utcnow()
    if not user.can_write:
        raise DomainError(403, "read_only", "observers cannot use devices")
    running = lab.current_bookings(session, now=now, device_ids=[device_id]).get(device_id)
    if running is not None and running.user_id == user.id:
        running.lease_renewed_at = now
        return running
    busy = _busy(session, [device_id], after=now)[device_id]
    detail = {
        "device_id": device_id,
        "next_free": rules.next_free(busy, after=now, length=timedelta(minutes=1)).isoformat(),
    }
    if running is None:
        ended = _ended_early(session, user, device_id, now)
        if ended is not None:
            raise DomainError(
                409,
                "not_booked",
                f"your booking {ended.id} of {device_id} is over: {_ended_when(ended, now)}; "
                "book the device again to use it",
                {**detail, **_ended_detail(ended, now)},
            )
        raise DomainError(
            409, "not_booked", f"{device_id} is not booked by you now: book it first", detail
        )
    raise DomainError(
        409,
        "device_booked",
        f"{device_id} is booked by {running.user.name} until {running.ends_at.isoformat()}",
        detail,
    )


def _ended_early(
    session: Session, user: Principal, device_id: str, now: datetime
) -> Booking | None:
    """``user``'s booking of ``device_id`` whose window holds ``now`` but that ended early."""
    return session.scalars(
        select(Booking)
        .where(
            Booking.user_id == user.id,
            Booking.device_id == device_id,
            Booking.state != BookingState.ACTIVE,
            Booking.starts_at <= now,
            Booking.ends_at > now,
        )
        .order_by(Booking.ended_at.desc())
        .limit(1)
    ).first()


def sweep_leases(
    session: Session, *, policy: BookingPolicy, events: BookingEvents, now: datetime | None = None
) -> list[Booking]:
    """End running bookings their holders left unused for the idle time."""
    now = now or utcnow()
    running = session.scalars(
        select(Booking)
        .where(
            Booking.state == BookingState.ACTIVE, Booking.starts_at <= now, Booking.ends_at > now
        )
        # Daemons of one lab sweep the same table: each row is ended by one of them.
        .with_for_update(skip_locked=True, of=Booking)
    ).all()
    expired = [booking for booking in running if policy.idle_deadline(booking) <= now]
    reason = rules.idle_reason(policy.idle)
    for booking in expired:
        _end(
            session,
            booking,
            state=BookingState.EXPIRED,
            actor=None,
            now=now,
            events=events,
            reason=reason,
            detail={"reason": reason},
        )
    return expired


def ended_between(session: Session, *, since: datetime, now: datetime) -> list[BookingEvent]:
    """Bookings that ended in ``(since, now]``, early or at their end, as events."""
    early = session.scalars(
        select(Booking).where(
            Booking.state != BookingState.ACTIVE, Booking.ended_at > since, Booking.ended_at <= now
        )
    )
    events = [
        BookingEvent(
            "preempted" if b.state == BookingState.PREEMPTED else "ended",
            b.id,
            b.device_id,
            b.user_id,
            b.end_reason or b.state,
            b.ended_at or now,
        )
        for b in early
    ]
    finished = session.scalars(
        select(Booking).where(
            Booking.state == BookingState.ACTIVE, Booking.ends_at > since, Booking.ends_at <= now
        )
    )
    events += [
        BookingEvent("ended", b.id, b.device_id, b.user_id, rules.WINDOW_OVER, b.ends_at)
        for b in finished
    ]
    return events
