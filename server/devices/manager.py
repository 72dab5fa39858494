"""The device manager: enumeration, names, hot-plug, and exclusive holds on device threads.

How the rest of the daemon uses it::

    manager = app.state.devices
    manager.states()                       # snapshots of every device, online or not
    hold = await manager.open_hold("speck2fdevkit:0", owner="alice")
    await hold.apply(config)            # each call runs on the device's own thread
    out = await hold.forward(spikes)    # ... with a timeout (DeviceTimeout)
    hold.on_end(callback)               # called once; with a DeviceOffline when unplugged
    await hold.close()

A device that disappears (from samna's device list at a rescan, or because a call failed with
:class:`DeviceIOError`) is shown offline under the same id, its hold is ended with a
:class:`DeviceOffline` that says so, and subscribers get a :class:`DeviceEvent`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any, TypeVar

import numpy as np

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.inputs import Checked

from ..chips import SUPPORTED_DEVICES
from ..metrics import EVENTS_IN, EVENTS_OUT
from .base import (
    Device,
    DeviceDescription,
    DeviceHealth,
    DeviceOutput,
    Interruptible,
    QuickForward,
)
from .errors import (
    DeviceBusy,
    DeviceError,
    DeviceIOError,
    DeviceOffline,
    DeviceStateError,
    DeviceTimeout,
    DeviceUnresponsive,
    DeviceUnsupported,
)
from .naming import DeviceId, lab_id, parse_virtual_spec, samna_type_names
from .samna_loader import SamnaLoader, SamnaReport
from .shared import batch_span_s
from .suggest import unknown_device
from .worker import DeviceThread

log = logging.getLogger("specklab.devices")

T = TypeVar("T")

VirtualFactory = Callable[[DeviceDescription], Device]
#: (samna module, samna DeviceInfo, description) -> device.
SamnaFactory = Callable[[ModuleType, Any, DeviceDescription], Device]
HoldEndCallback = Callable[[DeviceError | None], None]

#: The virtual devkits of a daemon that finds no real device and was not told otherwise.
DEFAULT_VIRTUAL = ("speck2fdevkit=1",)


@dataclass(frozen=True, slots=True)
class DeviceState:
    """A snapshot of one device as the manager sees it."""

    description: DeviceDescription
    online: bool
    #: A deployment holds the device.
    busy: bool
    owner: str | None = None
    #: Why the device is offline.
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    device_id: str
    online: bool
    reason: str | None = None


class _Entry:
    def __init__(self, description: DeviceDescription, key: str, name: DeviceId) -> None:
        self.description = description
        self.key = key
        self.name = name
        self.online = False
        self.detail: str | None = None
        #: Makes the driver, again when a stuck one is replaced; None: cannot take a network.
        self.factory: Callable[[], Device] | None = None
        self.driver: Device | None = None
        self.thread: DeviceThread | None = None
        self.hold: DeviceHold | None = None

    def state(self) -> DeviceState:
        return DeviceState(
            description=self.description,
            online=self.online,
            busy=self.hold is not None,
            owner=self.hold.owner if self.hold else None,
            detail=None if self.online else self.detail,
        )


class QuickTurns:
    """Batches answered on the event loop (``QuickForward``): at most one per turn of the
    loop. A caller whose next batch is already there (a client sending many at once, a job)
    lets the loop's other tasks go between its batches, as a call on a device's thread does."""

    def __init__(self) -> None:
        self._taken = False

    async def wait(self) -> None:
        """Let the loop's other tasks go first if this turn's batch was answered already."""
        if self._taken:
            await asyncio.sleep(0)  # after ``_end``, which call_soon queued before it

    def take(self) -> None:
        if not self._taken:
            self._taken = True
            asyncio.get_running_loop().call_soon(self._end)

    def _end(self) -> None:
        self._taken = False


class DeviceHold:
    """Exclusive use of one device. Every call runs on the device's thread, with a timeout,
    except a small forward batch that the device answers on the event loop (``forward``)."""

    def __init__(self, manager: DeviceManager, entry: _Entry, owner: str) -> None:
        self._manager = manager
        self._entry = entry
        self.owner = owner
        self.description = entry.description
        self.ended = asyncio.Event()
        #: Why the hold ended: None for a normal close, else the error (e.g. DeviceOffline).
        self.end_error: DeviceError | None = None
        self._callbacks: list[HoldEndCallback] = []

    @property
    def device_id(self) -> str:
        return self.description.id

    def on_end(self, callback: HoldEndCallback) -> None:
        """Call ``callback(error_or_None)`` once when the hold ends (at once if it has)."""
        if self.ended.is_set():
            callback(self.end_error)
        else:
            self._callbacks.append(callback)

    async def wait_ended(self) -> DeviceError | None:
        await self.ended.wait()
        return self.end_error

    async def call(self, fn: Callable[[Device], T], *, timeout: float, what: str = "") -> T:
        """Run ``fn(device)`` on the device's thread."""
        entry = self._check_open()
        assert entry.thread is not None and entry.driver is not None
        label = what or getattr(fn, "__name__", "call")
        driver = entry.driver
        interrupt = driver.interrupt if isinstance(driver, Interruptible) else None
        try:
            return await entry.thread.call(
                fn, driver, timeout=timeout, what=label, interrupt=interrupt
            )
        except DeviceUnresponsive as exc:
            self._manager._restart(entry, exc.message)
            raise
        except DeviceIOError as exc:
            self._manager._lost(entry, f"{label} failed: {exc.message}")
            raise DeviceOffline(f"device {self.device_id} went offline: {exc.message}") from exc

    async def apply(self, config: ChipConfig, *, timeout: float = 60.0) -> None:
        await self.call(lambda d: d.apply(config), timeout=timeout, what="apply")

    async def clear(self, *, timeout: float = 60.0) -> None:
        await self.call(lambda d: d.clear(), timeout=timeout, what="clear")

    async def reset_states(self, *, timeout: float = 60.0) -> None:
        await self.call(lambda d: d.reset_states(), timeout=timeout, what="reset_states")

    async def write(
        self,
        spikes: np.ndarray | None = None,
        dvs: np.ndarray | None = None,
        *,
        timeout: float = 10.0,
        checked: Checked | None = None,
    ) -> None:
        await self.call(
            lambda d: d.write(spikes, dvs, checked=checked), timeout=timeout, what="write"
        )
        EVENTS_IN.inc(_count(spikes, dvs))

    async def forward(
        self,
        spikes: np.ndarray | None = None,
        dvs: np.ndarray | None = None,
        *,
        settle_s: float = 1.0,
        timeout: float | None = None,
        checked: Checked | None = None,
    ) -> DeviceOutput:
        """A batch (see :meth:`Device.forward`, also for ``checked``).

        ``settle_s`` bounds the hardware's wait for outputs after the last input is due; the
        call's timeout defaults to the batch's duration plus ``settle_s`` plus 30 s.
        """
        output = await self._forward_quick(spikes, dvs, checked)
        if output is None:
            if timeout is None:
                timeout = batch_span_s(spikes, dvs) + settle_s + 30.0
            output = await self.call(
                lambda d: d.forward(spikes, dvs, timeout=settle_s, checked=checked),
                timeout=timeout,
                what="forward",
            )
        EVENTS_IN.inc(_count(spikes, dvs))
        EVENTS_OUT.inc(output.count)
        return output

    async def _forward_quick(
        self, spikes: np.ndarray | None, dvs: np.ndarray | None, checked: Checked | None
    ) -> DeviceOutput | None:
        """The batch answered here, on the event loop, if the device can (:class:`QuickForward`)
        and its thread is idle: under load, waking the thread and being woken by it took
        longer than a small batch's work."""
        if not isinstance(self._check_open().driver, QuickForward):
            return None
        await self._manager.quick_turns.wait()
        entry = self._check_open()  # again: the hold may have ended, the driver been replaced
        driver, thread = entry.driver, entry.thread
        if not isinstance(driver, QuickForward) or thread is None:
            return None
        output = thread.run_here(lambda: driver.forward_quick(spikes, dvs, checked=checked))
        if output is not None:
            self._manager.quick_turns.take()
        return output

    async def read(self, wait_s: float = 0.1, *, timeout: float | None = None) -> DeviceOutput:
        output = await self.call(
            lambda d: d.read(wait_s), timeout=timeout or wait_s + 10.0, what="read"
        )
        EVENTS_OUT.inc(output.count)
        return output

    async def start_stopwatch(self, *, timeout: float = 10.0) -> None:
        await self.call(lambda d: d.start_stopwatch(), timeout=timeout, what="start_stopwatch")

    async def stop_stopwatch(self, *, timeout: float = 10.0) -> None:
        await self.call(lambda d: d.stop_stopwatch(), timeout=timeout, what="stop_stopwatch")

    async def reset_stopwatch(self, *, timeout: float = 10.0) -> None:
        await self.call(lambda d: d.reset_stopwatch(), timeout=timeout, what="reset_stopwatch")

    async def set_sensor(self, enabled: bool, *, timeout: float = 60.0) -> None:
        await self.call(lambda d: d.set_sensor(enabled), timeout=timeout, what="set_sensor")

    async def read_states(self, core: int, *, timeout: float = 30.0) -> np.ndarray:
        return await self.call(lambda d: d.read_states(core), timeout=timeout, what="read_states")

    async def health(self, *, timeout: float = 10.0) -> DeviceHealth:
        return await self.call(lambda d: d.health(), timeout=timeout, what="health")

    async def close(self, *, timeout: float = 30.0) -> None:
        """End the hold: the device is cleared and released for the next one. Idempotent."""
        if self.ended.is_set():
            return
        entry = self._entry
        self._end(None)
        if entry.hold is self:
            entry.hold = None
        if entry.online and entry.thread is not None and entry.driver is not None:
            driver = entry.driver
            try:
                await entry.thread.call(_release, driver, timeout=timeout, what="close")
            except DeviceError as exc:
                log.warning("closing %s failed: %s", self.device_id, exc.message)
                if isinstance(exc, DeviceIOError):
                    self._manager._lost(entry, f"close failed: {exc.message}")
                elif isinstance(exc, DeviceUnresponsive):
                    self._manager._restart(entry, exc.message)
        log.info("device released", extra={"device": self.device_id})

    def _check_open(self) -> _Entry:
        if self.ended.is_set():
            raise self.end_error or DeviceStateError(f"the hold on {self.device_id} is closed")
        return self._entry

    def _end(self, error: DeviceError | None) -> None:
        if self.ended.is_set():
            return
        self.end_error = error
        self.ended.set()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(error)
            except Exception:
                log.exception("hold end callback failed")


def _release(driver: Device) -> None:
    try:
        driver.clear()
    finally:
        driver.close()


def _count(*batches: np.ndarray | None) -> int:
    return sum(len(batch) for batch in batches if batch is not None)


class DeviceManager:
    def __init__(
        self,
        *,
        host: str,
        virtual: Sequence[str] | None = None,
        samna: SamnaLoader | None = None,
        virtual_factory: VirtualFactory | None = None,
        samna_factory: SamnaFactory | None = None,
        enumerate_timeout_s: float = 10.0,
        close_timeout_s: float = 10.0,
        max_output_events: int | None = None,
    ) -> None:
        """``virtual``: specs like ``speck2fdevkit=2``; None = one Speck 2F devkit if no real
        device is found at start, [] = none. ``max_output_events``: the most events one call
        of a virtual devkit may answer with."""
        self.host = host
        self.quick_turns = QuickTurns()
        self._virtual_specs = (
            None if virtual is None else [parse_virtual_spec(spec) for spec in virtual]
        )
        self._samna = samna or SamnaLoader(timeout_s=60.0)
        self._virtual_factory = virtual_factory or (
            lambda description: _default_virtual_factory(description, max_output_events)
        )
        self._samna_factory = samna_factory or _default_samna_factory
        self._enumerate_timeout_s = enumerate_timeout_s
        self._close_timeout_s = close_timeout_s
        self._entries: dict[str, _Entry] = {}
        self._by_key: dict[str, _Entry] = {}
        self._samna_thread = DeviceThread("samna-enumerate")
        self._scan_lock = asyncio.Lock()
        self._scan_error: str | None = None
        self._unknown_types: set[str] = set()
        self._subscribers: list[tuple[str | None, Callable[[DeviceEvent], None]]] = []
        self._task: asyncio.Task[None] | None = None
        #: Set by the booking subsystem: device ids -> the current booking of each booked one
        #: (one database query for a whole listing).
        self.booking_lookup: Callable[[list[str]], Awaitable[Mapping[str, Any]]] | None = None

    # ----- life cycle -----

    async def start(self, rescan_interval_s: float | None = None) -> None:
        """First scan, virtual devkits, then (with an interval) periodic rescans."""
        await self.rescan()
        specs = self._virtual_specs
        if specs is None:
            real = any(not e.description.virtual for e in self._entries.values())
            specs = [] if real else [parse_virtual_spec(s) for s in DEFAULT_VIRTUAL]
        for device_type, count in specs:
            for index in range(count):
                self._add_virtual(device_type, index)
        if rescan_interval_s:
            self._task = asyncio.create_task(self._rescan_loop(rescan_interval_s))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        closing = []
        for entry in self._entries.values():
            if entry.hold is not None:
                entry.hold._end(DeviceOffline("the daemon is shutting down"))
                entry.hold = None
            if entry.thread is not None and entry.driver is not None:
                closing.append(self._close_quietly(entry))
        await asyncio.gather(*closing)
        for entry in self._entries.values():
            if entry.thread is not None:
                entry.thread.shutdown()
        self._samna_thread.shutdown()

    async def _close_quietly(self, entry: _Entry) -> None:
        assert entry.thread is not None and entry.driver is not None
        try:
            await entry.thread.call(entry.driver.close, timeout=self._close_timeout_s, what="close")
        except Exception as exc:
            log.warning("closing %s failed: %s", entry.description.id, exc)

    async def _rescan_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.rescan()
            except Exception:
                log.exception("device rescan failed")

    # ----- queries -----

    def states(self) -> list[DeviceState]:
        """Every device ever seen: real ones by type and index, then virtual ones."""
        return [entry.state() for entry in sorted(self._entries.values(), key=_order)]

    def dead_threads(self) -> list[str]:
        """Online devices whose thread has stopped (never expected: the health check asks)."""
        return [
            entry.description.id
            for entry in self._entries.values()
            if entry.online and entry.thread is not None and not entry.thread.alive
        ]

    def state(self, device_id: str) -> DeviceState:
        return self._entry(device_id).state()

    def samna_report(self) -> SamnaReport:
        report = self._samna.report()
        if self._scan_error is not None:
            return replace(report, detail=f"last device scan failed: {self._scan_error}")
        return report

    def hold(self, device_id: str) -> DeviceHold | None:
        return self._entry(device_id).hold

    def subscribe(
        self, callback: Callable[[DeviceEvent], None], device_id: str | None = None
    ) -> Callable[[], None]:
        """Be told when a device (or any, with None) goes offline or comes back.

        Returns the function that unsubscribes."""
        item = (device_id, callback)
        self._subscribers.append(item)
        return lambda: self._subscribers.remove(item) if item in self._subscribers else None

    # ----- holds -----

    async def open_hold(self, device_id: str, *, owner: str, timeout: float = 60.0) -> DeviceHold:
        entry = self._entry(device_id)
        if not entry.online:
            raise DeviceOffline(f"device {device_id} is offline: {entry.detail}")
        if entry.driver is None or entry.thread is None:
            raise DeviceUnsupported(
                f"device {device_id} is a {entry.description.type}, which cannot take a network"
            )
        if entry.hold is not None:
            raise DeviceBusy(f"device {device_id} is in use by {entry.hold.owner}")
        hold = DeviceHold(self, entry, owner)
        entry.hold = hold
        try:
            await entry.thread.call(entry.driver.open, timeout=timeout, what="open")
        except DeviceError as exc:
            hold._end(exc)
            if entry.hold is hold:
                entry.hold = None
            if isinstance(exc, DeviceIOError):
                self._lost(entry, f"open failed: {exc.message}")
            raise
        return hold

    # ----- scanning -----

    async def rescan(self) -> None:
        async with self._scan_lock:
            module = await self._samna.module()
            if module is None:
                return
            try:
                infos = await self._samna_thread.call(
                    module.device.get_all_devices,
                    timeout=self._enumerate_timeout_s,
                    what="samna.device.get_all_devices",
                )
            except Exception as exc:
                self._scan_error = f"{type(exc).__name__}: {exc}"
                log.error("samna device scan failed: %s", self._scan_error)
                return
            self._scan_error = None
            self._update_real(module, list(infos))

    def _update_real(self, module: ModuleType, infos: list[Any]) -> None:
        types = samna_type_names()
        found: dict[str, tuple[str, Any]] = {}
        for info in infos:
            device_type = types.get(info.device_type_name)
            if device_type is None:
                if info.device_type_name not in self._unknown_types:
                    self._unknown_types.add(info.device_type_name)
                    log.warning("ignoring unknown samna device type %r", info.device_type_name)
                continue
            found[_device_key(device_type, info)] = (device_type, info)
        for entry in list(self._entries.values()):
            if entry.description.virtual or not entry.online:
                continue
            now = found.get(entry.key)
            if now is None:
                self._lost(entry, "disappeared from samna's device list (unplugged?)")
            elif _usb(now[1]) != (entry.description.usb_bus, entry.description.usb_address):
                # Same serial at a new USB address: it was re-plugged between two scans.
                self._lost(entry, "was re-plugged (new USB address)")
        for key, (device_type, info) in sorted(found.items(), key=lambda kv: _usb(kv[1][1])):
            entry = self._by_key.get(key)
            if entry is not None and entry.online:
                continue
            if entry is None:
                name = DeviceId(device_type, self._free_index(device_type))
                entry = _Entry(_describe(name, device_type, info, self.host), key, name)
                self._entries[entry.description.id] = entry
                self._by_key[key] = entry
            else:
                # Same key, host and name: the same id, with what the device says now.
                entry.description = _describe(entry.name, device_type, info, self.host)
            self._bring_online(entry, module, info)

    def _free_index(self, device_type: str) -> int:
        taken = {e.name for e in self._entries.values()}
        index = 0
        while DeviceId(device_type, index) in taken:
            index += 1
        return index

    def _bring_online(self, entry: _Entry, module: ModuleType, info: Any) -> None:
        description = entry.description
        entry.factory = (
            (lambda: self._samna_factory(module, info, description))
            if description.supported
            else None
        )
        entry.driver = entry.factory() if entry.factory else None
        entry.thread = DeviceThread(f"device {description.id}") if entry.driver else None
        entry.online = True
        entry.detail = None
        log.info("device online", extra={"device": description.id})
        self._emit(DeviceEvent(description.id, online=True))

    def _add_virtual(self, device_type: str, index: int) -> None:
        name = DeviceId(device_type, index, virtual=True)
        description = DeviceDescription(
            id=lab_id(name, host=self.host),
            name=str(name),
            type=device_type,
            chip=SUPPORTED_DEVICES[device_type],
            virtual=True,
            host=self.host,
        )
        entry = _Entry(description, key=description.id, name=name)
        entry.factory = lambda: self._virtual_factory(description)
        entry.driver = entry.factory()
        entry.thread = DeviceThread(f"device {description.id}")
        entry.online = True
        self._entries[description.id] = entry
        self._by_key[entry.key] = entry

    def _lost(self, entry: _Entry, reason: str) -> None:
        """The device is gone: offline under the same id, its hold ended, subscribers told."""
        if not entry.online:
            return
        device_id = entry.description.id
        log.warning("device offline: %s", reason, extra={"device": device_id})
        entry.online = False
        entry.detail = reason
        hold, entry.hold = entry.hold, None
        if hold is not None:
            hold._end(
                DeviceOffline(f"device {device_id} went offline ({reason}); the hold is ended")
            )
        driver, thread = entry.driver, entry.thread
        entry.driver = entry.thread = None
        _abandon(device_id, driver, thread)
        self._emit(DeviceEvent(device_id, online=False, reason=reason))

    def _restart(self, entry: _Entry, reason: str) -> None:
        """A device thread is stuck in a call: a new thread and driver take over (the old
        thread is abandoned; it releases its driver if the call ever returns), and the hold
        ends, so that its deployment ends and the next user finds the device working."""
        if entry.thread is None or entry.factory is None or not entry.online:
            return
        device_id = entry.description.id
        log.error("device restarted: %s", reason, extra={"device": device_id})
        driver, thread = entry.driver, entry.thread
        entry.driver, entry.thread = entry.factory(), DeviceThread(f"device {device_id}")
        _abandon(device_id, driver, thread)
        hold, entry.hold = entry.hold, None
        if hold is not None:
            hold._end(DeviceTimeout(f"{reason}; the device was restarted and the hold is ended"))

    def _emit(self, event: DeviceEvent) -> None:
        for device_id, callback in list(self._subscribers):
            if device_id is None or device_id == event.device_id:
                try:
                    callback(event)
                except Exception:
                    log.exception("device event subscriber failed")

    def _entry(self, device_id: str) -> _Entry:
        """The device with this id, or with this name (names are unique on a host)."""
        entry = self._entries.get(device_id) or next(
            (e for e in self._entries.values() if e.description.name == device_id), None
        )
        if entry is None:
            raise unknown_device(device_id, self._entries)
        return entry


def _order(entry: _Entry) -> tuple[bool, str, int]:
    return (entry.name.virtual, entry.name.type, entry.name.index)


def _usb(info: Any) -> tuple[int, int]:
    return (int(info.usb_bus_number), int(info.usb_device_address))


def _device_key(device_type: str, info: Any) -> str:
    serial = str(getattr(info, "serial_number", "") or "")
    if serial:
        return f"{device_type}#{serial}"
    bus, address = _usb(info)
    return f"{device_type}@{bus}:{address}"


def _describe(name: DeviceId, device_type: str, info: Any, host: str) -> DeviceDescription:
    bus, address = _usb(info)
    logic = getattr(info, "logic_version", None)
    serial = str(info.serial_number) if getattr(info, "serial_number", "") else None
    return DeviceDescription(
        id=lab_id(name, host=host, serial_number=serial),
        name=str(name),
        type=device_type,
        chip=SUPPORTED_DEVICES.get(device_type),
        virtual=False,
        serial_number=serial,
        usb_bus=bus,
        usb_address=address,
        logic_version=None if logic is None else str(logic),
        host=host,
    )


def _abandon(device_id: str, driver: Device | None, thread: DeviceThread | None) -> None:
    """Release what can be released, without waiting: the handle may hang on a dead bus, or
    the thread be stuck in a call."""
    if driver is not None and thread is not None:
        thread.submit(driver.close).add_done_callback(_log_close_error(device_id))
        thread.shutdown()


def _log_close_error(device_id: str) -> Callable[[Any], None]:
    def check(future: Any) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.warning("closing offline %s failed: %s", device_id, future.exception())

    return check


def _default_virtual_factory(
    description: DeviceDescription, max_output_events: int | None
) -> Device:
    from .virtual import VirtualDevkit

    return VirtualDevkit(description, max_output_events=max_output_events)


def _default_samna_factory(module: ModuleType, info: Any, description: DeviceDescription) -> Device:
    from .samna_driver import SamnaDevkit

    return SamnaDevkit(module, info, description)
