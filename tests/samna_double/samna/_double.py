"""The double's control panel: the devices it pretends are plugged in, and every call made.

Tests drive it through ``samna._double.STATE``; a daemon started with this package on
PYTHONPATH reads its devices from ``SAMNA_DOUBLE_DEVICES``: comma-separated
``TYPE_NAME[/SERIAL[/BUS[/ADDRESS]]]`` (unset: one Speck 2F devkit; empty: none).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(eq=False, repr=False, slots=True)
class DeviceInfo:
    device_type_name: str
    serial_number: str = ""
    usb_bus_number: int = 1
    usb_device_address: int = 1
    logic_version: int = 3

    def __repr__(self) -> str:
        return (
            f"DeviceInfo({self.device_type_name!r}, serial={self.serial_number!r}, "
            f"usb={self.usb_bus_number}:{self.usb_device_address})"
        )


def _from_env() -> list[DeviceInfo]:
    text = os.environ.get("SAMNA_DOUBLE_DEVICES")
    if text is None:
        return [DeviceInfo("Speck2fDevKit", "DOUBLE0001", 1, 4)]
    infos = []
    for index, item in enumerate(filter(None, (part.strip() for part in text.split(",")))):
        name, serial, bus, address = [*item.split("/"), "", "", ""][:4]
        infos.append(
            DeviceInfo(
                name,
                serial or f"DOUBLE{index:04d}",
                int(bus or 1),
                int(address or index + 1),
            )
        )
    return infos


class DoubleState:
    def __init__(self) -> None:
        self.reset()

    def reset(self, devices: Iterable[DeviceInfo] | None = None) -> None:
        #: Every call into the double, in order: (name, *arguments).
        self.calls: list[tuple[Any, ...]] = []
        self.devices: list[DeviceInfo] = _from_env() if devices is None else list(devices)
        self.handles: list[Any] = []
        #: This many coming apply_configuration calls hang until ``release`` is set.
        self.apply_hangs = 0
        self.release = threading.Event()
        #: (ok, message) to return from validate_configuration instead of checking.
        self.validation: tuple[bool, str] | None = None
        #: The chip's behaviour: input events -> output events (None: no outputs).
        self.responder: Callable[[list[Any]], list[Any]] | None = None
        #: Neuron states answered to ReadNeuronValue, by (core, address).
        self.neuron_states: dict[tuple[int, int], int] = {}
        self.enumeration_error: Exception | None = None
        #: Called on every sink read for events that arrive unasked (a live sensor).
        self.live: Callable[[], list[Any]] | None = None

    def record(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]

    def unplug(self, serial_number: str) -> None:
        """The device leaves the bus: not listed any more, and its open handles die."""
        self.devices = [d for d in self.devices if d.serial_number != serial_number]
        for handle in self.handles:
            if handle.info.serial_number == serial_number:
                handle.dead = True


STATE = DoubleState()
