"""The virtual devkit engine: a ChipConfig in, event arrays in and out.

:class:`ChipSimulator` owns the chip's mutable state (membranes, decimator counters, readout
window, slow clock) and hands the per-event work to the compiled loop in ``kernel``, which
releases the GIL. Calls are serialised by a lock, so a reader on another thread never sees a
half-run batch. See ``docs/simulator.md`` for the semantics.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.events import DVS_DTYPE, READOUT_DTYPE, SPIKE_DTYPE

from . import kernel
from .errors import SimulatorError
from .packing import (
    DVS_ENABLED,
    RO_MAX_CLASSES,
    RO_MAX_WINDOW,
    PackedChip,
    pack,
    state_view,
)

#: Output buffers start this large; the compiled loop doubles them when needed.
_MIN_BUFFER = 1024
#: Buffers up to this many events are reused from call to call; the compiled loop grows a
#: buffer by doubling, and a larger one is not kept.
_KEEP_BUFFER = 1 << 20


@dataclass(frozen=True, slots=True)
class SimOutput:
    """What left the chip in one call, each array in emission order (t non-decreasing)."""

    #: Monitored spikes, ``core`` (0-8, 13 = DVS layer) and model ``layer`` both set.
    spikes: np.ndarray
    #: Raw sensor events (when the DVS layer's ``raw_monitor_enable`` is set).
    dvs: np.ndarray
    readout: np.ndarray


def _sorted_by_t(events: np.ndarray | None, dtype: np.dtype, name: str) -> np.ndarray:
    if events is None:
        return np.zeros(0, dtype=dtype)
    if events.dtype != dtype:
        raise SimulatorError(f"{name} must have dtype {dtype}, got {events.dtype}")
    events = np.ascontiguousarray(events)
    t = events["t"]
    if not np.all(t[1:] >= t[:-1]):
        events = events[np.argsort(events["t"], kind="stable")]
    return events


class ChipSimulator:
    """One virtual chip running ``config``.

    ``slow_clock_hz`` overrides ``config.slow_clock_hz`` (the devkit sets the slow clock on its
    IO module, outside the chip configuration).
    """

    def __init__(self, config: ChipConfig, *, slow_clock_hz: float | None = None) -> None:
        self.config = config
        self._packed: PackedChip = pack(config, slow_clock_hz)
        self._lock = threading.Lock()
        total_neurons = int(self._packed.initial_states.size)
        # Deep enough for any feed-forward cascade (each core at most once on a path, each
        # pending segment at most 2 destinations per neuron); only recurrent networks overflow.
        self._stack = np.zeros((2 * total_neurons + 8, 4), dtype=np.int32)
        self._states = self._packed.initial_states.copy()
        self._dyn = np.zeros(kernel.DYN_ENTRIES, dtype=np.int64)
        self._ro_counts = np.zeros(RO_MAX_CLASSES, dtype=np.int64)
        self._ro_ring = np.zeros((RO_MAX_WINDOW, RO_MAX_CLASSES), dtype=np.int64)
        self._out = np.empty(_MIN_BUFFER, dtype=SPIKE_DTYPE)
        self._ro_out = np.empty(_MIN_BUFFER, dtype=READOUT_DTYPE)
        self._dvs_out = np.empty(_MIN_BUFFER, dtype=DVS_DTYPE)

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

    def run(self, spikes: np.ndarray | None = None, dvs: np.ndarray | None = None) -> SimOutput:
        """Process input spikes (``core`` set) and DVS events, merged in t order.

        Each array is sorted by t if it is not already (stable); at equal t, spikes go first.
        An event stamped before the clock (:attr:`time_us`) is processed at the clock, as
        the devkit forwards events already in the past at once. Slow-clock ticks due before
        an event run before it; ticks after the last event wait for :meth:`advance_to`.
        """
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
        return self._run(spike_in, dvs_in, -1)

    def advance_to(self, t_us: int) -> SimOutput:
        """Run the slow-clock ticks due at or before ``t_us`` and move the clock there."""
        if t_us < 0:
            raise SimulatorError(f"time must be >= 0, got {t_us}")
        return self._run(np.zeros(0, SPIKE_DTYPE), np.zeros(0, DVS_DTYPE), int(t_us))

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

    def _run(self, spikes: np.ndarray, dvs: np.ndarray, t_end: int) -> SimOutput:
        p = self._packed
        with self._lock:
            out, nout, ro_out, nro, dvs_out, ndvs = kernel.run(
                p.cores,
                p.dvs,
                p.readout,
                p.weights,
                p.biases,
                p.tick_period_us,
                self._states,
                self._dyn,
                self._ro_counts,
                self._ro_ring,
                self._stack,
                spikes,
                dvs,
                t_end,
                self._out,
                self._ro_out,
                self._dvs_out,
            )
            spikes_out, self._out = _keep(out, nout)
            dvs_out, self._dvs_out = _keep(dvs_out, ndvs)
            readout_out, self._ro_out = _keep(ro_out, nro)
        return SimOutput(
            spikes=self.config.spikes_to_layers(spikes_out), dvs=dvs_out, readout=readout_out
        )


def _keep(buffer: np.ndarray, filled: int) -> tuple[np.ndarray, np.ndarray]:
    """The filled part of an output buffer, and the buffer to use next time.

    A buffer at least half full becomes the result itself and the next call writes a new one
    (allocated lazily: untouched pages cost nothing), which saves copying large outputs. A
    smaller part is copied out, so a small result never holds on to a large buffer.
    """
    if 2 * filled >= buffer.size:
        return buffer[:filled], np.empty(min(buffer.size, _KEEP_BUFFER), dtype=buffer.dtype)
    if buffer.size > _KEEP_BUFFER:
        return buffer[:filled].copy(), np.empty(_MIN_BUFFER, dtype=buffer.dtype)
    return buffer[:filled].copy(), buffer
