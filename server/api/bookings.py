"""Bookings: book, list, cancel, extend, preempt (admins), and lease heartbeats.

Every change reads the booking after locking it (``service.lock_booking``) and commits through
``commit_retrying``: concurrent changes of one booking queue up instead of losing updates, and a
deadlock between daemons is run again instead of answered with an error.
"""

from __future__ import annotations

from fastapi import APIRouter

from specklab.schemas.booking import (
    BookingCreate,
    BookingExtend,
    BookingPreempt,
    BookingPublic,
    LeasePublic,
)

from ..auth.ownership import get_owned
from ..booking import lab, service
from ..storage import utcnow
from ..storage.db import commit_retrying
from ..storage.tables import Booking
from .deps import AdminUser, CurrentUser, EventsDep, PolicyDep, RowId, SessionDep, WriterUser

router = APIRouter(prefix="/v1/bookings", tags=["bookings"])


@router.post(
    "",
    response_model=BookingPublic,
    status_code=201,
    responses={409: {"description": "booking_conflict (detail.next_free) or quota_exceeded"}},
)
def create_booking(
    body: BookingCreate, session: SessionDep, user: WriterUser, policy: PolicyDep
) -> BookingPublic:
    now = utcnow()
    booking = commit_retrying(
        session,
        lambda: service.create_booking(session, user=user, request=body, policy=policy, now=now),
    )
    return service.booking_public(booking, policy=policy, now=now)


@router.get("", response_model=list[BookingPublic])
def list_bookings(
    session: SessionDep,
    user: CurrentUser,
    policy: PolicyDep,
    device_id: str | None = None,
    user_id: RowId | None = None,
    current: bool = False,
) -> list[BookingPublic]:
    """Your bookings (admins and observers: everyone's), newest first; ``current`` keeps
    upcoming and running ones."""
    now = utcnow()
    if device_id is not None:
        device_id = lab.resolve_device_id(
            session, device_id, user_id=user.id, now=now, stale_after=policy.host_stale_after
        )
    bookings = service.list_bookings(
        session, user=user, now=now, device_id=device_id, user_id=user_id, current=current
    )
    return [service.booking_public(b, policy=policy, now=now) for b in bookings]


@router.get("/{booking_id}", response_model=BookingPublic)
def get_booking(
    booking_id: RowId, session: SessionDep, user: CurrentUser, policy: PolicyDep
) -> BookingPublic:
    booking = get_owned(session, Booking, booking_id, user, what="booking", lab_activity=True)
    return service.booking_public(booking, policy=policy, now=utcnow())


@router.delete("/{booking_id}", response_model=BookingPublic)
def cancel_booking(
    booking_id: RowId, session: SessionDep, user: WriterUser, policy: PolicyDep, events: EventsDep
) -> BookingPublic:
    """Cancel an upcoming booking, or end a running one now (the device is free at once)."""
    now = utcnow()

    def cancel() -> Booking:
        booking = service.lock_booking(session, booking_id, user)
        return service.cancel_booking(session, booking=booking, actor=user, events=events, now=now)

    return service.booking_public(commit_retrying(session, cancel), policy=policy, now=now)


@router.post("/{booking_id}/extend", response_model=BookingPublic)
def extend_booking(
    booking_id: RowId,
    body: BookingExtend,
    session: SessionDep,
    user: WriterUser,
    policy: PolicyDep,
    events: EventsDep,
) -> BookingPublic:
    now = utcnow()

    def extend() -> Booking:
        booking = service.lock_booking(session, booking_id, user)
        return service.extend_booking(
            session,
            booking=booking,
            actor=user,
            request=body,
            policy=policy,
            events=events,
            now=now,
        )

    return service.booking_public(commit_retrying(session, extend), policy=policy, now=now)


@router.post("/{booking_id}/preempt", response_model=BookingPublic)
def preempt_booking(
    booking_id: RowId,
    session: SessionDep,
    admin: AdminUser,
    policy: PolicyDep,
    events: EventsDep,
    body: BookingPreempt | None = None,
) -> BookingPublic:
    now = utcnow()
    reason = body.reason if body else ""

    def preempt() -> Booking:
        booking = service.lock_booking(session, booking_id, admin)
        return service.preempt_booking(
            session, booking=booking, actor=admin, reason=reason, events=events, now=now
        )

    return service.booking_public(commit_retrying(session, preempt), policy=policy, now=now)


@router.post("/{booking_id}/heartbeat", response_model=LeasePublic)
def heartbeat(
    booking_id: RowId, session: SessionDep, user: WriterUser, policy: PolicyDep
) -> LeasePublic:
    """Renew the lease of a running booking; without heartbeats the booking ends early."""

    def renew() -> LeasePublic:
        booking = service.lock_booking(session, booking_id, user)
        return service.renew_lease(session, booking=booking, user=user, policy=policy)

    return commit_retrying(session, renew)
