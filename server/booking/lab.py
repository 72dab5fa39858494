"""The lab's devices across hosts: each daemon upserts the devices it serves, with itself as
their host, into the shared database; every daemon lists them all from there.

A device is online when its daemon sees it (``present``) and that daemon has checked in within
``stale_after`` (the sweeper's heartbeat): a host that died takes its devices offline with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from specklab.schemas.booking import BookingSummary

from ..devices.naming import Candidate, resolve_device_ref
from ..storage.tables import Booking, BookingState, DeviceRecord, Host


@dataclass(frozen=True, slots=True)
class LocalDevice:
    """A device as this daemon's device manager sees it."""

    id: str
    #: The guide's ``TYPE:INDEX`` on this host.
    name: str
    device_type: str
    online: bool


@dataclass(frozen=True, slots=True)
class LabDevice:
    id: str
    name: str
    device_type: str
    host_name: str
    #: Where clients reach the daemon that serves the device (deploy and stream go there).
    url: str
    online: bool
    booking: BookingSummary | None


def host_stale_after(sweep_interval_s: float) -> timedelta:
    """How long a host may stay silent before its devices count as offline."""
    return timedelta(seconds=3 * sweep_interval_s + 10)


def check_in(session: Session, *, name: str, url: str, now: datetime) -> None:
    session.merge(Host(name=name, url=url, last_seen_at=now))


def sync_devices(
    session: Session,
    *,
    host_name: str,
    devices: Sequence[LocalDevice],
    now: datetime,
    stale_after: timedelta,
) -> list[str]:
    """Record this host's devices; returns the ids another live host serves already.

    Ids are unique in the lab (``devices/naming.py``); one clashes only when a devkit known by
    its serial number is plugged into a second host while the first still serves it: the first
    live owner keeps it, and the second stays out of the lab's list until the first lets go.
    """
    ids = [device.id for device in devices]
    rows = {
        row.id: row
        for row in session.scalars(
            select(DeviceRecord).where(
                or_(DeviceRecord.host_name == host_name, DeviceRecord.id.in_(ids))
            )
        )
    }
    clashes = []
    for device in devices:
        row = rows.get(device.id)
        if row is None:
            session.add(
                DeviceRecord(
                    id=device.id,
                    name=device.name,
                    device_type=device.device_type,
                    host_name=host_name,
                    present=device.online,
                    updated_at=now,
                )
            )
        elif (
            row.host_name != host_name and row.present and row.host.last_seen_at > now - stale_after
        ):
            clashes.append(device.id)
        elif (row.host_name, row.name, row.device_type, row.present) != (
            host_name,
            device.name,
            device.device_type,
            device.online,
        ):
            row.host_name, row.name, row.device_type = host_name, device.name, device.device_type
            row.present, row.updated_at = device.online, now
    for row in rows.values():
        if row.host_name == host_name and row.id not in ids and row.present:
            row.present, row.updated_at = False, now
    return clashes


def withdraw(session: Session, *, host_name: str, now: datetime) -> None:
    """A host going down: its devices are offline until it is back."""
    for row in session.scalars(select(DeviceRecord).where(DeviceRecord.host_name == host_name)):
        row.present, row.updated_at = False, now


def current_bookings(
    session: Session, *, now: datetime, device_ids: Iterable[str] | None = None
) -> dict[str, Booking]:
    """The running booking of each device that has one."""
    query = select(Booking).where(
        Booking.state == BookingState.ACTIVE, Booking.starts_at <= now, Booking.ends_at > now
    )
    if device_ids is not None:
        query = query.where(Booking.device_id.in_(list(device_ids)))
    return {booking.device_id: booking for booking in session.scalars(query)}


def summary(booking: Booking) -> BookingSummary:
    return BookingSummary(
        id=booking.id,
        user_name=booking.user.name,
        starts_at=booking.starts_at,
        ends_at=booking.ends_at,
    )


def lab_devices(session: Session, *, now: datetime, stale_after: timedelta) -> list[LabDevice]:
    """Every device of the lab, from the database, with its running booking."""
    rows = session.scalars(select(DeviceRecord).order_by(DeviceRecord.id)).all()
    running = current_bookings(session, now=now)
    return [
        LabDevice(
            id=row.id,
            name=row.name,
            device_type=row.device_type,
            host_name=row.host_name,
            url=row.host.url,
            online=row.present and row.host.last_seen_at > now - stale_after,
            booking=summary(running[row.id]) if row.id in running else None,
        )
        for row in rows
    ]


def resolve_device(
    session: Session, ref: str, *, user_id: int | None, now: datetime, stale_after: timedelta
) -> DeviceRecord | None:
    """The device ``ref`` (an id, or a name such as ``speck2fdevkit:0``) stands for when
    ``user_id`` asks (``naming.resolve_device_ref``), or None."""
    row = session.get(DeviceRecord, ref)
    if row is not None:
        return row
    rows = {
        row.id: row for row in session.scalars(select(DeviceRecord).where(DeviceRecord.name == ref))
    }
    if len(rows) <= 1:
        return next(iter(rows.values()), None)
    running = current_bookings(session, now=now, device_ids=rows)
    candidates = [
        Candidate(
            id=row.id,
            name=row.name,
            online=row.present and row.host.last_seen_at > now - stale_after,
            booked=row.id in running,
        )
        for row in rows.values()
    ]
    held = [device_id for device_id, booking in running.items() if booking.user_id == user_id]
    chosen = resolve_device_ref(ref, candidates, held=held)
    return None if chosen is None else rows[chosen]


def resolve_device_id(
    session: Session, ref: str, *, user_id: int, now: datetime, stale_after: timedelta
) -> str:
    """:func:`resolve_device`'s id; ``ref`` itself when it stands for no device (the caller
    then answers device_not_found or finds nothing)."""
    found = resolve_device(session, ref, user_id=user_id, now=now, stale_after=stale_after)
    return ref if found is None else found.id
