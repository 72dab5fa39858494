"""One deployment's live I/O: the device hold, the deployed configuration, and the
consumers of what comes out of the chip.

Outputs reach consumers (continuous streams, DVS streams, recordings) through
:class:`OutputSubscription` queues, each bounded by a number of events. The pump that reads
the device runs only while someone subscribes. **Overflow policy: drop.** When a consumer
falls behind by more than its bound, newer outputs are dropped for that consumer only and
counted in ``dropped``, which stream stats frames report; the device and the other consumers
never wait for a slow reader, and the daemon's memory stays bounded.

A forward batch takes the device exclusively: the pump pauses while it runs, and the batch's
outputs go to its caller only. Its cost is bounded by :class:`BatchLimits` (the daemon's
settings), checked before the device starts: the simulated span, the slow-clock ticks that
span holds, and the number of output events its answer may hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import KW_ONLY, dataclass, field

import numpy as np

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.deploy import Deployment, NeuronStates
from specklab.schemas.errors import DomainError
from specklab.schemas.inputs import Checked

from ..devices.base import DeviceOutput
from ..devices.errors import DeviceError, OutputTooLarge
from ..devices.manager import DeviceHold
from ..devices.shared import batch_span_s
from ..metrics import EVENTS_DROPPED

log = logging.getLogger("specklab.deployments")

#: Events a consumer may fall behind by before its outputs are dropped (about 14 MB of spikes).
DEFAULT_BACKLOG_EVENTS = 1 << 20
#: How long one pump read waits for outputs: the continuous streams' flush interval.
PUMP_INTERVAL_S = 0.001


#: Device-call time allowed per slow-clock tick of a batch, beyond its span (a tick of a large
#: leaky network costs up to ~70 us on a slow machine).
TICK_ALLOWANCE_S = 1e-4
#: Device-call time allowed beyond a batch's span and ticks.
FORWARD_SLACK_S = 30.0


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """What one forward batch may cost (settings ``max_batch_*``)."""

    span_s: float
    ticks: int
    output_events: int

    def check(
        self, config: ChipConfig, *batches: np.ndarray | None, checked: Checked | None = None
    ) -> float:
        """Refuse a batch over the limits (422 ``batch_too_long``); returns the device-call
        timeout it deserves. Batches that ``checked`` covers are sorted: their ends are read."""
        arrays = [b for b in batches if b is not None]
        sorted_by_t = checked is not None and checked.covers(config, *arrays)
        span_s = batch_span_s(*arrays, sorted_by_t=sorted_by_t)
        if span_s > self.span_s:
            raise DomainError(
                422,
                "batch_too_long",
                f"the batch spans {span_s:g} s of device time, more than the {self.span_s:g} s "
                "a batch may (max_batch_span_s): split it into several batches",
            )
        ticks = int(span_s * (config.slow_clock_hz or 0))
        if ticks > self.ticks:
            raise DomainError(
                422,
                "batch_too_long",
                f"the batch spans {ticks} ticks of the {config.slow_clock_hz:g} Hz slow clock, "
                f"more than the {self.ticks} a batch may (max_batch_ticks): split it into "
                "several batches or slow the clock down",
            )
        return span_s + ticks * TICK_ALLOWANCE_S + FORWARD_SLACK_S

    def check_output(self, output: DeviceOutput) -> None:
        if output.count > self.output_events:
            raise OutputTooLarge(
                f"the batch caused {output.count} output events, more than the "
                f"{self.output_events} one answer may hold (max_batch_output_events): "
                "send shorter batches"
            )


@dataclass(frozen=True, slots=True)
class EndReason:
    """Why a deployment ended while consumers were attached: their fatal error frame."""

    code: str
    message: str


class OutputSubscription:
    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self.dropped = 0
        self.queued_events = 0
        self._queue: asyncio.Queue[DeviceOutput | EndReason] = asyncio.Queue()

    def _offer(self, output: DeviceOutput) -> None:
        if self.queued_events + output.count > self.max_events:
            self.dropped += output.count
            EVENTS_DROPPED.inc(output.count)
            return
        self.queued_events += output.count
        self._queue.put_nowait(output)

    def _end(self, reason: EndReason) -> None:
        self._queue.put_nowait(reason)

    async def get(self) -> DeviceOutput | EndReason:
        item = await self._queue.get()
        if isinstance(item, DeviceOutput):
            self.queued_events -= item.count
        return item


@dataclass(eq=False, repr=False)
class DeviceHub:
    hold: DeviceHold
    config: ChipConfig
    deployment: Deployment
    _: KW_ONLY
    booking_id: int
    user_id: int
    limits: BatchLimits
    end_reason: EndReason | None = field(init=False, default=None)
    ended_event: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _device_lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)
    _subscriptions: set[OutputSubscription] = field(init=False, default_factory=set)
    _pump: asyncio.Task[None] | None = field(init=False, default=None)
    _sensor_users: int = field(init=False, default=0)

    @property
    def device_id(self) -> str:
        return self.hold.device_id

    @property
    def ended(self) -> bool:
        return self.end_reason is not None

    # ----- device calls -----

    async def forward(
        self, spikes: np.ndarray | None, dvs: np.ndarray | None, checked: Checked | None = None
    ) -> DeviceOutput:
        """Run a batch within :attr:`limits`; DomainError 422 for one over them. ``checked``:
        the input check's proof, passed on to the device (see ``Device.forward``)."""
        timeout = self.limits.check(self.config, spikes, dvs, checked=checked)
        async with self._device_lock:
            output = await self.hold.forward(spikes, dvs, timeout=timeout, checked=checked)
        self.limits.check_output(output)
        return output

    async def write(
        self, spikes: np.ndarray | None, dvs: np.ndarray | None, checked: Checked | None = None
    ) -> None:
        await self.hold.write(spikes, dvs, checked=checked)

    async def reset_states(self) -> None:
        async with self._device_lock:
            await self.hold.reset_states()

    async def read_states(self, layer: int) -> NeuronStates:
        """A model layer's membrane potentials now; DomainError 404 for a layer not deployed."""
        core = self.config.core_of_layer.get(layer)
        if core is None:
            raise DomainError(
                404,
                "layer_not_found",
                f"the deployment on {self.device_id} has no layer {layer}; its layers are "
                f"{sorted(self.config.core_of_layer)}",
            )
        async with self._device_lock:
            states = await self.hold.read_states(core)
        return NeuronStates.of(layer, core, states)

    async def restart_stopwatch(self, *, only_if_alone: bool = True) -> bool:
        """Restart the device's time at 0, so that continuous streams, recordings and replays
        time their events from their own start. While others consume the device's output, the
        stopwatch runs on (their times must not jump back) unless ``only_if_alone`` is off.
        Outputs nobody read yet carry the old times and are dropped. Returns whether it
        restarted."""
        async with self._device_lock:
            if self._subscriptions and only_if_alone:
                return False
            await self.hold.reset_stopwatch()
            await self.hold.start_stopwatch()
            if not self._subscriptions:
                await self.hold.read(0.0)
            return True

    async def reapply(self, config: ChipConfig) -> None:
        """Write a changed configuration (neuron states start again from their initial values)."""
        async with self._device_lock:
            await self.hold.apply(config)
            self.config = config

    @contextlib.asynccontextmanager
    async def sensor(self) -> AsyncIterator[None]:
        """The DVS sensor is on while any user holds it."""
        self._sensor_users += 1
        if self._sensor_users == 1:
            await self.hold.set_sensor(True)
        try:
            yield
        finally:
            self._sensor_users -= 1
            if self._sensor_users == 0 and not self.ended:
                with contextlib.suppress(DeviceError):
                    await self.hold.set_sensor(False)

    # ----- outputs -----

    @contextlib.asynccontextmanager
    async def subscribe(
        self, max_events: int = DEFAULT_BACKLOG_EVENTS
    ) -> AsyncIterator[OutputSubscription]:
        subscription = OutputSubscription(max_events)
        if self.end_reason is not None:
            subscription._end(self.end_reason)
        self._subscriptions.add(subscription)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run_pump(), name=f"pump {self.device_id}")
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)

    async def _run_pump(self) -> None:
        while self._subscriptions and not self.ended:
            try:
                async with self._device_lock:
                    output = await self.hold.read(PUMP_INTERVAL_S)
            except DeviceError as exc:
                await self.end(EndReason(exc.code, exc.message))
                return
            if output.count:
                for subscription in list(self._subscriptions):
                    subscription._offer(output)

    # ----- the end -----

    async def end(self, reason: EndReason | None = None) -> None:
        """Tell consumers (with ``reason``), stop the pump, release the device. Idempotent."""
        if self.end_reason is not None:
            return
        self.end_reason = reason or EndReason("deployment_removed", "the deployment was removed")
        self.ended_event.set()
        for subscription in list(self._subscriptions):
            subscription._end(self.end_reason)
        if self._pump is not None and self._pump is not asyncio.current_task():
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        try:
            await self.hold.close()
        except DeviceError as exc:
            log.warning("releasing %s failed: %s", self.device_id, exc.message)

    def stats(self) -> dict[str, int]:
        return {
            "consumers": len(self._subscriptions),
            "queued_events": sum(s.queued_events for s in self._subscriptions),
            "dropped": sum(s.dropped for s in self._subscriptions),
        }
