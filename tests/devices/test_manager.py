"""The device manager: names, enumeration through samna (the double), hot-plug, holds."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from specklab.server.devices.base import Device, DeviceDescription, DeviceHealth, DeviceOutput
from specklab.server.devices.errors import (
    DeviceBusy,
    DeviceError,
    DeviceIOError,
    DeviceNotFound,
    DeviceOffline,
    DeviceStateError,
    DeviceTimeout,
    DeviceUnsupported,
)
from specklab.server.devices.manager import DeviceEvent, DeviceManager
from specklab.server.devices.naming import DeviceId, lab_id, parse_virtual_spec
from specklab.server.devices.samna_loader import SamnaLoader
from specklab.server.devices.samna_probe import SamnaState, SamnaStatus

from .networks import tiny_network


def _recorded(name: str, result: Callable[[], Any] = lambda: None) -> Callable[..., Any]:
    """A device method that records its call and thread, then does what ``behave`` says for
    ``name`` (if anything) or returns ``result()``."""

    def method(self: FakeDevice, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((name, threading.current_thread().name))
        return self.behave.get(name, result)()

    return method


class FakeDevice:
    """A device that records which thread ran each call; ``behave`` changes single calls."""

    def __init__(self, description: DeviceDescription) -> None:
        self.description = description
        self.calls: list[tuple[str, str]] = []
        self.behave: dict[str, Callable[[], Any]] = {}

    open = _recorded("open")
    close = _recorded("close")
    apply = _recorded("apply")
    clear = _recorded("clear")
    reset_states = _recorded("reset_states")
    write = _recorded("write")
    forward = _recorded("forward", DeviceOutput)
    read = _recorded("read", DeviceOutput)
    start_stopwatch = _recorded("start_stopwatch")
    stop_stopwatch = _recorded("stop_stopwatch")
    reset_stopwatch = _recorded("reset_stopwatch")
    set_sensor = _recorded("set_sensor")
    read_states = _recorded("read_states")
    health = _recorded("health", lambda: DeviceHealth(ok=True, detail="fake"))


def _double_loader() -> SamnaLoader:
    """A loader that finds the double as the installed samna."""
    return SamnaLoader(timeout_s=5.0, probe=lambda: SamnaStatus(SamnaState.INSTALLED, "double"))


async def _manager(samna: ModuleType, **options: Any) -> DeviceManager:
    fakes: dict[str, FakeDevice] = {}

    def fake(description: DeviceDescription) -> Device:
        fakes[description.id] = FakeDevice(description)
        return fakes[description.id]

    options.setdefault("virtual", [])
    manager = DeviceManager(host="lab-1", samna=_double_loader(), virtual_factory=fake, **options)
    manager.fakes = fakes  # type: ignore[attr-defined]
    await manager.start()
    return manager


async def _one_devkit(samna: ModuleType, stop_later: list[DeviceManager]) -> DeviceManager:
    """A started manager of one plugged-in Speck 2F devkit (serial A, bus 1, address 3),
    stopped after the test."""
    samna.STATE.devices = [samna.device.DeviceInfo("Speck2fDevKit", "A", 1, 3)]
    manager = await _manager(samna)
    stop_later.append(manager)
    return manager


@pytest.fixture
async def stop_later() -> AsyncIterator[list[DeviceManager]]:
    managers: list[DeviceManager] = []
    yield managers
    for manager in managers:
        await manager.stop()


def test_ids_and_virtual_specs() -> None:
    real, virtual = DeviceId("speck2fdevkit", 0), DeviceId("speck2edevkit", 3, virtual=True)
    assert (str(real), str(virtual)) == ("speck2fdevkit:0", "virtual-speck2edevkit:3")
    # A serial number names the devkit wherever it is plugged; the rest are named per host,
    # every character URL-safe.
    assert lab_id(real, host="Lab PC/1", serial_number="A1 b/2") == "speck2fdevkit:sn-A1-b-2"
    assert lab_id(real, host="Lab PC/1") == "speck2fdevkit:0@lab-pc-1"
    assert lab_id(virtual, host="h2", serial_number="x") == "virtual-speck2edevkit:3@h2"
    assert parse_virtual_spec("speck2fdevkit=2") == ("speck2fdevkit", 2)
    assert parse_virtual_spec(" speck2edevkit ") == ("speck2edevkit", 1)
    with pytest.raises(ValueError, match="davis346"):
        parse_virtual_spec("davis346=1")
    with pytest.raises(ValueError, match="TYPE=COUNT"):
        parse_virtual_spec("speck2fdevkit=two")


async def test_real_devices_are_named_in_usb_order(
    samna: ModuleType, stop_later: list[DeviceManager]
) -> None:
    info = samna.device.DeviceInfo
    samna.STATE.devices = [
        info("Speck2fDevKit", "B", 1, 9),
        info("Speck2fDevKit", "A", 1, 3),
        info("Speck2fDevKit", "C", 0, 12),
        info("Speck2eDevKit", "E", 2, 1),
        info("Davis 346", "D", 3, 1),
        info("Toaster 9000", "T", 3, 2),
    ]
    manager = await _manager(samna, virtual=None)
    stop_later.append(manager)
    states = {s.description.name: s for s in manager.states()}
    assert list(states) == [
        "davis346:0",
        "speck2edevkit:0",
        "speck2fdevkit:0",
        "speck2fdevkit:1",
        "speck2fdevkit:2",
    ]
    serials = [states[f"speck2fdevkit:{i}"].description.serial_number for i in range(3)]
    assert serials == ["C", "A", "B"]  # (bus, address): (0, 12) < (1, 3) < (1, 9)
    # Their lab-wide ids come from their serial numbers.
    assert [states[f"speck2fdevkit:{i}"].description.id for i in range(3)] == [
        "speck2fdevkit:sn-C",
        "speck2fdevkit:sn-A",
        "speck2fdevkit:sn-B",
    ]
    first = states["speck2fdevkit:0"].description
    assert (first.usb_bus, first.usb_address, first.chip, first.host) == (0, 12, "speck2f", "lab-1")
    assert first.logic_version == "3" and not first.virtual
    assert states["davis346:0"].description.chip is None
    assert all(s.online and not s.busy for s in states.values())
    # A real device was found, so no default virtual devkit.
    assert not any(s.description.virtual for s in manager.states())
    assert manager.samna_report().state.value == "loaded"


async def test_default_and_configured_virtual_devkits(
    samna: ModuleType, stop_later: list[DeviceManager]
) -> None:
    default = await _manager(samna, virtual=None)
    stop_later.append(default)
    assert [s.description.id for s in default.states()] == ["virtual-speck2fdevkit:0@lab-1"]
    virtual = default.states()[0].description
    assert (virtual.virtual, virtual.chip, virtual.serial_number, virtual.usb_bus) == (
        True,
        "speck2f",
        None,
        None,
    )
    configured = await _manager(samna, virtual=["speck2edevkit=2", "speck2fdevkit"])
    stop_later.append(configured)
    assert [s.description.id for s in configured.states()] == [
        "virtual-speck2edevkit:0@lab-1",
        "virtual-speck2edevkit:1@lab-1",
        "virtual-speck2fdevkit:0@lab-1",
    ]
    none = await _manager(samna, virtual=[])
    stop_later.append(none)
    assert none.states() == []


async def test_calls_run_on_the_device_thread_with_timeouts(
    samna: ModuleType, stop_later: list[DeviceManager]
) -> None:
    manager = await _manager(samna, virtual=["speck2fdevkit=1"])
    stop_later.append(manager)
    device_id = "virtual-speck2fdevkit:0@lab-1"
    fake: FakeDevice = manager.fakes[device_id]  # type: ignore[attr-defined]
    hold = await manager.open_hold(device_id, owner="alice")
    assert manager.state(device_id).busy and manager.state(device_id).owner == "alice"
    await hold.apply(tiny_network())
    await hold.forward(np.zeros(0, dtype=[("t", "<u8")]))
    await hold.read(0.01)
    assert await hold.health() == DeviceHealth(ok=True, detail="fake")
    threads = {thread for _, thread in fake.calls}
    assert threads == {f"device {device_id}"}
    assert threading.current_thread().name not in threads

    fake.behave["read_states"] = lambda: time.sleep(0.5) or 7
    with pytest.raises(DeviceTimeout, match="read_states"):
        await hold.read_states(0, timeout=0.05)
    assert await hold.read_states(0, timeout=2.0) == 7  # queued behind the slow one

    with pytest.raises(DeviceBusy, match="alice"):
        await manager.open_hold(device_id, owner="bob")
    await hold.close()
    assert [name for name, _ in fake.calls[-2:]] == ["clear", "close"]
    assert not manager.state(device_id).busy
    with pytest.raises(DeviceStateError, match="closed"):
        await hold.read(0.01)
    again = await manager.open_hold(device_id, owner="bob")
    await again.close()


async def test_open_hold_errors(samna: ModuleType, stop_later: list[DeviceManager]) -> None:
    samna.STATE.devices = [samna.device.DeviceInfo("Davis 346", "D", 3, 1)]
    manager = await _manager(samna)
    stop_later.append(manager)
    with pytest.raises(DeviceNotFound, match="speck2fdevkit:7"):
        await manager.open_hold("speck2fdevkit:7", owner="a")
    with pytest.raises(DeviceUnsupported, match="davis346"):
        await manager.open_hold("davis346:0", owner="a")
    samna.STATE.unplug("D")
    await manager.rescan()
    with pytest.raises(DeviceOffline, match="unplugged"):
        await manager.open_hold("davis346:0", owner="a")


async def test_unplug_between_scans_ends_the_session_and_keeps_the_id(
    samna: ModuleType, stop_later: list[DeviceManager]
) -> None:
    info = samna.device.DeviceInfo
    samna.STATE.devices = [info("Speck2fDevKit", "A", 1, 3), info("Speck2fDevKit", "B", 1, 5)]
    manager = await _manager(samna)
    stop_later.append(manager)
    seen: list[DeviceEvent] = []
    unsubscribe = manager.subscribe(seen.append)
    only_a: list[DeviceEvent] = []
    manager.subscribe(only_a.append, device_id="speck2fdevkit:sn-A")
    hold = await manager.open_hold("speck2fdevkit:0", owner="alice")
    await hold.apply(tiny_network())
    ended: list[DeviceError | None] = []
    hold.on_end(ended.append)

    samna.STATE.unplug("A")
    await manager.rescan()
    state = manager.state("speck2fdevkit:0")
    assert not state.online and not state.busy and "unplugged" in (state.detail or "")
    assert hold.ended.is_set()
    assert isinstance(hold.end_error, DeviceOffline)
    assert "speck2fdevkit:sn-A" in hold.end_error.message
    assert "went offline" in hold.end_error.message
    assert ended == [hold.end_error]
    with pytest.raises(DeviceOffline):
        await hold.read(0.01)
    assert seen == [DeviceEvent("speck2fdevkit:sn-A", False, state.detail)]
    assert only_a == seen
    await asyncio.sleep(0.05)  # the dead handle is released on its thread
    assert "close_device" in samna.STATE.names()

    # A new device takes the lowest free index; the old id stays with the old device.
    samna.STATE.devices.append(info("Speck2fDevKit", "C", 1, 1))
    await manager.rescan()
    assert manager.state("speck2fdevkit:2").description.serial_number == "C"
    assert not manager.state("speck2fdevkit:0").online
    # Plugged back in at another address: same id, online again.
    samna.STATE.devices.append(info("Speck2fDevKit", "A", 1, 8))
    await manager.rescan()
    back = manager.state("speck2fdevkit:0")
    assert back.online and back.description.usb_address == 8 and back.detail is None
    assert back.description.id == "speck2fdevkit:sn-A"
    assert seen[-2:] == [
        DeviceEvent("speck2fdevkit:sn-C", True),
        DeviceEvent("speck2fdevkit:sn-A", True),
    ]
    unsubscribe()
    samna.STATE.unplug("B")
    await manager.rescan()
    assert len(seen) == 3 and not manager.state("speck2fdevkit:1").online
    fresh = await manager.open_hold("speck2fdevkit:0", owner="bob")
    await fresh.apply(tiny_network())
    await fresh.close()


async def test_device_vanishing_mid_session_is_caught_by_the_failing_call(
    samna: ModuleType, stop_later: list[DeviceManager]
) -> None:
    manager = await _one_devkit(samna, stop_later)
    hold = await manager.open_hold("speck2fdevkit:0", owner="alice")
    await hold.apply(tiny_network())
    await hold.start_stopwatch()
    events: list[DeviceEvent] = []
    manager.subscribe(events.append)
    samna.STATE.unplug("A")  # no rescan: the next read from the sink fails
    with pytest.raises(DeviceOffline, match="speck2fdevkit:sn-A went offline"):
        await hold.read(0.01)
    assert await hold.wait_ended() is hold.end_error
    assert isinstance(hold.end_error, DeviceOffline)
    assert "disconnected" in hold.end_error.message
    assert not manager.state("speck2fdevkit:0").online
    assert [e.online for e in events] == [False]
    await manager.rescan()  # still gone: nothing new to say
    assert len(events) == 1


async def test_re_plugged_between_scans_is_noticed(
    samna: ModuleType, stop_later: list[DeviceManager]
) -> None:
    manager = await _one_devkit(samna, stop_later)
    hold = await manager.open_hold("speck2fdevkit:0", owner="alice")
    samna.STATE.devices = [samna.device.DeviceInfo("Speck2fDevKit", "A", 1, 6)]
    await manager.rescan()
    assert isinstance(hold.end_error, DeviceOffline)
    assert "re-plugged" in hold.end_error.message
    state = manager.state("speck2fdevkit:0")
    assert state.online and state.description.usb_address == 6


async def test_failed_scan_keeps_the_devices_and_is_reported(
    samna: ModuleType, stop_later: list[DeviceManager]
) -> None:
    manager = await _one_devkit(samna, stop_later)
    samna.STATE.enumeration_error = RuntimeError("usb stack busy")
    await manager.rescan()
    assert manager.state("speck2fdevkit:0").online
    assert "usb stack busy" in (manager.samna_report().detail or "")


async def test_periodic_rescan_and_stop(samna: ModuleType) -> None:
    samna.STATE.devices = [samna.device.DeviceInfo("Speck2fDevKit", "A", 1, 3)]
    manager = DeviceManager(host="h", virtual=[], samna=_double_loader())
    await manager.start(rescan_interval_s=0.02)
    hold = await manager.open_hold("speck2fdevkit:0", owner="alice")
    samna.STATE.unplug("A")
    await asyncio.wait_for(hold.wait_ended(), 2.0)
    assert not manager.state("speck2fdevkit:0").online
    await manager.stop()
    assert samna.STATE.names().count("get_all_devices") >= 2


async def test_stop_ends_sessions(samna: ModuleType) -> None:
    manager = await _manager(samna, virtual=["speck2fdevkit=1"])
    hold = await manager.open_hold("virtual-speck2fdevkit:0", owner="alice")
    await manager.stop()
    assert isinstance(hold.end_error, DeviceOffline)
    assert "shutting down" in hold.end_error.message
    fake: FakeDevice = manager.fakes["virtual-speck2fdevkit:0@lab-1"]  # type: ignore[attr-defined]
    assert fake.calls[-1][0] == "close"


async def test_open_failure_marks_the_device_offline(
    samna: ModuleType, stop_later: list[DeviceManager]
) -> None:
    manager = await _one_devkit(samna, stop_later)
    samna.STATE.devices = []  # open_device answers None for an unlisted device
    with pytest.raises(DeviceIOError, match="could not open"):
        await manager.open_hold("speck2fdevkit:0", owner="alice")
    state = manager.state("speck2fdevkit:0")
    assert not state.online and not state.busy


async def test_a_devkit_keeps_its_id_across_restarts_and_usb_order(
    samna: ModuleType, stop_later: list[DeviceManager]
) -> None:
    """Bookings name ids: a restart that enumerates the devkits in another order (or on
    another USB port) gives each the id it had, though its name (the guide's index) moves."""
    info = samna.device.DeviceInfo
    samna.STATE.devices = [info("Speck2fDevKit", "A", 1, 3), info("Speck2fDevKit", "B", 1, 5)]
    before = await _manager(samna)
    stop_later.append(before)
    ids = {s.description.serial_number: s.description.id for s in before.states()}
    names = {s.description.serial_number: s.description.name for s in before.states()}
    await before.stop()
    samna.STATE.devices = [info("Speck2fDevKit", "B", 1, 2), info("Speck2fDevKit", "A", 2, 9)]
    after = await _manager(samna)
    stop_later.append(after)
    assert {s.description.serial_number: s.description.id for s in after.states()} == ids
    assert {s.description.serial_number: s.description.name for s in after.states()} != names
    assert ids == {"A": "speck2fdevkit:sn-A", "B": "speck2fdevkit:sn-B"}
