"""The virtual devkit engine: a ChipConfig in, event arrays in and out.

:class:`ChipSimulator` owns the chip's mutable state (membranes, decimator counters, readout
window, slow clock) and hands the per-event work to the compiled loop in ``kernel``, which
releases the GIL. Calls are serialised by a lock, so a reader on another thread never sees a
half-run batch. See ``docs/simulator.md`` for the semantics.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.events import (
    DVS_DTYPE,
    READOUT_DTYPE,
    SPIKE_DTYPE,
    concat_events,
    copy_events,
    take_events,
)
from specklab.schemas.inputs import Checked

from . import kernel
from .errors import SimulatorError
from .packing import (
    DVS_ENABLED,
    RF_NEURONS,
    RO_MAX_CLASSES,
    RO_MAX_WINDOW,
    PackedChip,
    pack,
    state_view,
)
from .pipeline import Part, Snapshot, TwoStages, Window
from .stages import topological_order

T = TypeVar("T")

#: Output buffers start this large; the compiled loop doubles them when needed.
_MIN_BUFFER = 1024
#: Buffers up to this many events are reused from call to call; the compiled loop grows a
#: buffer by doubling, and a larger one is not kept.
_KEEP_BUFFER = 1 << 20
#: One compiled call takes at most CHUNK_EVENTS input events (per array) and a number of
#: slow-clock ticks fitted to their cost (1 to MAX_CHUNK_TICKS, aiming at CHUNK_S seconds: a
#: tick of a leaky network whose biases make every neuron fire can take 80 ms), so that a
#: cancel request and the output limit, checked between calls, are seen within a fraction of
#: a second. The chunks change nothing the chip does.
CHUNK_EVENTS = 1 << 16
MAX_CHUNK_TICKS = 1 << 12
CHUNK_S = 0.05
#: Runs with at least this many input events use two threads (``pipeline``) when the chip
#: can be cut in two stages and a second CPU is there: below it, the first and last windows,
#: which one stage runs alone, cost more than the overlap saves.
PIPELINE_MIN_EVENTS = 4 * CHUNK_EVENTS
#: Set to 0 to keep every run on one thread (the ``pipelined`` argument overrides it).
PIPELINE_ENV = "SPECKLAB_SIM_PIPELINE"
#: What processing one event costs at least, in neuron updates (its pop, its spikes' monitor
#: rows and pushes): a 1x1 core's events cost about 25 ns each, a neuron update a few ns.
EVENT_WORK = 16


class Cancelled(SimulatorError):
    """A run stopped at its caller's request; what it did before stopping stays done."""


class OutputLimit(SimulatorError):
    """A run stopped because it made more output events than its caller allowed."""


@dataclass(frozen=True, slots=True)
class SimOutput:
    """What left the chip in one call, each array in emission order (t non-decreasing)."""

    #: Monitored spikes, ``core`` (0-8, 13 = DVS layer) and model ``layer`` both set.
    spikes: np.ndarray
    #: Raw sensor events (when the DVS layer's ``raw_monitor_enable`` is set).
    dvs: np.ndarray
    readout: np.ndarray


def _given(*arrays: np.ndarray | None) -> list[np.ndarray]:
    return [array for array in arrays if array is not None]


def _as_given(events: np.ndarray | None, dtype: np.dtype, name: str) -> np.ndarray:
    """``events`` of ``dtype`` (empty for None), contiguous as the compiled loop takes them."""
    if events is None:
        return np.zeros(0, dtype=dtype)
    if events.dtype != dtype:
        raise SimulatorError(f"{name} must have dtype {dtype}, got {events.dtype}")
    return np.ascontiguousarray(events)


def _sorted_by_t(events: np.ndarray | None, dtype: np.dtype, name: str) -> np.ndarray:
    events = _as_given(events, dtype, name)
    t = events["t"]
    if not np.all(t[1:] >= t[:-1]):
        events = take_events(events, np.argsort(events["t"], kind="stable"))
    return events


class ChipSimulator:
    """One virtual chip running ``config``.

    ``slow_clock_hz`` overrides ``config.slow_clock_hz`` (the devkit sets the slow clock on its
    IO module, outside the chip configuration). ``pipelined``: True runs every call on two
    threads where the chip can be cut in two stages, False never; None (the default) decides
    per call (see PIPELINE_MIN_EVENTS and PIPELINE_ENV). Outputs and states are the same.
    ``input_config``: the configuration whose input check's proofs (``Checked``) :meth:`run`
    trusts, ``config`` unless the caller made ``config`` from it without changing what it
    takes as input.
    """

    def __init__(
        self,
        config: ChipConfig,
        *,
        slow_clock_hz: float | None = None,
        pipelined: bool | None = None,
        input_config: ChipConfig | None = None,
    ) -> None:
        self.config = config
        self._input_config = config if input_config is None else input_config
        self._packed: PackedChip = pack(config, slow_clock_hz)
        self._pipelined = pipelined
        self._lock = threading.Lock()
        total_neurons = int(self._packed.initial_states.size)
        # Deep enough for any feed-forward cascade (each core at most once on a path, each
        # pending segment at most 2 destinations per neuron); only recurrent networks overflow.
        self._stack = np.zeros(2 * total_neurons + 8, dtype=np.int64)
        self._states = self._packed.initial_states.copy()
        self._dyn = np.zeros(kernel.DYN_ENTRIES, dtype=np.int64)
        self._ro_counts = np.zeros(RO_MAX_CLASSES, dtype=np.int64)
        self._ro_ring = np.zeros((RO_MAX_WINDOW, RO_MAX_CLASSES), dtype=np.int64)
        self._state = kernel.State(
            self._states, self._dyn, self._ro_counts, self._ro_ring, self._stack
        )
        self._out = np.empty(_MIN_BUFFER, dtype=SPIKE_DTYPE)
        self._ro_out = np.empty(_MIN_BUFFER, dtype=READOUT_DTYPE)
        self._dvs_out = np.empty(_MIN_BUFFER, dtype=DVS_DTYPE)
        #: Slow-clock ticks per compiled call (see CHUNK_S).
        self._chunk_ticks = 1
        self._no_queue = np.empty(0, dtype=kernel.QUEUE_DTYPE)
        #: Most events one input event's cascade may process (see :meth:`run_within`).
        self._cascade_cap = kernel.MAX_CASCADE
        #: The most work one processed event does, in neuron updates (see :meth:`run_within`).
        self._event_work = max(int(self._packed.cores[:, RF_NEURONS].max(initial=0)), EVENT_WORK)
        #: Whether the last call ran on two threads to its end (see ``pipeline``).
        self.last_run_pipelined = False

    @functools.cached_property
    def _stages(self) -> TwoStages | None:
        """The two-thread pipeline, made by the first run that uses it: most simulators
        (a job's samples, small batches) never do, and it copies the chip's state and hashes
        its weights."""
        order = topological_order(self._packed)
        if order is None or len(order) < 2:
            return None
        return TwoStages(self._packed, self._state, order)

    @property
    def tick_period_us(self) -> float:
        """Microseconds between slow-clock ticks (0 or less: no slow clock)."""
        return float(self._packed.tick_period_us)

    def run_within(self, work: int, input_events: int, calls: Callable[[], T]) -> T | None:
        """``calls()`` (runs of this simulator over ``input_events`` input events in all)
        bounded to about ``work`` neuron updates: each input event's cascade may process at
        most ``work / (input_events x an event's work)`` events, an event's work being the
        widest core's receptive field, or :data:`EVENT_WORK` for narrower ones.

        None, with the chip put back as it was, when a cascade reached that bound (the rest of
        it would have been dropped), ``calls`` raised, or not even one event fits: the caller
        then runs them unbounded. Otherwise their result is the unbounded run's. For a caller
        that must not be held up long (a small batch on the event loop), whatever its inputs
        make the chip do.
        """
        cap = work // (max(input_events, 1) * self._event_work)
        if cap < 1:
            return None
        before = Snapshot(self._state)
        dropped = int(self._dyn[kernel.DROPPED_OVERFLOW])
        self._cascade_cap = cap
        try:
            result = calls()
        except Exception:
            before.restore(self._state)
            return None
        finally:
            self._cascade_cap = kernel.MAX_CASCADE
        if int(self._dyn[kernel.DROPPED_OVERFLOW]) != dropped:
            before.restore(self._state)
            return None
        return result

    @property
    def time_us(self) -> int:
        """The simulator's clock: every slow-clock tick at or before it has run."""
        return int(self._dyn[kernel.CLOCK])

    @property
    def counters(self) -> dict[str, int]:
        """Events the chip model dropped since the last :meth:`reset_states`."""
        return {
            "dropped_out_of_range": int(self._dyn[kernel.DROPPED_RANGE]),
            "dropped_overflow": int(self._dyn[kernel.DROPPED_OVERFLOW]),
        }

    def run(
        self,
        spikes: np.ndarray | None = None,
        dvs: np.ndarray | None = None,
        *,
        cancel: threading.Event | None = None,
        max_events: int | None = None,
        checked: Checked | None = None,
    ) -> SimOutput:
        """Process input spikes (``core`` set) and DVS events, merged in t order.

        Each array is sorted by t if it is not already (stable); at equal t, spikes go first.
        An event stamped before the clock (:attr:`time_us`) is processed at the clock, as
        the devkit forwards events already in the past at once. Slow-clock ticks due before
        an event run before it; ticks after the last event wait for :meth:`advance_to`.
        Setting ``cancel`` (from another thread) stops the run with :class:`Cancelled`; more
        than ``max_events`` output events stop it with :class:`OutputLimit`.

        Inputs are checked (SimulatorError) unless ``checked`` covers them: the input check
        (``schemas/inputs.py``) passed these very arrays for this simulator's inputs.
        """
        if checked is not None and checked.covers(self._input_config, *_given(spikes, dvs)):
            return self._run(
                _as_given(spikes, SPIKE_DTYPE, "spikes"),
                _as_given(dvs, DVS_DTYPE, "dvs"),
                -1,
                cancel,
                max_events,
            )
        spike_in = _sorted_by_t(spikes, SPIKE_DTYPE, "spikes")
        dvs_in = _sorted_by_t(dvs, DVS_DTYPE, "dvs")
        bad = kernel.first_bad_spike(self._packed.cores, spike_in)
        if bad >= 0:
            s = spike_in[bad]
            raise SimulatorError(
                f"input spike {bad} (core {s['core']}, feature {s['feature']}, y {s['y']}, "
                f"x {s['x']}) is outside the inputs of the configured cores"
            )
        if dvs_in.size:
            if not self._packed.dvs[DVS_ENABLED]:
                raise SimulatorError("DVS events given but the configuration has no DVS layer")
            bad = kernel.first_bad_dvs(self._packed.dvs, dvs_in)
            if bad >= 0:
                e = dvs_in[bad]
                raise SimulatorError(
                    f"DVS event {bad} (x {e['x']}, y {e['y']}, p {e['p']}) is outside the sensor"
                )
        return self._run(spike_in, dvs_in, -1, cancel, max_events)

    def advance_to(
        self,
        t_us: int,
        *,
        cancel: threading.Event | None = None,
        max_events: int | None = None,
    ) -> SimOutput:
        """Run the slow-clock ticks due at or before ``t_us`` and move the clock there
        (``cancel`` and ``max_events`` as in :meth:`run`)."""
        if t_us < 0:
            raise SimulatorError(f"time must be >= 0, got {t_us}")
        empty = (np.zeros(0, SPIKE_DTYPE), np.zeros(0, DVS_DTYPE))
        return self._run(*empty, int(t_us), cancel, max_events)

    def reset_states(self) -> None:
        """Neurons back to their initial values; decimators, readout window, counters cleared.

        The clock is kept: the devkit's stopwatch is separate from the chip (see reset_clock).
        """
        with self._lock:
            self._states[:] = self._packed.initial_states
            self._dyn[kernel.CLOCK_ENTRIES :] = 0
            self._ro_counts[:] = 0
            self._ro_ring[:] = 0

    def reset_clock(self, at_us: int = 0) -> None:
        """Restart the clock at ``at_us`` (the devkit's stopwatch reset); ticks restart there."""
        if at_us < 0:
            raise SimulatorError(f"time must be >= 0, got {at_us}")
        with self._lock:
            self._dyn[kernel.CLOCK] = at_us
            self._dyn[kernel.TICKS] = 0
            self._dyn[kernel.CLOCK_ORIGIN] = at_us

    def shift_clock(self, delta_us: int) -> None:
        """Move the clock and its tick schedule by ``delta_us``: a change of time base only.

        Inputs and outputs are then expressed in the new base; nothing the chip does changes.
        """
        with self._lock:
            clock = int(self._dyn[kernel.CLOCK]) + delta_us
            origin = int(self._dyn[kernel.CLOCK_ORIGIN]) + delta_us
            if min(clock, origin) < 0:
                raise SimulatorError(f"shifting the clock by {delta_us} us would make it negative")
            self._dyn[kernel.CLOCK] = clock
            self._dyn[kernel.CLOCK_ORIGIN] = origin

    def read_neuron(self, core: int, feature: int, y: int, x: int) -> int:
        """The membrane of one neuron."""
        view = self._core_view(core)
        if not (0 <= feature < view.shape[0] and 0 <= y < view.shape[1] and 0 <= x < view.shape[2]):
            raise SimulatorError(
                f"neuron (feature {feature}, y {y}, x {x}) is outside core {core}, "
                f"whose neurons are {view.shape} (features, height, width)"
            )
        with self._lock:
            return int(view[feature, y, x])

    def states(self, core: int) -> np.ndarray:
        """A copy of a core's membranes as ``[feature][y][x]`` (ChipConfig's order)."""
        with self._lock:
            return self._core_view(core).copy()

    def _core_view(self, core: int) -> np.ndarray:
        return state_view(self._packed, self._states, core)

    def _run(
        self,
        spikes: np.ndarray,
        dvs: np.ndarray,
        t_end: int,
        cancel: threading.Event | None,
        max_events: int | None,
    ) -> SimOutput:
        parts: list[Part] = []
        made = 0

        def take(part: Part) -> None:
            nonlocal made
            parts.append(part)
            made += sum(len(out) for out in part)
            if max_events is not None and made > max_events:
                raise OutputLimit(f"the run made more than {max_events} output events")

        def stopped() -> bool:
            return cancel is not None and cancel.is_set()

        with self._lock:
            windows = self._chunks(spikes, dvs, t_end)
            unbounded = self._cascade_cap == kernel.MAX_CASCADE
            stages = (
                self._stages if unbounded and self._use_stages(spikes.size + dvs.size) else None
            )
            self.last_run_pipelined = stages is not None
            if stages is not None and stages.run(
                windows, self._run_window, take, self._fit_chunk, stopped
            ):
                raise Cancelled("the run was cancelled")
            for window in windows:  # what the stages did not run (all, on one thread)
                self.last_run_pipelined = False
                if stopped():
                    raise Cancelled("the run was cancelled")
                started = time.perf_counter()
                part = self._run_window(window)
                self._fit_chunk(time.perf_counter() - started)
                take(part)
        spikes_out, dvs_out, readout_out = (
            _joined([part[k] for part in parts], dtype)
            for k, dtype in enumerate((SPIKE_DTYPE, DVS_DTYPE, READOUT_DTYPE))
        )
        return SimOutput(spikes=spikes_out, dvs=dvs_out, readout=readout_out)

    def _chunks(
        self, spikes: np.ndarray, dvs: np.ndarray, t_end: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """The run as compiled calls of at most ~CHUNK_EVENTS events and ``_chunk_ticks`` ticks.

        Each call takes a prefix of the inputs in processing order (cut at a time, so ties
        between spikes and DVS events keep their order) and long stretches of ticks before an
        event or ``t_end`` run on their own first: the chip does exactly what one call does.
        """
        period = self._packed.tick_period_us
        spike_t, dvs_t = spikes["t"], dvs["t"]
        i = j = 0
        while i < len(spike_t) or j < len(dvs_t):
            tick_span = max(int(self._chunk_ticks * period), 1) if period > 0 else None
            first = min(int(times[k]) for times, k in ((spike_t, i), (dvs_t, j)) if k < len(times))
            clock = int(self._dyn[kernel.CLOCK])
            if tick_span is not None and first - clock > tick_span:
                yield spikes[:0], dvs[:0], clock + tick_span
                continue
            cut = first + tick_span if tick_span is not None else None
            for times, k in ((spike_t, i), (dvs_t, j)):
                if k + CHUNK_EVENTS < len(times):
                    limit = int(times[k + CHUNK_EVENTS])
                    cut = limit if cut is None else min(cut, limit)
            if cut is None:
                i2, j2 = len(spike_t), len(dvs_t)
            else:
                i2, j2 = _chunk_end(spike_t, i, cut), _chunk_end(dvs_t, j, cut)
                if (i2, j2) == (i, j):  # many events at one time: they go together
                    i2, j2 = _before(spike_t, first + 1), _before(dvs_t, first + 1)
            yield spikes[i:i2], dvs[j:j2], -1
            i, j = i2, j2
        while t_end >= 0 and period > 0:
            clock = int(self._dyn[kernel.CLOCK])
            tick_span = max(int(self._chunk_ticks * period), 1)
            if t_end - clock <= tick_span:
                break
            yield spikes[:0], dvs[:0], clock + tick_span
        if t_end >= 0:
            yield spikes[:0], dvs[:0], t_end

    def _use_stages(self, input_events: int) -> bool:
        if self._pipelined is not None:
            return self._pipelined
        return (
            os.environ.get(PIPELINE_ENV, "1") != "0"
            and (os.cpu_count() or 1) > 1
            and input_events >= PIPELINE_MIN_EVENTS
        )

    def _fit_chunk(self, seconds: float) -> None:
        """More ticks in the next compiled call when this one was quick, fewer when slow."""
        if seconds < CHUNK_S / 2:
            self._chunk_ticks = min(2 * self._chunk_ticks, MAX_CHUNK_TICKS)
        elif seconds > CHUNK_S:
            self._chunk_ticks = max(self._chunk_ticks // 2, 1)

    def _run_window(self, window: Window) -> Part:
        """One compiled call on this thread."""
        spikes, dvs, t_end = window
        out, nout, ro_out, nro, dvs_out, ndvs, _, _ = kernel.run(
            self._packed,
            self._state,
            spikes,
            dvs,
            t_end,
            self._out,
            self._ro_out,
            self._dvs_out,
            0,
            self._no_queue,
            self._cascade_cap,
        )
        spikes_out, self._out = _keep(out, nout)
        dvs_out, self._dvs_out = _keep(dvs_out, ndvs)
        readout_out, self._ro_out = _keep(ro_out, nro)
        return spikes_out, dvs_out, readout_out


def _before(times: np.ndarray, t: int) -> int:
    """How many of the sorted ``times`` are before ``t``."""
    return int(np.searchsorted(times, np.uint64(t), side="left"))


def _chunk_end(times: np.ndarray, start: int, cut: int) -> int:
    """``_before(times, cut)``, for a cut known to leave ``start`` to ``start + CHUNK_EVENTS``
    of the times before it.

    Only that window is searched: numpy copies a strided field (``t`` of an event array)
    whole before every search, which on a million-event input cost 4 % of the run.
    """
    return start + _before(times[start : start + CHUNK_EVENTS + 1], cut)


def _joined(parts: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    filled = [part for part in parts if len(part)]
    if len(filled) == 1:
        return filled[0]
    return concat_events(filled, dtype)


def _keep(buffer: np.ndarray, filled: int) -> tuple[np.ndarray, np.ndarray]:
    """The filled part of an output buffer, and the buffer to use next time.

    A buffer at least half full becomes the result itself and the next call writes a new one
    (allocated lazily: untouched pages cost nothing), which saves copying large outputs. A
    smaller part is copied out, so a small result never holds on to a large buffer.
    """
    if 2 * filled >= buffer.size:
        return buffer[:filled], np.empty(min(buffer.size, _KEEP_BUFFER), dtype=buffer.dtype)
    if buffer.size > _KEEP_BUFFER:
        return copy_events(buffer[:filled]), np.empty(_MIN_BUFFER, dtype=buffer.dtype)
    return copy_events(buffer[:filled]), buffer
