"""The virtual devkit: the simulator behind the :class:`~.base.Device` interface.

Batch mode (``forward``) is exact: the inputs run through the simulator at once, its clock and
slow clock restarted at the batch's first event as the devkit's stopwatch is, and everything
they cause comes back (no quiet period is needed). The simulator runs in the inputs' own time
base there, and in the stopwatch's otherwise, so no timestamps are rewritten.

Continuous mode is paced like the devkit's stopwatch: a written event enters the chip when the
stopwatch reaches its timestamp (at once if that is past), and every :meth:`VirtualDevkit.read`
first runs the chip up to the stopwatch's current time, slow-clock ticks and sensor included.

Two things differ from the simulator's own view of DVS input, to match the chip: events written
by the host always enter the DVS layer (``pass_sensor_events`` only gates the sensor, as the
vendor documents), and only sensor events appear on the raw monitor.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable

import numpy as np

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.events import (
    DVS_DTYPE,
    READOUT_DTYPE,
    SPIKE_DTYPE,
    concat_events,
    take_events,
)
from specklab.schemas.inputs import Checked

from ..simulator import ChipSimulator, SimulatorError, SyntheticSensor
from ..simulator.engine import Cancelled, OutputLimit
from . import shared as ev
from .base import DeviceDescription, DeviceHealth, DeviceOutput
from .errors import (
    ConfigRejected,
    DeviceStateError,
    DeviceTimeout,
    InvalidArgument,
    InvalidEvents,
    OutputTooLarge,
)

#: Events per second of the virtual DVS sensor when it is on.
DEFAULT_SENSOR_RATE_HZ = 20_000.0
#: A forward batch of at most this many input events may run on the caller's thread
#: (:meth:`VirtualDevkit.forward_quick`)...
QUICK_EVENTS = 256
#: ...within this many neuron updates (a fraction of a millisecond).
QUICK_WORK = 1 << 18
#: After a batch that did not fit, this many batches go to the device's thread without a try:
#: a try that does not fit costs the event loop up to QUICK_WORK for nothing.
QUICK_PAUSE = 16


class _Stopwatch:
    """Microseconds since the last reset, counting only while running."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._running = False
        self._base_us = 0
        self._since = clock()

    @property
    def running(self) -> bool:
        return self._running

    def now_us(self) -> int:
        if not self._running:
            return self._base_us
        return self._base_us + int((self._clock() - self._since) * 1e6)

    def start(self) -> None:
        if not self._running:
            self._since = self._clock()
            self._running = True

    def stop(self) -> None:
        self._base_us = self.now_us()
        self._running = False

    def set(self, t_us: int) -> None:
        self._base_us = t_us
        self._since = self._clock()


class VirtualDevkit:
    def __init__(
        self,
        description: DeviceDescription,
        *,
        sensor_rate_hz: float = DEFAULT_SENSOR_RATE_HZ,
        seed: int = 0,
        poll_s: float = 0.002,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_output_events: int | None = None,
    ) -> None:
        """``max_output_events``: the most events one call may answer with (OutputTooLarge)."""
        if description.chip is None:
            raise DeviceStateError(f"{description.id} cannot take a network")
        self._description = description
        self._sensor_rate_hz = sensor_rate_hz
        self._seed = seed
        self._poll_s = poll_s
        self._max_output_events = max_output_events
        self._clock = clock
        self._sleep = sleep
        self._watch = _Stopwatch(clock)
        self._open = False
        self._config: ChipConfig | None = None
        self._sim: ChipSimulator | None = None
        self._sensor: SyntheticSensor | None = None
        self._sensor_on = False
        #: Written inputs the stopwatch has not reached yet, sorted by t.
        self._queued_spikes = ev.InputQueue(SPIKE_DTYPE)
        self._queued_dvs = ev.InputQueue(DVS_DTYPE)
        #: Stopwatch time up to which the chip has run (the simulator keeps the stopwatch's time
        #: base outside forward).
        self._done_us = 0
        self._out_spikes: list[np.ndarray] = []
        self._out_dvs: list[np.ndarray] = []
        self._out_readout: list[np.ndarray] = []
        self._events_out = 0
        #: Batches :meth:`forward_quick` still declines without a try (see QUICK_PAUSE).
        self._quick_pause = 0
        #: Set by :meth:`interrupt` (another thread); the simulator stops between its chunks.
        self._cancel = threading.Event()

    @property
    def description(self) -> DeviceDescription:
        return self._description

    # ----- life cycle -----

    def open(self) -> None:
        self._open = True

    def interrupt(self) -> None:
        self._cancel.set()

    def close(self) -> None:
        self._unload()
        self._sensor_on = False
        self._watch.stop()
        self._open = False

    # ----- configuration -----

    def apply(self, config: ChipConfig) -> None:
        self._require_open()
        ev.check_chip(self._description, config)
        try:
            simulator = ChipSimulator(
                _as_simulated(config), slow_clock_hz=config.slow_clock_hz, input_config=config
            )
        except SimulatorError as exc:
            raise ConfigRejected(f"the virtual chip refused the configuration: {exc}") from None
        self._unload()
        self._done_us = self._watch.now_us()
        simulator.reset_clock(self._done_us)
        self._config, self._sim = config, simulator

    def clear(self) -> None:
        self._require_open()
        self._unload()

    def reset_states(self) -> None:
        self._require_open()
        if self._sim is not None:
            self._catch_up()
            self._sim.reset_states()

    def set_sensor(self, enabled: bool) -> None:
        self._require_open()
        self._catch_up()
        if enabled and self._sensor is None:
            self._sensor = SyntheticSensor(rate_hz=self._sensor_rate_hz, seed=self._seed)
        self._sensor_on = enabled

    # ----- events -----

    def write(
        self,
        spikes: np.ndarray | None = None,
        dvs: np.ndarray | None = None,
        *,
        checked: Checked | None = None,
    ) -> None:
        """Queue inputs; what ``checked`` covers for this configuration is not checked again
        when it runs (nor what the queue makes of it: its slices and t-ordered merges)."""
        self._require_open()
        spikes = ev.input_spikes(self._config, spikes)
        dvs = ev.input_dvs(self._config, dvs)
        vouched = checked is not None and checked.covers(self._config, spikes, dvs)
        now = self._watch.now_us()
        self._queued_spikes.add(spikes, now, checked=vouched)
        self._queued_dvs.add(dvs, now, checked=vouched)

    def forward(
        self,
        spikes: np.ndarray | None = None,
        dvs: np.ndarray | None = None,
        *,
        timeout: float,
        checked: Checked | None = None,
    ) -> DeviceOutput:
        """Exact: ``timeout`` is not needed (the simulator knows when the batch is done).
        What ``checked`` covers for this configuration is not checked again."""
        self._require_open()
        spikes = ev.input_spikes(self._config, spikes)
        dvs = ev.input_dvs(self._config, dvs)
        simulator = self._loaded()
        sorted_by_t = checked is not None and checked.covers(self._config, spikes, dvs)
        origin = ev.batch_origin(spikes, dvs, sorted_by_t=sorted_by_t)
        end = ev.batch_end(spikes, dvs, sorted_by_t=sorted_by_t)
        # As on the devkit: queued input and unread output are dropped, the stopwatch restarts.
        # The chip runs in the inputs' own time base from the batch's first event, so neither
        # inputs nor outputs need their timestamps rewritten.
        self._drop_io()
        simulator.reset_clock(origin)
        try:
            spikes_out, dvs_out, readout = self._run(
                spikes, dvs, origin, end + 1, origin_us=origin, checked=checked
            )
        finally:
            # Back to the stopwatch's time base, which stands just past the batch and runs on
            # (also after an interrupted batch, which leaves the chip where it stopped).
            simulator.shift_clock(-origin)
            self._done_us = end - origin + 1
            self._watch.set(self._done_us)
            self._watch.start()
        return DeviceOutput(spikes=spikes_out, dvs=dvs_out, readout=readout)

    def forward_quick(
        self,
        spikes: np.ndarray | None = None,
        dvs: np.ndarray | None = None,
        *,
        checked: Checked | None = None,
    ) -> DeviceOutput | None:
        """:meth:`forward` of a batch that costs at most :data:`QUICK_WORK` neuron updates,
        whatever the chip makes of it: at most :data:`QUICK_EVENTS` input events, no
        slow-clock tick in its span, the sensor off, nothing queued, and cascades within the
        bound of ``ChipSimulator.run_within``. None, with nothing changed, for any other batch:
        it then goes to :meth:`forward`. For the event loop, which answers a 10-spike batch
        this way without waking the device's thread and being woken by it. After a batch
        whose cascades did not fit, the next :data:`QUICK_PAUSE` batches are declined at once.
        """
        if getattr(self.forward, "__func__", None) is not _BOUNDED_FORWARD:
            return None  # another forward (a subclass's, a test double's): not bounded here
        if self._quick_pause:
            self._quick_pause -= 1
            return None
        simulator = self._sim
        events = (0 if spikes is None else len(spikes)) + (0 if dvs is None else len(dvs))
        if (
            simulator is None
            or not self._open
            or self._sensor_on
            or not 0 < events <= QUICK_EVENTS
            or self._queued_count()
            or self._out_spikes
            or self._out_dvs
            or self._out_readout
        ):
            return None
        spikes_in = ev.input_spikes(self._config, spikes)
        dvs_in = ev.input_dvs(self._config, dvs)
        period = simulator.tick_period_us
        span_us = ev.batch_end(spikes_in, dvs_in) - ev.batch_origin(spikes_in, dvs_in)
        if period > 0 and span_us >= math.floor(period):
            return None
        watch, done_us, events_out = copy.copy(self._watch), self._done_us, self._events_out
        output = simulator.run_within(
            QUICK_WORK, events, lambda: self.forward(spikes, dvs, timeout=0.0, checked=checked)
        )
        if output is None:
            self._watch, self._done_us, self._events_out = watch, done_us, events_out
            self._quick_pause = QUICK_PAUSE
        return output

    def read(self, timeout: float) -> DeviceOutput:
        self._require_open()
        deadline = self._clock() + timeout
        while True:
            self._catch_up()
            now = self._clock()
            if self._out_spikes or self._out_dvs or self._out_readout or now >= deadline:
                break
            self._sleep(min(self._poll_s, deadline - now))
        spikes = _joined(self._out_spikes, SPIKE_DTYPE)
        dvs = _joined(self._out_dvs, DVS_DTYPE)
        readout = _joined(self._out_readout, READOUT_DTYPE)
        self._out_spikes, self._out_dvs, self._out_readout = [], [], []
        return DeviceOutput(spikes=spikes, dvs=dvs, readout=readout)

    def start_stopwatch(self) -> None:
        self._require_open()
        self._watch.start()

    def stop_stopwatch(self) -> None:
        self._require_open()
        self._catch_up()
        self._watch.stop()

    def reset_stopwatch(self) -> None:
        self._require_open()
        self._catch_up()
        self._watch.set(0)
        self._done_us = 0
        if self._sim is not None:
            self._sim.reset_clock()

    def read_states(self, core: int) -> np.ndarray:
        self._require_open()
        simulator = self._loaded()
        self._catch_up()
        try:
            return simulator.states(core).astype(np.int32)
        except SimulatorError as exc:
            raise InvalidArgument(str(exc)) from None

    def health(self) -> DeviceHealth:
        counters = {"events_out": self._events_out, "queued_inputs": self._queued_count()}
        if self._sim is not None:
            counters.update(self._sim.counters)
        return DeviceHealth(
            ok=True, detail=ev.summary(self._open, self._config, self._sensor_on), counters=counters
        )

    # ----- the chip's time -----

    def _catch_up(self) -> None:
        """Run the chip up to the stopwatch's current time."""
        if self._sim is None:
            return
        now = self._watch.now_us()
        spikes, spikes_checked = self._queued_spikes.pop_due(now)
        dvs, dvs_checked = self._queued_dvs.pop_due(now)
        start = self._done_us
        if now < start and not (len(spikes) or len(dvs)):
            return  # no time has passed and nothing is due
        self._done_us = max(start, now + 1)
        # Inputs already past (written late, or before a new configuration) run at the
        # simulator's clock, at once, as the chip takes them.
        one_kind = not (len(spikes) and len(dvs))  # a proof covers one array
        checked = None
        if self._config is not None and spikes_checked and dvs_checked and one_kind:
            checked = _queue_proof(self._config, spikes if len(spikes) else dvs)
        self._keep(*self._run(spikes, dvs, start, self._done_us, checked=checked))

    def _run(
        self,
        spikes: np.ndarray,
        dvs: np.ndarray,
        t0_us: int,
        t1_us: int,
        *,
        origin_us: int = 0,
        checked: Checked | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Host inputs plus the sensor's events in [t0, t1) (simulator time), then ticks to t1.

        The simulator's time is the stopwatch's plus ``origin_us``; the sensor keeps the
        stopwatch's, so its events are moved into the simulator's time base. ``checked`` goes
        to the simulator, which trusts it only for the arrays it covers (not a merge with the
        sensor's events).
        """
        simulator = self._loaded()
        sensed = np.zeros(0, dtype=DVS_DTYPE)
        layer = self._config.dvs_layer if self._config is not None else None
        if self._sensor_on and self._sensor is not None and layer is not None and t1_us > t0_us:
            sensed = self._sensor.events(t0_us - origin_us, t1_us - origin_us)
            sensed["t"] += np.uint64(origin_us)
            # Only the part of the sensor the DVS layer takes (its input may be a crop of 128x128).
            inside = (sensed["x"] < layer.input_size.x) & (sensed["y"] < layer.input_size.y)
            sensed = take_events(sensed, np.flatnonzero(inside))
        raw = sensed if layer is not None and layer.raw_monitor_enable else sensed[:0]
        if layer is not None and layer.pass_sensor_events and len(sensed):
            dvs = _merged(dvs, sensed)
        limit = self._max_output_events
        try:
            out = simulator.run(spikes, dvs, cancel=self._cancel, max_events=limit, checked=checked)
            if limit is not None:
                limit -= out.spikes.size + out.dvs.size + out.readout.size
            ticks = simulator.advance_to(max(t1_us - 1, 0), cancel=self._cancel, max_events=limit)
        except Cancelled:
            raise DeviceTimeout(f"{self._description.id}: the call was interrupted") from None
        except OutputLimit:
            raise OutputTooLarge(
                f"the chip made more than {self._max_output_events} output events in one call "
                "(max_batch_output_events): send shorter batches"
            ) from None
        except SimulatorError as exc:
            # The simulator's own guard: inputs are checked before they reach a device, so
            # this only answers a caller that skipped the check, as a device error.
            raise InvalidEvents(str(exc)) from None
        spikes_out = _joined([out.spikes, ticks.spikes], SPIKE_DTYPE)
        readout = _joined([out.readout, ticks.readout], READOUT_DTYPE)
        self._events_out += len(spikes_out) + len(raw) + len(readout)
        return spikes_out, raw, readout

    def _keep(self, spikes: np.ndarray, dvs: np.ndarray, readout: np.ndarray) -> None:
        if len(spikes):
            self._out_spikes.append(spikes)
        if len(dvs):
            self._out_dvs.append(dvs)
        if len(readout):
            self._out_readout.append(readout)

    # ----- helpers -----

    def _require_open(self) -> None:
        # Every call starts here: an interrupt meant for an earlier call is forgotten.
        self._cancel.clear()
        if not self._open:
            raise DeviceStateError(f"{self._description.id} is not open")

    def _loaded(self) -> ChipSimulator:
        if self._sim is None:
            raise DeviceStateError("apply a configuration first")
        return self._sim

    def _unload(self) -> None:
        self._config = None
        self._sim = None
        self._drop_io()

    def _drop_io(self) -> None:
        self._queued_spikes.clear()
        self._queued_dvs.clear()
        self._out_spikes, self._out_dvs, self._out_readout = [], [], []

    def _queued_count(self) -> int:
        return len(self._queued_spikes) + len(self._queued_dvs)


#: The forward whose work :meth:`VirtualDevkit.forward_quick` bounds: this module's. One that
#: replaces it (a subclass's, a patch's: a test double that hangs, say) keeps to the device's
#: thread, where a call has a timeout.
_BOUNDED_FORWARD = VirtualDevkit.forward


def _as_simulated(config: ChipConfig) -> ChipConfig:
    """The configuration the simulator runs: its DVS input is what the host writes, which the
    chip passes whatever ``pass_sensor_events`` says and does not raw-monitor; the sensor is
    gated here instead."""
    if config.dvs_layer is None:
        return config
    # Only the DVS layer changes: the cores (and their large weight lists) are shared, which
    # a deep copy would take about half a second to duplicate for the guide's network.
    dvs = config.dvs_layer.model_copy(
        update={"pass_sensor_events": True, "raw_monitor_enable": False}
    )
    return config.model_copy(update={"dvs_layer": dvs})


def _queue_proof(config: ChipConfig, events: np.ndarray) -> Checked:
    """The input check's proof for what the input queue hands out of checked writes only:
    slices and t-ordered merges of checked arrays are in range and sorted, as they were."""
    events.flags.writeable = False
    return Checked(config, events)


def _merged(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    both = concat_events([a, b], a.dtype)
    return take_events(both, np.argsort(both["t"], kind="stable"))


def _joined(parts: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    """The parts one after the other; a single non-empty part as it is (no copy)."""
    filled = [part for part in parts if len(part)]
    if len(filled) == 1:
        return filled[0]
    return concat_events(filled, dtype)
