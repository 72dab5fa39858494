"""Device listings: what ``GET /v1/devices`` and ``GET /v1/device-types`` answer.

Ids follow the guide's ``TYPE:INDEX`` (``speck2fdevkit:0``); virtual devkits are named
``virtual-TYPE:INDEX`` so that they cannot be mistaken for real ones.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel

from .booking import BookingSummary


class DeviceStatus(StrEnum):
    FREE = "free"
    #: A booking holds the device now, and no deployment holds it open.
    BOOKED = "booked"
    #: A deployment holds the device open.
    BUSY = "busy"
    #: Unplugged (or its host is gone); the id is kept.
    OFFLINE = "offline"


class UsbAddress(BaseModel):
    bus: int
    address: int


class DevicePublic(BaseModel):
    #: Unique in the lab: ``TYPE:sn-SERIAL``, ``TYPE:INDEX@HOST`` or ``virtual-TYPE:INDEX@HOST``.
    id: str
    #: The guide's ``TYPE:INDEX`` on its host; requests may use it where the id goes.
    name: str | None = None
    type: str
    #: The chip it carries; None for devices that cannot take a network (e.g. DAVIS cameras).
    chip: str | None
    virtual: bool
    supported: bool
    status: DeviceStatus
    serial_number: str | None = None
    usb: UsbAddress | None = None
    logic_version: str | None = None
    #: The daemon's host name.
    host: str
    #: Where clients reach that daemon: deploy to and stream from the device there.
    url: str | None = None
    booking: BookingSummary | None = None
    #: Why the device is offline.
    detail: str | None = None


class SamnaInfo(BaseModel):
    """samna on this host: not installed, the PyPI stub, loaded, or why it failed."""

    state: str
    version: str | None = None
    detail: str | None = None


class DeviceList(BaseModel):
    devices: list[DevicePublic]
    samna: SamnaInfo


class DeviceType(BaseModel):
    """One entry of the guide's ``device_types``."""

    type: str
    samna_name: str
    #: Whether it can take a network (one of the four Speck devices).
    supported: bool
    chip: str | None = None
