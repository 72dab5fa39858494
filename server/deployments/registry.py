"""Deployments: the guide's ``hw_model.to(device, ...)`` as a service.

A deployment puts a user's compiled model on a device they have booked, and lives until it is
removed, its booking ends or is preempted, or the device goes away; whichever happens, the
device is released (cleared) and every stream on it gets a fatal error frame saying why.
Deployments live in the daemon's memory: after a restart devices start empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from sqlalchemy.orm import Session

from specklab.schemas.chipconfig import ChipConfig, DVSLayer, unclocked_leak_warning
from specklab.schemas.compile import CompileOptions
from specklab.schemas.deploy import Deployment, DeploymentRequest
from specklab.schemas.errors import DomainError
from specklab.schemas.patch import ConfigPatch, apply_patch

from ..auth.principal import Principal
from ..booking.notifications import BookingEvents
from ..booking.service import BookingPolicy, renew_lease, require_active_booking
from ..devices.errors import DeviceError
from ..devices.manager import DeviceManager
from ..models import ModelService
from ..storage import Database, utcnow
from ..storage.audit import audit
from ..storage.tables import Booking
from .hub import BatchLimits, DeviceHub, EndReason

log = logging.getLogger("specklab.deployments")


def monitoring_patch(
    config: ChipConfig, monitor_layers: list[int | Literal["dvs"]] | Literal["all"]
) -> ConfigPatch:
    """The guide's ``monitor_layers`` as a patch; "all" is every layer and the DVS layer."""
    if monitor_layers == "all":
        everything: list[int | Literal["dvs"]] = list(range(len(config.layers)))
        if config.dvs_layer is not None:
            everything.append("dvs")
        return ConfigPatch(monitor_layers=everything)
    return ConfigPatch(monitor_layers=monitor_layers)


def deployed_config(config: ChipConfig, request: DeploymentRequest) -> ChipConfig:
    """The compiled configuration with the request's monitors, slow clock and patch applied."""
    config = apply_patch(config, monitoring_patch(config, request.monitor_layers))
    if request.slow_clock_hz is not None:
        config = apply_patch(config, ConfigPatch(slow_clock_hz=request.slow_clock_hz))
    if request.config_patch is not None:
        config = apply_patch(config, request.config_patch)
    return config


def with_dvs_monitor(config: ChipConfig, *, raw: bool) -> ChipConfig:
    """``config`` with a DVS layer whose output leaves the chip: the sensor's raw events, or the
    layer's pre-processed ones."""
    out = config.model_copy()
    out.dvs_layer = (config.dvs_layer or DVSLayer()).model_copy()
    if raw:
        out.dvs_layer.raw_monitor_enable = True
    else:
        out.dvs_layer.monitor_enable = True
    return out


def describe(
    device_id: str, model_id: int | None, model_name: str, owner: str, config: ChipConfig
) -> Deployment:
    monitored = [p.layer for p in config.layers if config.cnn_layers[p.core].monitor_enable]
    dvs = config.dvs_layer
    layers = {p.layer: p.core for p in config.layers}
    summary = (
        f"model {model_id} ({model_name}) on {device_id}: "
        + ", ".join(f"layer {layer} -> core {core}" for layer, core in layers.items())
        + f"; monitoring layers {monitored}"
        + (" and the DVS layer" if dvs and dvs.monitor_enable else "")
    )
    return Deployment(
        device_id=device_id,
        model_id=model_id,
        owner=owner,
        deployed_at=utcnow(),
        layers=layers,
        inputs=list(config.inputs),
        monitored=monitored,
        dvs_input=bool(dvs and dvs.destinations),
        dvs_monitored=bool(dvs and dvs.monitor_enable),
        summary=summary,
        warnings=[unclocked_leak_warning(leaks)] if (leaks := config.unclocked_leaks) else [],
    )


@dataclass
class _SensorUse:
    """The DVS streams open on a user's deployment: its configuration before the first one
    (what the last one to end puts back), and how many want which monitor."""

    base: ChipConfig
    #: raw -> open streams (raw: the sensor's events; not raw: the DVS layer's).
    users: Counter[bool] = field(default_factory=Counter)


@dataclass(eq=False, repr=False, kw_only=True)
class Deployments:
    devices: DeviceManager
    db: Database
    booking_events: BookingEvents
    policy: BookingPolicy
    models: ModelService
    limits: BatchLimits
    _hubs: dict[str, DeviceHub] = field(init=False, default_factory=dict)
    _watchers: dict[str, asyncio.Task[None]] = field(init=False, default_factory=dict)
    _endings: set[asyncio.Task[None]] = field(init=False, default_factory=set)
    _sensor_uses: dict[DeviceHub, _SensorUse] = field(init=False, default_factory=dict)
    _lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)
    #: Set when the daemon begins to stop: new deployments and streams are refused.
    stopping: bool = field(init=False, default=False)
    #: One per open stream, set when it has finished.
    _streams: set[asyncio.Event] = field(init=False, default_factory=set)

    @contextlib.contextmanager
    def stream_open(self) -> Iterator[None]:
        """Count a stream as open for the block (:meth:`stop_streams` waits for it)."""
        finished = asyncio.Event()
        self._streams.add(finished)
        try:
            yield
        finally:
            self._streams.discard(finished)
            finished.set()

    async def stop_streams(self, timeout: float) -> None:
        """The daemon is stopping: end every deployment, so that each stream gets its fatal
        ``daemon_stopping`` frame, and wait (up to ``timeout``) for the streams to finish.
        Called before the server closes its connections."""
        self.stopping = True
        waits = [asyncio.ensure_future(finished.wait()) for finished in self._streams]
        await self.close()
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout)
            for wait in pending:
                wait.cancel()

    async def require_booking(self, user: Principal, device_id: str) -> Booking:
        if self.stopping:
            raise DomainError(503, "daemon_stopping", "the daemon is shutting down")
        self.devices.state(device_id)  # DeviceNotFound for unknown ids

        def require(session: Session) -> Booking:
            booking = require_active_booking(session, user, device_id)
            session.commit()  # the call counts as use of the booking
            return booking

        return await self.db.run(require, write=True)

    async def deploy(
        self, user: Principal, device_id: str, request: DeploymentRequest
    ) -> Deployment:
        booking = await self.require_booking(user, device_id)
        record = await self.db.run(lambda s: self.models.get(s, user, request.model_id))
        options = CompileOptions.model_validate(record.options).model_copy(
            update={"chip_layers_ordering": request.chip_layers_ordering}
        )
        compiled = await self.models.config(record, options)
        config = deployed_config(compiled, request)
        description = describe(device_id, record.id, record.name, user.name, config)
        hub = await self._install(user, booking, config, description)
        await self._audit(user, "device.deploy", device_id, {"model_id": record.id})
        log.info("deployed", extra={"device": device_id, "model": record.id, "user": user.name})
        return hub.deployment

    @contextlib.asynccontextmanager
    async def sensor_hub(
        self, user: Principal, device_id: str, *, raw: bool
    ) -> AsyncIterator[DeviceHub]:
        """A deployment whose DVS layer's output (``raw``: the sensor's own events) leaves the
        chip, for as long as the block runs: the user's deployment, re-applied with that monitor
        if it lacked it and re-applied as it was when the last such block ends (neuron states
        restart both times), or the DVS layer alone on the device's own chip."""
        booking = await self.require_booking(user, device_id)
        hub = self._hubs.get(device_id)
        if hub is not None and not hub.ended and hub.booking_id == booking.id:
            use = self._sensor_uses.setdefault(hub, _SensorUse(hub.config))
            use.users[raw] += 1
            try:
                await self._show_sensor(hub, use)
                yield hub
            finally:
                use.users[raw] -= 1
                if not +use.users:
                    del self._sensor_uses[hub]
                if not hub.ended:
                    # the stream's task may be cancelled (its client gone): still put it back
                    with anyio.CancelScope(shield=True):
                        await self._show_sensor(hub, use)
            return
        chip = self.devices.state(device_id).description.chip
        if chip is None:
            raise DomainError(409, "no_chip", f"{device_id} carries no chip with a DVS layer")
        config = with_dvs_monitor(ChipConfig(chip=chip), raw=raw)
        description = describe(device_id, None, "the DVS layer alone", user.name, config)
        hub = await self._install(user, booking, config, description)
        try:
            yield hub
        finally:
            async with self._lock:
                await self._end(hub, EndReason("deployment_removed", "the DVS session ended"))

    async def _show_sensor(self, hub: DeviceHub, use: _SensorUse) -> None:
        """Apply the user's configuration with the DVS monitors its sensor streams need now."""
        wanted = use.base
        for raw in (False, True):
            if use.users[raw] > 0:
                wanted = with_dvs_monitor(wanted, raw=raw)
        if wanted != hub.config:
            await self._reapply(hub, wanted)

    async def _reapply(self, hub: DeviceHub, config: ChipConfig) -> None:
        await hub.reapply(config)
        dvs = config.dvs_layer
        hub.deployment = hub.deployment.model_copy(
            update={"dvs_monitored": bool(dvs and dvs.monitor_enable)}
        )

    async def _install(
        self, user: Principal, booking: Booking, config: ChipConfig, deployment: Deployment
    ) -> DeviceHub:
        """Open the device for ``user``, write ``config``, and watch the booking and device."""
        device_id = deployment.device_id
        async with self._lock:
            previous = self._hubs.pop(device_id, None)
            if previous is not None:
                await self._end(previous, EndReason("redeployed", "a new model was deployed"))
            hold = await self.devices.open_hold(device_id, owner=user.name)
            try:
                await hold.apply(config)
            except DeviceError:
                await hold.close()
                raise
            hub = DeviceHub(
                hold,
                config,
                deployment,
                booking_id=booking.id,
                user_id=user.id,
                limits=self.limits,
            )
            self._hubs[device_id] = hub
            hold.on_end(lambda error: self._device_gone(hub, error))
            self._watchers[device_id] = asyncio.create_task(
                self._watch_booking(hub), name=f"booking watch {device_id}"
            )
        return hub

    async def heartbeat(self, user: Principal, hub: DeviceHub) -> None:
        """Renew the lease of the booking a stream runs under."""

        def renew(session: Session) -> None:
            booking = session.get(Booking, hub.booking_id)
            if booking is None:
                raise DomainError(404, "booking_not_found", f"no booking {hub.booking_id}")
            renew_lease(session, booking=booking, user=user, policy=self.policy)
            session.commit()

        await self.db.run(renew, write=True)

    async def keep_in_use(self, user: Principal, hub: DeviceHub) -> None:
        """An open stream is use of its booking, frames or not: renew it well within the idle
        time until the stream closes (the caller cancels this)."""
        while True:
            await asyncio.sleep(self.policy.idle.total_seconds() / 3)
            with contextlib.suppress(DomainError):  # the booking ended: its watch ends the stream
                await self.heartbeat(user, hub)

    def hub(self, user: Principal, device_id: str, *, lab_activity: bool = False) -> DeviceHub:
        """The live deployment of ``device_id``, if ``user`` may see it (owner or admin; for
        ``lab_activity``, what an observer watches too)."""
        hub = self._hubs.get(device_id)
        sees_all = user.watches_lab if lab_activity else user.is_admin
        if hub is None or hub.ended or not (sees_all or hub.user_id == user.id):
            self.devices.state(device_id)  # unknown devices answer device_not_found
            raise DomainError(404, "not_deployed", f"nothing is deployed on {device_id}")
        return hub

    def live_hub(self, device_id: str) -> DeviceHub | None:
        """The running deployment of ``device_id``, whoever owns it: for read-only spectators
        (``api/live.py``), who must not act on it."""
        hub = self._hubs.get(device_id)
        return None if hub is None or hub.ended else hub

    async def hub_for_use(self, user: Principal, device_id: str) -> DeviceHub:
        """The deployment ``user`` may stream from: theirs, under their running booking."""
        booking = await self.require_booking(user, device_id)
        hub = self._hubs.get(device_id)
        if hub is None or hub.ended or hub.booking_id != booking.id:
            raise DomainError(
                409,
                "not_deployed",
                f"nothing is deployed on {device_id} in your booking: "
                f"deploy a model first (POST /v1/devices/{device_id}/deployment)",
            )
        return hub

    async def remove(self, user: Principal, device_id: str) -> None:
        hub = self.hub(user, device_id)
        if not user.can_write:
            raise DomainError(403, "read_only", "observers cannot change deployments")
        async with self._lock:
            if self._hubs.get(device_id) is hub:
                del self._hubs[device_id]
            await self._end(hub, EndReason("deployment_removed", "the deployment was removed"))
        await self._audit(user, "device.undeploy", device_id, {})

    async def close(self) -> None:
        for hub in list(self._hubs.values()):
            await self._end(hub, EndReason("daemon_stopping", "the daemon is shutting down"))
        self._hubs.clear()

    async def _end(self, hub: DeviceHub, reason: EndReason) -> None:
        watcher = self._watchers.pop(hub.device_id, None)
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()
        await hub.end(reason)
        if self._hubs.get(hub.device_id) is hub:
            del self._hubs[hub.device_id]

    def _device_gone(self, hub: DeviceHub, error: DeviceError | None) -> None:
        if error is None or hub.ended:
            return
        reason = EndReason(error.code, error.message)
        # The loop keeps only weak references to tasks: hold this one until it is done.
        task = asyncio.get_running_loop().create_task(self._end(hub, reason))
        self._endings.add(task)
        task.add_done_callback(self._endings.discard)

    async def _watch_booking(self, hub: DeviceHub) -> None:
        async with self.booking_events.subscribe(hub.device_id) as events:
            async for event in events:
                if event.booking_id != hub.booking_id or event.kind == "extended":
                    continue
                if event.kind == "preempted":
                    reason = EndReason(
                        "booking_preempted",
                        f"booking {event.booking_id} of {hub.device_id} was {event.reason}",
                    )
                else:
                    reason = EndReason(
                        "booking_ended", f"booking {event.booking_id} ended ({event.reason})"
                    )
                await self._end(hub, reason)
                return

    async def _audit(
        self, user: Principal, action: str, device_id: str, detail: dict[str, Any]
    ) -> None:
        def write(session: Session) -> None:
            audit(session, user, action, f"device:{device_id}", detail)
            session.commit()

        await self.db.run(write, write=True)
