"""Bookings: book, list, cancel, extend, preempt (admins), and lease heartbeats."""

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
from ..booking import service
from ..storage import utcnow
from ..storage.tables import Booking
from .deps import AdminUser, CurrentUser, EventsDep, PolicyDep, SessionDep, WriterUser

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
    booking = service.create_booking(session, user=user, request=body, policy=policy, now=now)
    session.commit()
    return service.booking_public(booking, policy=policy, now=now)


@router.get("", response_model=list[BookingPublic])
def list_bookings(
    session: SessionDep,
    user: CurrentUser,
    policy: PolicyDep,
    device_id: str | None = None,
    user_id: int | None = None,
    current: bool = False,
) -> list[BookingPublic]:
    """Your bookings (admins: everyone's), newest first; ``current`` keeps upcoming and
    running ones."""
    now = utcnow()
    bookings = service.list_bookings(
        session, user=user, now=now, device_id=device_id, user_id=user_id, current=current
    )
    return [service.booking_public(b, policy=policy, now=now) for b in bookings]


@router.get("/{booking_id}", response_model=BookingPublic)
def get_booking(
    booking_id: int, session: SessionDep, user: CurrentUser, policy: PolicyDep
) -> BookingPublic:
    booking = get_owned(session, Booking, booking_id, user, what="booking")
    return service.booking_public(booking, policy=policy, now=utcnow())


@router.delete("/{booking_id}", response_model=BookingPublic)
def cancel_booking(
    booking_id: int, session: SessionDep, user: WriterUser, policy: PolicyDep, events: EventsDep
) -> BookingPublic:
    """Cancel an upcoming booking, or end a running one now (the device is free at once)."""
    booking = get_owned(session, Booking, booking_id, user, what="booking")
    now = utcnow()
    service.cancel_booking(session, booking=booking, actor=user, events=events, now=now)
    session.commit()
    return service.booking_public(booking, policy=policy, now=now)


@router.post("/{booking_id}/extend", response_model=BookingPublic)
def extend_booking(
    booking_id: int,
    body: BookingExtend,
    session: SessionDep,
    user: WriterUser,
    policy: PolicyDep,
    events: EventsDep,
) -> BookingPublic:
    booking = get_owned(session, Booking, booking_id, user, what="booking")
    now = utcnow()
    service.extend_booking(
        session, booking=booking, actor=user, request=body, policy=policy, events=events, now=now
    )
    session.commit()
    return service.booking_public(booking, policy=policy, now=now)


@router.post("/{booking_id}/preempt", response_model=BookingPublic)
def preempt_booking(
    booking_id: int,
    session: SessionDep,
    admin: AdminUser,
    policy: PolicyDep,
    events: EventsDep,
    body: BookingPreempt | None = None,
) -> BookingPublic:
    booking = get_owned(session, Booking, booking_id, admin, what="booking")
    now = utcnow()
    reason = body.reason if body else ""
    service.preempt_booking(
        session, booking=booking, actor=admin, reason=reason, events=events, now=now
    )
    session.commit()
    return service.booking_public(booking, policy=policy, now=now)


@router.post("/{booking_id}/heartbeat", response_model=LeasePublic)
def heartbeat(
    booking_id: int, session: SessionDep, user: WriterUser, policy: PolicyDep
) -> LeasePublic:
    """Renew the lease of a running booking; without heartbeats the booking ends early."""
    booking = get_owned(session, Booking, booking_id, user, what="booking")
    lease = service.renew_lease(session, booking=booking, user=user, policy=policy)
    session.commit()
    return lease
