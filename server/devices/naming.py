"""Device ids: the guide's ``TYPE:INDEX``, and ``virtual-TYPE:INDEX`` for virtual devkits.

Real devices of one type are indexed in USB (bus, address) order when first seen, so at start-up
the ids are exactly the guide's. An id then stays with its device (known by serial number, or by
USB position when it has none) for the daemon's life: an unplugged device is kept, offline, under
its id, and a device that appears later takes the lowest index its type has free. Virtual ids
carry a prefix no samna device type has, so they cannot be mistaken for real ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..chips import DEVICE_TYPES, SUPPORTED_DEVICES

VIRTUAL_PREFIX = "virtual-"
_ID = re.compile(r"^(?P<virtual>virtual-)?(?P<type>[a-z0-9_]+):(?P<index>\d+)$")
_SPEC = re.compile(r"^(?P<type>[a-z0-9_]+)(=(?P<count>\d+))?$")
#: More virtual devkits than this is a typo, not a lab.
MAX_VIRTUAL_PER_TYPE = 64


@dataclass(frozen=True, slots=True)
class DeviceId:
    type: str
    index: int
    virtual: bool = False

    def __str__(self) -> str:
        return f"{VIRTUAL_PREFIX if self.virtual else ''}{self.type}:{self.index}"


def parse_device_id(text: str) -> DeviceId:
    match = _ID.match(text)
    if match is None or match["type"] not in DEVICE_TYPES:
        raise ValueError(
            f"{text!r} is not a device id: expected TYPE:INDEX or {VIRTUAL_PREFIX}TYPE:INDEX "
            f"with TYPE one of {', '.join(DEVICE_TYPES)}"
        )
    return DeviceId(match["type"], int(match["index"]), virtual=match["virtual"] is not None)


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
