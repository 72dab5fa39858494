"""Device states as the API shows them: status and booking."""

from __future__ import annotations

from specklab.schemas.booking import BookingSummary
from specklab.schemas.devices import DevicePublic, DeviceStatus, SamnaInfo, UsbAddress

from .manager import DeviceManager, DeviceState


def device_status(state: DeviceState, booking: BookingSummary | None) -> DeviceStatus:
    """offline beats busy (a deployment holds it), which beats booked, which beats free."""
    if not state.online:
        return DeviceStatus.OFFLINE
    if state.busy:
        return DeviceStatus.BUSY
    if booking is not None:
        return DeviceStatus.BOOKED
    return DeviceStatus.FREE


async def devices_public(manager: DeviceManager, states: list[DeviceState]) -> list[DevicePublic]:
    """``states`` as the API shows them, with their bookings looked up at once."""
    lookup = manager.booking_lookup
    bookings = await lookup([state.description.id for state in states]) if lookup else {}
    return [device_public(state, bookings.get(state.description.id)) for state in states]


def device_public(state: DeviceState, booking: BookingSummary | None) -> DevicePublic:
    description = state.description
    usb = None
    if description.usb_bus is not None and description.usb_address is not None:
        usb = UsbAddress(bus=description.usb_bus, address=description.usb_address)
    return DevicePublic(
        id=description.id,
        name=description.name,
        type=description.type,
        chip=description.chip,
        virtual=description.virtual,
        supported=description.supported,
        status=device_status(state, booking),
        serial_number=description.serial_number,
        usb=usb,
        logic_version=description.logic_version,
        host=description.host,
        booking=booking,
        detail=state.detail,
    )


def samna_info(manager: DeviceManager) -> SamnaInfo:
    report = manager.samna_report()
    return SamnaInfo(state=report.state.value, version=report.version, detail=report.detail)
