"""Device ids, unique in a lab of many hosts, and the guide's short names.

Every device has two names:

- its **id**, unique in the lab and the only name bookings, deployments and recordings store:

  - ``TYPE:sn-SERIAL`` for a real devkit samna reports a serial number for: the same physical
    devkit keeps its id across re-plugs, daemon restarts and even a move to another host;
  - ``TYPE:INDEX@HOST`` for a real devkit without a serial number (stable while it stays in
    its USB position on that host);
  - ``virtual-TYPE:INDEX@HOST`` for a virtual devkit, numbered per host.

- its **name** on its host, the guide's ``TYPE:INDEX`` (``virtual-TYPE:INDEX`` for virtual
  devkits): real devices of a type are indexed in USB (bus, address) order when first seen, so
  at start-up the names are exactly the guide's; a device that appears later takes the lowest
  index its type has free on that host.

Every character of an id is URL-safe in a path segment (``[A-Za-z0-9._:@-]``): serial numbers
and host names are reduced to that set (:func:`url_safe`). A name is unique on its host only;
:func:`resolve_device_ref` turns a name into an id for a caller (see ``docs/devices.md``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..chips import DEVICE_TYPES, SUPPORTED_DEVICES

VIRTUAL_PREFIX = "virtual-"
SERIAL_PREFIX = "sn-"
_SPEC = re.compile(r"^(?P<type>[a-z0-9_]+)(=(?P<count>\d+))?$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
#: More virtual devkits than this is a typo, not a lab.
MAX_VIRTUAL_PER_TYPE = 64


def url_safe(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9._-]`` replaced by ``-``."""
    return _UNSAFE.sub("-", text.strip()) or "-"


@dataclass(frozen=True, slots=True)
class DeviceId:
    """A device's name on its host, the guide's ``TYPE:INDEX``."""

    type: str
    index: int
    virtual: bool = False

    def __str__(self) -> str:
        return f"{VIRTUAL_PREFIX if self.virtual else ''}{self.type}:{self.index}"


def lab_id(name: DeviceId, *, host: str, serial_number: str | None = None) -> str:
    """The lab-wide id of the device called ``name`` on ``host``."""
    if serial_number and not name.virtual:
        return f"{name.type}:{SERIAL_PREFIX}{url_safe(serial_number)}"
    return f"{name}@{url_safe(host).lower()}"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A device of the lab as name resolution needs it."""

    id: str
    name: str
    online: bool
    booked: bool


def resolve_device_ref(
    ref: str, devices: Iterable[Candidate], *, held: Iterable[str] = ()
) -> str | None:
    """The id of the device ``ref`` stands for, or None when none matches.

    An id stands for itself. A host name (``speck2fdevkit:0``) stands for the one device of the
    lab with that name; when several hosts have one: the first (by id) the caller holds (``held``:
    the ids of the caller's running bookings), else the first online and not booked, else the
    first, whose booking then answers the caller.
    """
    devices = list(devices)
    if any(device.id == ref for device in devices):
        return ref
    named = sorted((d for d in devices if d.name == ref), key=lambda d: d.id)
    if not named:
        return None
    held = set(held)
    mine = [d for d in named if d.id in held]
    free = [d for d in named if d.online and not d.booked]
    return (mine or free or named)[0].id


def parse_virtual_spec(spec: str) -> tuple[str, int]:
    """``speck2fdevkit=2`` -> (``speck2fdevkit``, 2); a bare type means one."""
    match = _SPEC.match(spec.strip())
    if match is None:
        raise ValueError(f"virtual device spec {spec!r} is not TYPE or TYPE=COUNT")
    device_type = match["type"]
    if device_type not in SUPPORTED_DEVICES:
        raise ValueError(
            f"virtual device type {device_type!r} is not one of {', '.join(SUPPORTED_DEVICES)}"
        )
    count = int(match["count"]) if match["count"] is not None else 1
    if count > MAX_VIRTUAL_PER_TYPE:
        raise ValueError(f"{count} virtual {device_type} devices: at most {MAX_VIRTUAL_PER_TYPE}")
    return device_type, count


def samna_type_names() -> dict[str, str]:
    """samna ``device_type_name`` -> specklab device type."""
    return {samna_name: name for name, samna_name in DEVICE_TYPES.items()}
