"""What device listings take from the lab: the running booking of a device, and the devices
that other hosts of the lab serve (from the shared database).

``GET /v1/devices`` shows this host's live devices (the device manager knows them best),
followed by every other host's devices, each with the URL of the daemon that serves it: deploy
and stream there.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from specklab.schemas.booking import BookingSummary
from specklab.schemas.devices import DevicePublic, DeviceStatus

from ..chips import SUPPORTED_DEVICES
from ..devices.naming import VIRTUAL_PREFIX
from ..settings import Settings
from ..storage import Database, utcnow
from . import lab
from .service import BookingPolicy


async def device_bookings(db: Database, device_ids: list[str]) -> dict[str, BookingSummary]:
    """The running booking of each of ``device_ids`` that has one, in one query."""

    def lookup(session: Session) -> dict[str, BookingSummary]:
        running = lab.current_bookings(session, now=utcnow(), device_ids=device_ids)
        return {device_id: lab.summary(booking) for device_id, booking in running.items()}

    return await db.run(lookup)


def _public(device: lab.LabDevice) -> DevicePublic:
    if not device.online:
        status = DeviceStatus.OFFLINE
    else:
        status = DeviceStatus.BOOKED if device.booking else DeviceStatus.FREE
    chip = SUPPORTED_DEVICES.get(device.device_type)
    return DevicePublic(
        id=device.id,
        name=device.name,
        type=device.device_type,
        chip=chip,
        virtual=device.id.startswith(VIRTUAL_PREFIX),
        supported=chip is not None,
        status=status,
        host=device.host_name,
        url=device.url,
        booking=device.booking,
    )


async def lab_device_list(
    db: Database, settings: Settings, policy: BookingPolicy, local: list[DevicePublic]
) -> list[DevicePublic]:
    """``local`` (this host's devices, given this host's URL) and the other hosts' devices."""

    def remote(session: Session) -> list[DevicePublic]:
        devices = lab.lab_devices(session, now=utcnow(), stale_after=policy.host_stale_after)
        return [_public(d) for d in devices if d.host_name != settings.host_name]

    here = [device.model_copy(update={"url": settings.effective_public_url}) for device in local]
    return here + await db.run(remote)


async def resolve_device_id(db: Database, policy: BookingPolicy, ref: str, user_id: int) -> str:
    """The id ``ref`` (an id or a name) stands for when ``user_id`` asks; ``ref`` itself when
    it stands for no device (the caller then answers device_not_found)."""
    return await db.run(
        lambda session: lab.resolve_device_id(
            session, ref, user_id=user_id, now=utcnow(), stale_after=policy.host_stale_after
        )
    )
