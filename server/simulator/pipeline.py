"""Two threads on one chip: the upstream cores' cascades in one, the downstream cores' in the other.

With no destination from a downstream core back to an upstream one (``stages``), the upstream
cores' membranes depend only on the order of their own inputs, which the downstream cores never
change. So the compiled loop runs the upstream cores alone (``kernel.run`` with a ``split``)
and queues every event it would have popped for a downstream core, with the number of output
spikes made so far; ``kernel.run_downstream`` runs those events' cascades in queue order,
which is exactly the order the single loop pops them in, on a state of its own. A slow-clock
tick's leak of a downstream core and its readout become queue markers in their place.

The engine's compiled calls (windows) are pipelined: the upstream stage runs window k while
the downstream stage runs window k - 1's queue, two GIL-free calls on two threads joined per
window; window k - 1's outputs are then merged in the single loop's order. Nothing depends on
the threads' timing.

Where to cut (how many of the cores, in topological order, make the upstream stage) starts
from ``stages.estimated_cut`` and moves by measurement: the stage that took more CPU time per
input event in a step gives a core to the other, until the balance tips, and the best cut
measured is kept for later runs of the same chip in this process (``_LEARNED_CUTS``). Moving
the cut drains the pipeline first; the first step with both stages after a (re)start, slowed
by fresh buffers and caches, is not measured.

The runaway guard counts an input event's whole cascade, across both stages: each stage counts
its share and the downstream stage resumes the upstream count, so a stage reaching the limit
means the single loop would have reached it too. Such a window (or one that overflows the stack)
is undone from snapshots and run again on one thread, as is a window after which the single
loop would have stopped for its output limit; the chip then ends exactly where one thread
would have left it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from specklab.schemas.events import DVS_DTYPE, READOUT_DTYPE, SPIKE_DTYPE, concat_events

from . import kernel
from .packing import NEURONS, RO_CORE, RO_ENABLE, S_OFF, PackedChip
from .stages import downstream_mask, estimated_cut

#: A compiled call's inputs: spikes, DVS events, and the time its ticks run to (-1: none).
Window = tuple[np.ndarray, np.ndarray, int]
#: What left the chip in one window: spikes, raw DVS events, readout events.
Part = tuple[np.ndarray, np.ndarray, np.ndarray]

_MIN_BUFFER = 1024
#: Stages whose CPU times per input event are within this ratio are balanced enough.
BALANCED = 1.1
#: The cut settled on for a chip (by the digest of its packed arrays), for the next simulator
#: of the same chip: the daemon makes one per job or device session, and each would otherwise
#: explore again. Bounded: oldest entries go first.
_LEARNED_CUTS: dict[bytes, int] = {}
_MAX_LEARNED_CUTS = 256
#: A step in which the stages overlapped (their CPU seconds added, less the step's wall time)
#: for at most this share of the lighter stage's CPU seconds ran them one after the other: the
#: second CPU was busy with other work. After SERIAL_STEPS such steps in a row the run goes on
#: on one thread, which then wastes nothing on the pipeline.
SERIAL_OVERLAP = 0.5
SERIAL_STEPS = 3


class Snapshot:
    """A copy of the arrays of a ``kernel.State`` that a window changes (not its stack)."""

    def __init__(self, state: kernel.State) -> None:
        self.states = state.states.copy()
        self.dyn = state.dyn.copy()
        self.ro_counts = state.ro_counts.copy()
        self.ro_ring = state.ro_ring.copy()

    def restore(self, state: kernel.State) -> None:
        state.states[:] = self.states
        state.dyn[:] = self.dyn
        state.ro_counts[:] = self.ro_counts
        state.ro_ring[:] = self.ro_ring


@dataclass
class _Upstream:
    """The upstream stage's part of one window, waiting for the downstream stage."""

    window: Window
    before: Snapshot  # the chip's state before the window
    spikes: np.ndarray
    dvs: np.ndarray
    readout: np.ndarray
    queue: np.ndarray


@dataclass
class _Downstream:
    spikes: np.ndarray
    readout: np.ndarray


def interleaved(upstream: np.ndarray, downstream: np.ndarray, queue: np.ndarray) -> np.ndarray:
    """The two stages' output spikes in the single loop's order.

    A queue entry's downstream spikes come after the ``position`` upstream spikes made before
    it was queued and after the downstream spikes of the entries before it.
    """
    if not downstream.size:
        return upstream
    if not upstream.size:
        return downstream
    starts = np.append(queue["b_start"], downstream.size)
    merged = np.empty(upstream.size + downstream.size, dtype=upstream.dtype)
    counts = np.diff(starts)
    merged[np.repeat(queue["position"], counts) + np.arange(downstream.size)] = downstream
    index = np.arange(upstream.size)
    merged[index + starts[np.searchsorted(queue["position"], index, side="right")]] = upstream
    return merged


class TwoStages:
    """Runs windows of one chip on two threads; see the module's docstring.

    ``state`` is the engine's: between runs it holds the whole chip. During a run it holds the
    upstream cores, the clock and their drop counts, and this object's own state holds the
    downstream cores; :meth:`_fold` puts those back.
    """

    def __init__(self, packed: PackedChip, state: kernel.State, order: list[int]) -> None:
        self._packed = packed
        self._state = state
        self._order = order
        self._downstream = kernel.State(*(array.copy() for array in state))
        self._queue_size = _MIN_BUFFER
        #: CPU seconds of each stage in the last step, and per input event (None: not measured).
        self._upstream_seconds = self._downstream_seconds = 0.0
        self._upstream_cost: float | None = None
        self._downstream_cost: float | None = None
        #: Steps in a row whose two stages did not overlap (see SERIAL_OVERLAP).
        self._serial_steps = 0
        #: The slower stage's seconds per input event at each cut tried.
        self._measured: dict[int, float] = {}
        #: Steps with both stages since the last (re)start.
        self._steps_since_start = 0
        self._chip_digest = _digest(packed)
        learned = _LEARNED_CUTS.get(self._chip_digest)
        self._settled = learned is not None
        self._set_cut(learned if learned is not None else estimated_cut(packed, order))

    @property
    def cut(self) -> int:
        """How many cores (in topological order) the upstream stage runs."""
        return self._cut

    def _set_cut(self, cut: int) -> None:
        self._cut = cut
        self._split = downstream_mask(self._order, cut)
        self._downstream_cores = self._order[cut:]
        readout = self._packed.readout
        self._readout_downstream = bool(readout[RO_ENABLE]) and int(readout[RO_CORE]) in (
            self._downstream_cores
        )

    def run(
        self,
        windows: Iterator[Window],
        single: Callable[[Window], Part],
        take: Callable[[Part], None],
        fit: Callable[[float], None],
        stopped: Callable[[], bool],
    ) -> bool:
        """Run ``windows``, handing each one's outputs to ``take`` in order.

        ``single`` runs a window on one thread; ``fit`` gets each step's seconds; ``stopped``
        is asked before each window: when it says so, the windows begun are finished and this
        returns True. Else it returns False, all windows run or, when the two stages did not
        run at the same time (no second CPU free, see SERIAL_OVERLAP), the rest of ``windows``
        left to the caller to run on one thread.
        """
        self._start()
        self._serial_steps = 0
        pending: _Upstream | None = None
        halted = False
        try:
            for window in windows:
                halted = stopped()
                if halted:
                    break
                pending = self._step(window, pending, single, take, fit)
                better = self._better_cut()
                if better is not None:
                    self._step(None, pending, single, take, fit)
                    pending = None
                    self._fold()
                    self._set_cut(better)
                    self._start()
                if self._serial_steps == SERIAL_STEPS:
                    break
            self._step(None, pending, single, take, fit)
        finally:
            self._fold()
        return halted

    def _better_cut(self) -> int | None:
        """The cut to move to after the last step's measurements, or None to stay."""
        up, down = self._upstream_cost, self._downstream_cost
        self._upstream_cost = self._downstream_cost = None
        if self._settled or up is None or down is None:
            return None
        self._steps_since_start += 1
        if self._steps_since_start == 1:
            return None  # warming up
        self._measured[self._cut] = max(up, down)
        toward = self._cut - 1 if up > down else self._cut + 1
        unbalanced = max(up, down) > BALANCED * min(up, down)
        if unbalanced and 0 < toward < len(self._order) and toward not in self._measured:
            return toward
        self._settled = True
        best = min(self._measured, key=self._measured.__getitem__)
        if len(_LEARNED_CUTS) >= _MAX_LEARNED_CUTS:
            del _LEARNED_CUTS[next(iter(_LEARNED_CUTS))]
        _LEARNED_CUTS[self._chip_digest] = best
        return best if best != self._cut else None

    def _step(
        self,
        window: Window | None,
        pending: _Upstream | None,
        single: Callable[[Window], Part],
        take: Callable[[Part], None],
        fit: Callable[[float], None],
    ) -> _Upstream | None:
        """The upstream stage on ``window`` while the downstream stage finishes ``pending``."""
        upstream_before = Snapshot(self._state)
        downstream_before = Snapshot(self._downstream)
        started = time.perf_counter()
        upstream, downstream = self._concurrently(window, pending, upstream_before)
        elapsed = time.perf_counter() - started
        if window is not None:
            fit(elapsed)
        if upstream is not None and downstream is not None:
            up, down = self._upstream_seconds, self._downstream_seconds
            serial = up + down - elapsed <= SERIAL_OVERLAP * min(up, down)
            self._serial_steps = self._serial_steps + 1 if serial else 0
        if pending is not None and downstream is not None:
            if _overflowed(downstream_before, self._downstream):
                pending.before.restore(self._state)
                downstream_before.restore(self._downstream)
                self._replay(pending.window, single, take)
                if window is not None:
                    self._replay(window, single, take)
                return None
            try:
                take(self._merged(pending, downstream))
            except Exception:
                upstream_before.restore(self._state)  # as one thread, stop after window k - 1
                raise
        if upstream is not None and _overflowed(upstream_before, self._state):
            upstream_before.restore(self._state)
            self._replay(upstream.window, single, take)
            return None
        return upstream

    def _replay(
        self, window: Window, single: Callable[[Window], Part], take: Callable[[Part], None]
    ) -> None:
        """Run ``window`` on one thread from a consistent state, then restart the pipeline."""
        self._fold()
        part = single(window)
        self._start()
        take(part)

    def _concurrently(
        self, window: Window | None, pending: _Upstream | None, before: Snapshot
    ) -> tuple[_Upstream | None, _Downstream | None]:
        done: list[_Downstream] = []
        failed: list[BaseException] = []

        def downstream_stage() -> None:
            try:
                assert pending is not None
                done.append(self._run_downstream(pending))
            except BaseException as error:  # re-raised on the caller's thread
                failed.append(error)

        thread = None
        if pending is not None:
            thread = threading.Thread(target=downstream_stage, name="chip-downstream")
            thread.start()
        try:
            upstream = self._run_upstream(window, before) if window is not None else None
        finally:
            if thread is not None:
                thread.join()
        if failed:
            raise failed[0]
        return upstream, done[0] if done else None

    def _run_upstream(self, window: Window, before: Snapshot) -> _Upstream:
        spikes, dvs, t_end = window
        started = time.thread_time()
        out, nout, ro_out, nro, dvs_out, ndvs, queue, queued = kernel.run(
            self._packed,
            self._state,
            spikes,
            dvs,
            t_end,
            np.empty(_MIN_BUFFER, SPIKE_DTYPE),
            np.empty(_MIN_BUFFER, READOUT_DTYPE),
            np.empty(_MIN_BUFFER, DVS_DTYPE),
            self._split,
            np.empty(self._queue_size, kernel.QUEUE_DTYPE),
            kernel.MAX_CASCADE,
        )
        self._queue_size = max(self._queue_size, int(queue.size))
        self._upstream_seconds = time.thread_time() - started
        self._upstream_cost = _per_event(self._upstream_seconds, window)
        return _Upstream(window, before, out[:nout], dvs_out[:ndvs], ro_out[:nro], queue[:queued])

    def _run_downstream(self, upstream: _Upstream) -> _Downstream:
        started = time.thread_time()
        out, nout, ro_out, nro = kernel.run_downstream(
            self._packed,
            self._downstream,
            upstream.queue,
            upstream.queue.size,
            np.empty(_MIN_BUFFER, SPIKE_DTYPE),
            np.empty(_MIN_BUFFER, READOUT_DTYPE),
        )
        self._downstream_seconds = time.thread_time() - started
        self._downstream_cost = _per_event(self._downstream_seconds, upstream.window)
        return _Downstream(out[:nout], ro_out[:nro])

    def _merged(self, upstream: _Upstream, downstream: _Downstream) -> Part:
        spikes = interleaved(upstream.spikes, downstream.spikes, upstream.queue)
        readout = [part for part in (upstream.readout, downstream.readout) if part.size]
        return (
            spikes,
            upstream.dvs,
            readout[0] if len(readout) == 1 else concat_events(readout, READOUT_DTYPE),
        )

    def _start(self) -> None:
        """The downstream stage's state from the whole chip's."""
        self._steps_since_start = 0
        Snapshot(self._state).restore(self._downstream)
        self._downstream.dyn[kernel.DROPPED_RANGE] = 0
        self._downstream.dyn[kernel.DROPPED_OVERFLOW] = 0

    def _fold(self) -> None:
        """The downstream cores' state back into the whole chip's (until the next _start)."""
        main, downstream = self._state, self._downstream
        for c in self._downstream_cores:
            start = self._packed.cores[c, S_OFF]
            end = start + self._packed.cores[c, NEURONS]
            main.states[start:end] = downstream.states[start:end]
            main.dyn[kernel.DECIMATOR + c] = downstream.dyn[kernel.DECIMATOR + c]
        for counter in (kernel.DROPPED_RANGE, kernel.DROPPED_OVERFLOW):
            main.dyn[counter] += downstream.dyn[counter]
            downstream.dyn[counter] = 0
        if self._readout_downstream:
            main.ro_counts[:] = downstream.ro_counts
            main.ro_ring[:] = downstream.ro_ring


def _overflowed(before: Snapshot, state: kernel.State) -> bool:
    """Whether a stage dropped events for its stack or its runaway guard since ``before``."""
    return bool(state.dyn[kernel.DROPPED_OVERFLOW] != before.dyn[kernel.DROPPED_OVERFLOW])


def _per_event(seconds: float, window: Window) -> float | None:
    events = window[0].size + window[1].size
    return seconds / events if events else None


def _digest(packed: PackedChip) -> bytes:
    """What identifies a chip's configuration (its packed arrays and clock)."""
    digest = hashlib.sha256(repr(packed.tick_period_us).encode())
    for array in (packed.cores, packed.dvs, packed.readout, packed.weights, packed.biases):
        digest.update(array.tobytes())
    digest.update(packed.initial_states.tobytes())
    return digest.digest()
