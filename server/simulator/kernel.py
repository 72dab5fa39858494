"""The compiled event loop: every per-event step of the virtual chip, with no Python in it.

All functions are numba ``njit(cache=True, nogil=True)``: compiled once per machine (cached
next to this file) and run without the GIL, so a device thread does not block the daemon.
Code from ``packing`` (constants) and ``intrinsics`` is compiled in too, so a change there
also drops the cache (``numba_cache``).
The semantics are documented in ``docs/simulator.md``; the comments here say how, not what.

Pending events live on one explicit stack of ``(core, feature, y, x)`` input events, each
packed into one int64 (16 bits a field), so a push, a pop and a swap are one memory access.
The spikes one scan emits are pushed in emission order and the pushed segment is then
reversed, so popping processes them in emission order, each with its whole downstream
cascade before the next (depth first).

Split into two stages (``split``, a mask of downstream cores; see ``pipeline``), ``run`` is
the upstream stage: where it would pop an event for a downstream core it appends it to a
queue instead, and a slow-clock tick's work on downstream cores becomes a queue marker;
``run_downstream`` then runs the queue's cascades, in queue order, on a state of its own.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numba import njit

from specklab.schemas.chipconfig import NUM_CORES
from specklab.schemas.events import DVS_CORE

from . import intrinsics, packing
from .intrinsics import LANES, add_block, borrowed, lowest_bit
from .numba_cache import forget_stale_cache
from .packing import (
    ACTIVE,
    B_OFF,
    CIN,
    COUT,
    DECIMATE,
    DECIMATE_N,
    DEST,
    DVS_CUT_X,
    DVS_CUT_Y,
    DVS_IN_H,
    DVS_IN_W,
    DVS_MERGE,
    DVS_MIRROR_X,
    DVS_MIRROR_Y,
    DVS_ORIGIN_X,
    DVS_ORIGIN_Y,
    DVS_PASS,
    DVS_POOL_X,
    DVS_POOL_Y,
    DVS_RAW_MONITOR,
    DVS_SWAP,
    HIN,
    HOUT,
    KERNEL,
    LAYER,
    LEAK,
    MONITOR,
    N_DEST,
    NEURONS,
    PAD_X,
    PAD_Y,
    RETURN_TO_ZERO,
    RF_NEURONS,
    RO_CLASSES,
    RO_CORE,
    RO_ENABLE,
    RO_MONITOR,
    RO_STRIDE,
    RO_THRESHOLD,
    RO_WINDOW,
    S_OFF,
    STRIDE_X,
    STRIDE_Y,
    THR_HIGH,
    THR_LOW,
    W_OFF,
    WIN,
    WOUT,
    PackedChip,
)

forget_stale_cache(Path(__file__), [Path(intrinsics.__file__), Path(packing.__file__)])

# Entries of the mutable counter vector ``dyn``.
CLOCK = 0  # microseconds; every tick at or before it has run
TICKS = 1  # slow-clock ticks run since the clock's origin
CLOCK_ORIGIN = 2  # when the slow clock (re)started: tick n is at CLOCK_ORIGIN + floor(n * period)
CLOCK_ENTRIES = 3  # the entries above; the chip's own state follows
DROPPED_RANGE = 3  # destination events outside the destination core's input
DROPPED_OVERFLOW = 4  # events dropped by the stack or cascade guard
DECIMATOR = 5  # DECIMATOR + core: spikes counted by that core's output decimator
DYN_ENTRIES = DECIMATOR + NUM_CORES

NEVER = np.iinfo(np.int64).max

#: Most events one input event's cascade may process (a guard against runaway recurrent
#: networks, which would otherwise stall the device thread forever, as they stall the chip).
MAX_CASCADE = 1 << 20

#: One entry of the two stages' queue: an event for a downstream core (``event`` >= 0) or a
#: tick's marker (see LEAK_MARK, READOUT_MARK), at time ``t``, when the upstream stage had
#: made ``position`` output spikes. ``root`` is the index of the first entry its input
#: event's (or leak scan's) cascade queued; ``arg`` is that cascade's upstream pops for an
#: event (pops of queued events included) and the tick number for a readout marker.
#: ``b_start``: the downstream stage's output spikes before this entry's.
QUEUE_DTYPE = np.dtype(
    [(name, np.int64) for name in ("event", "t", "position", "root", "arg", "b_start")]
)
#: Queue marker for a tick's leak of core c: ``LEAK_MARK - c``.
LEAK_MARK = -1
READOUT_MARK = -100


@njit(cache=True, nogil=True, error_model="numpy")
def _grown(events: np.ndarray, filled: int, needed: int) -> np.ndarray:
    """A larger event buffer holding the first ``filled`` events of ``events``."""
    capacity = max(events.shape[0], 16)
    while capacity < needed:
        capacity *= 2
    bigger = np.empty(capacity, dtype=events.dtype)
    bigger[:filled] = events[:filled]
    return bigger


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _reverse(stack: np.ndarray, lo: int, hi: int) -> None:
    hi -= 1
    while lo < hi:
        stack[lo], stack[hi] = stack[hi], stack[lo]
        lo += 1
        hi -= 1


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _packed_event(core: int, feature: int, y: int, x: int) -> np.int64:
    """One stack entry: each field < 2**16 (features < 1024, sizes <= 128, cores <= 13)."""
    return (np.int64(core) << 48) | (np.int64(feature) << 32) | (np.int64(y) << 16) | x


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _event_core(event: int) -> int:
    return event >> 48


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _event_field(event: int, shift: int) -> int:
    return (event >> shift) & 0xFFFF


class State(NamedTuple):
    """The chip's mutable state, owned by the engine and changed in place by ``run``."""

    states: np.ndarray  # int16 membranes, packing's layout
    dyn: np.ndarray  # int64 [DYN_ENTRIES]: clock, ticks, drop counters, decimators
    ro_counts: np.ndarray  # int64 [RO_MAX_CLASSES]: readout spikes since the last tick
    ro_ring: np.ndarray  # int64 [RO_MAX_WINDOW, RO_MAX_CLASSES]: the readout's window
    stack: np.ndarray  # int64 [depth]: pending input events (see _packed_event)


class Chip(NamedTuple):
    """Everything the per-event helpers read or change, as borrowed views (see ``run``)."""

    cores: np.ndarray
    dvs: np.ndarray
    readout: np.ndarray
    weights: np.ndarray
    biases: np.ndarray
    period: float
    states: np.ndarray
    dyn: np.ndarray
    ro_counts: np.ndarray
    ro_ring: np.ndarray
    stack: np.ndarray
    #: Bit c set: core c belongs to the downstream stage, its events are queued (0: one stage).
    split: int
    queued: np.ndarray  # int64 [1]: entries in the queue
    #: Most events one input event's cascade may process: MAX_CASCADE, or less for a run that
    #: must stay within a work budget (the rest is dropped, as by the guard).
    cascade_cap: int


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _emit(
    chip: Chip, sp: int, out: np.ndarray, nout: int, c: int, f: int, y: int, x: int, t: int
) -> tuple[int, int]:
    """One spike leaves neuron (f, y, x) of core ``c``: decimator, monitor, readout, fan-out."""
    cores = chip.cores
    readout = chip.readout
    dyn = chip.dyn
    stack = chip.stack
    if cores[c, DECIMATE]:
        count = dyn[DECIMATOR + c] + 1
        if count < cores[c, DECIMATE_N]:
            dyn[DECIMATOR + c] = count
            return nout, sp
        dyn[DECIMATOR + c] = 0
    if cores[c, MONITOR]:
        spike = out[nout]
        spike["t"] = t
        spike["layer"] = cores[c, LAYER]
        spike["core"] = c
        spike["feature"] = f
        spike["x"] = x
        spike["y"] = y
        nout += 1
    if readout[RO_ENABLE] and c == readout[RO_CORE]:
        stride = readout[RO_STRIDE]
        if f % stride == 0 and f // stride < readout[RO_CLASSES]:
            chip.ro_counts[f // stride] += 1
    for d in range(cores[c, N_DEST]):
        col = DEST + 3 * d
        target = cores[c, col]
        pooling_log2 = cores[c, col + 1]
        ff = f + cores[c, col + 2]
        yy = y >> pooling_log2
        xx = x >> pooling_log2
        if ff >= cores[target, CIN] or yy >= cores[target, HIN] or xx >= cores[target, WIN]:
            dyn[DROPPED_RANGE] += 1
        elif sp == stack.shape[0]:
            dyn[DROPPED_OVERFLOW] += 1
        else:
            stack[sp] = _packed_event(target, ff, yy, xx)
            sp += 1
    return nout, sp


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _add_and_fire(
    chip: Chip,
    sp: int,
    out: np.ndarray,
    nout: int,
    inputs: np.ndarray,
    i_start: int,
    s_start: int,
    length: int,
    c: int,
    y: int,
    x0: int,
    t: int,
) -> tuple[int, int]:
    """Add ``length`` inputs to the neurons at x0, x0 + 1, ... (all features) of row y of core c.

    Then fire those at or above threshold, in (x, feature) order. A block's neurons fire
    before the next block is added; firing touches only the firing neuron and queues its
    fan-out for after this event, so the order of spikes and every membrane are as if the
    whole slice were added first. Adding clamps at threshold_low before firing; with
    low < high (checked when packing) that equals clamping after firing.
    """
    cores = chip.cores
    states = chip.states
    high = np.int32(cores[c, THR_HIGH])
    low = np.int32(cores[c, THR_LOW])
    for block in range(0, length, LANES):
        s_at = s_start + block
        i_at = i_start + block
        if length - block >= LANES:  # a constant lane count: no lanes to mask
            firing = add_block(states, s_at, inputs, i_at, LANES, low, high)
        else:
            firing = add_block(states, s_at, inputs, i_at, length - block, low, high)
        while firing:
            i = lowest_bit(firing)
            firing &= firing - 1
            x, f = divmod(block + i, cores[c, COUT])
            nout, sp = _emit(chip, sp, out, nout, c, f, y, x0 + x, t)
            v = states[s_at + i]
            states[s_at + i] = max(np.int32(0) if cores[c, RETURN_TO_ZERO] else v - high, low)
    return nout, sp


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _integrate(
    chip: Chip, sp: int, out: np.ndarray, nout: int, c: int, fin: int, y: int, x: int, t: int
) -> tuple[int, int]:
    """Add input event (fin, y, x) of core ``c`` to its receptive field, in (y, x, f) order.

    Weights are stored with kx reversed, so with stride 1 the kernel row for consecutive
    output columns is one contiguous slice, like the neurons it lands on.
    """
    cores = chip.cores
    k = cores[c, KERNEL]
    sy = cores[c, STRIDE_Y]
    sx = cores[c, STRIDE_X]
    cout = cores[c, COUT]
    wout = cores[c, WOUT]
    w_off = cores[c, W_OFF] + fin * k * k * cout
    s_off = cores[c, S_OFF]
    # Output rows oy with 0 <= y + pad - oy * stride < k (floor division rounds down); the
    # common stride 1 spares the divisions.
    ny = y + cores[c, PAD_Y]
    nx = x + cores[c, PAD_X]
    if sy == 1:
        oy_lo = max(0, ny - k + 1)
        oy_hi = min(ny, cores[c, HOUT] - 1)
    else:
        oy_lo = max(0, -((k - 1 - ny) // sy))
        oy_hi = min(ny // sy, cores[c, HOUT] - 1)
    if sx == 1:
        ox_lo = max(0, nx - k + 1)
        ox_hi = min(nx, wout - 1)
    else:
        ox_lo = max(0, -((k - 1 - nx) // sx))
        ox_hi = min(nx // sx, wout - 1)
    # Output columns per slice: all of them with stride 1 (contiguous), else one at a time.
    run = ox_hi - ox_lo + 1 if sx == 1 else 1
    for oy in range(oy_lo, oy_hi + 1):
        w_row = w_off + (ny - oy * sy) * k * cout
        s_row = s_off + oy * wout * cout
        ox = ox_lo
        while ox <= ox_hi:  # not a stepped range: its trip count would cost a division
            w_at = w_row + (k - 1 - nx + ox * sx) * cout
            nout, sp = _add_and_fire(
                chip, sp, out, nout, chip.weights, w_at, s_row + ox * cout, run * cout, c, oy, ox, t
            )
            ox += run
    return nout, sp


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _drain(
    chip: Chip,
    sp: int,
    out: np.ndarray,
    queue: np.ndarray,
    nout: int,
    t: int,
    processed: int,
) -> tuple[int, int, int]:
    """Process pending events until the stack is empty (one input event's whole cascade).

    Stops early when ``out`` might not hold the next event's spikes, or ``queue`` is full:
    the caller grows it and calls again. Growing here would reassign the array in the hot
    loop, and numba then reference-counts it on every event.
    """
    stack = chip.stack
    while sp > 0:
        event = stack[sp - 1]
        c = _event_core(event)
        if nout + chip.cores[c, RF_NEURONS] > out.shape[0]:
            return nout, sp, processed
        if processed == chip.cascade_cap:
            chip.dyn[DROPPED_OVERFLOW] += sp
            return nout, 0, processed
        if (chip.split >> c) & 1:  # the downstream stage's: queued, popped there
            queued = chip.queued[0]
            if queued == queue.shape[0]:
                return nout, sp, processed
            entry = queue[queued]
            entry["event"] = event
            entry["t"] = t
            entry["position"] = nout
            chip.queued[0] = queued + 1
            processed += 1
            sp -= 1
            continue
        processed += 1
        sp -= 1
        first = sp
        fin = _event_field(event, 32)
        y = _event_field(event, 16)
        x = _event_field(event, 0)
        nout, sp = _integrate(chip, sp, out, nout, c, fin, y, x, t)
        _reverse(stack, first, sp)
    return nout, sp, processed


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _cascade(
    chip: Chip, sp: int, out: np.ndarray, queue: np.ndarray, nout: int, t: int, processed: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Drain the stack (one event's whole cascade), growing ``out`` and ``queue`` as needed.

    ``processed``: events this cascade already counts (the runaway guard's count). Returns
    the buffers, the spikes in ``out`` and the count at the end. The entries this cascade
    queued learn its first entry (``root``) and its upstream count (``arg``).
    """
    sink = borrowed(out)
    queue_sink = borrowed(queue)
    first_queued = chip.queued[0]
    while True:
        nout, sp, processed = _drain(chip, sp, sink, queue_sink, nout, t, processed)
        if sp == 0:
            for e in range(first_queued, chip.queued[0]):
                queue[e]["root"] = first_queued
                queue[e]["arg"] = processed
            return out, queue, nout, processed
        needed = nout + chip.cores[_event_core(chip.stack[sp - 1]), RF_NEURONS]
        if needed > out.shape[0]:
            out = _grown(out, nout, needed)
            sink = borrowed(out)
        if chip.queued[0] == queue.shape[0]:
            queue = _grown(queue, chip.queued[0], chip.queued[0] + 1)
            queue_sink = borrowed(queue)


@njit(cache=True, nogil=True, error_model="numpy")
def _enqueue(
    chip: Chip, queue: np.ndarray, event: int, t: int, position: int, arg: int
) -> np.ndarray:
    """Append a tick's marker for the downstream stage (a root of its own)."""
    queued = chip.queued[0]
    if queued == queue.shape[0]:
        queue = _grown(queue, queued, queued + 1)
    entry = queue[queued]
    entry["event"] = event
    entry["t"] = t
    entry["position"] = position
    entry["root"] = queued
    entry["arg"] = arg
    chip.queued[0] = queued + 1
    return queue


@njit(cache=True, nogil=True, error_model="numpy")
def _leak(
    chip: Chip, out: np.ndarray, queue: np.ndarray, nout: int, c: int, t: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Core ``c``'s leak at a tick at ``t``: its scan, then the cascade of what it fired."""
    cores = chip.cores
    if nout + cores[c, NEURONS] > out.shape[0]:
        out = _grown(out, nout, nout + cores[c, NEURONS])
    sink = borrowed(out)
    cout = cores[c, COUT]
    wout = cores[c, WOUT]
    s_off = cores[c, S_OFF]
    b_off = cores[c, B_OFF]
    sp = 0
    for y in range(cores[c, HOUT]):
        for x in range(wout):
            s_at = s_off + (y * wout + x) * cout
            nout, sp = _add_and_fire(
                chip, sp, sink, nout, chip.biases, b_off, s_at, cout, c, y, x, t
            )
    _reverse(chip.stack, 0, sp)
    out, queue, nout, _ = _cascade(chip, sp, out, queue, nout, t, 0)
    return out, queue, nout


@njit(cache=True, nogil=True, error_model="numpy")
def _readout_tick(chip: Chip, ro_out: np.ndarray, nro: int, t: int) -> tuple[np.ndarray, int]:
    """The readout at tick number ``dyn[TICKS]``, at time ``t``."""
    readout = chip.readout
    dyn = chip.dyn
    ro_counts = chip.ro_counts
    ro_ring = chip.ro_ring
    window = readout[RO_WINDOW]
    classes = readout[RO_CLASSES]
    row = dyn[TICKS] % window
    best = 0
    best_sum = -1
    for k in range(classes):
        ro_ring[row, k] = ro_counts[k]
        ro_counts[k] = 0
    for k in range(classes):
        total = 0
        for r in range(window):
            total += ro_ring[r, k]
        if total > best_sum:
            best = k
            best_sum = total
    value = min(best_sum // window, 2**16 - 1)
    if readout[RO_MONITOR] and value >= readout[RO_THRESHOLD]:
        if nro == ro_out.shape[0]:
            ro_out = _grown(ro_out, nro, nro + 1)
        ro_out[nro]["t"] = t
        ro_out[nro]["class_id"] = best
        ro_out[nro]["value"] = value
        nro += 1
    return ro_out, nro


@njit(cache=True, nogil=True, error_model="numpy")
def _tick(
    chip: Chip,
    out: np.ndarray,
    queue: np.ndarray,
    nout: int,
    ro_out: np.ndarray,
    nro: int,
    t: int,
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, int]:
    """One slow-clock tick at time ``t``: leak every leaky core, then update the readout.

    A downstream core's part becomes a marker in the queue, in its place in the order.
    """
    cores = chip.cores
    readout = chip.readout
    for c in range(NUM_CORES):
        if not (cores[c, ACTIVE] and cores[c, LEAK]):
            continue
        if (chip.split >> c) & 1:
            queue = _enqueue(chip, queue, LEAK_MARK - c, t, nout, 0)
        else:
            out, queue, nout = _leak(chip, out, queue, nout, c, t)
    if readout[RO_ENABLE]:
        if (chip.split >> readout[RO_CORE]) & 1:
            queue = _enqueue(chip, queue, READOUT_MARK, t, nout, chip.dyn[TICKS])
        else:
            ro_out, nro = _readout_tick(chip, ro_out, nro, t)
    chip.dyn[TICKS] += 1
    return out, queue, nout, ro_out, nro


@njit(cache=True, nogil=True, error_model="numpy")
def _next_tick(chip: Chip) -> int:
    """Time of the next slow-clock tick; never without a clock."""
    if chip.period <= 0.0:
        return NEVER
    dyn = chip.dyn
    return dyn[CLOCK_ORIGIN] + np.int64(math.floor((dyn[TICKS] + 1) * chip.period))


@njit(cache=True, nogil=True, error_model="numpy")
def _ticks_until(
    chip: Chip,
    out: np.ndarray,
    queue: np.ndarray,
    nout: int,
    ro_out: np.ndarray,
    nro: int,
    t: int,
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, int]:
    """Run every slow-clock tick due at or before ``t``."""
    while True:
        due = _next_tick(chip)
        if due > t:
            return out, queue, nout, ro_out, nro
        out, queue, nout, ro_out, nro = _tick(chip, out, queue, nout, ro_out, nro, due)


@njit(cache=True, nogil=True, error_model="numpy")
def _dvs_layer(dvs_params: np.ndarray, x: int, y: int, p: int) -> tuple[int, int, int]:
    """DVS event -> (feature, y, x) out of the DVS layer, or feature -1 when cropped away."""
    f = 0 if dvs_params[DVS_MERGE] else p
    px = x >> dvs_params[DVS_POOL_X]
    py = y >> dvs_params[DVS_POOL_Y]
    ox = dvs_params[DVS_ORIGIN_X]
    oy = dvs_params[DVS_ORIGIN_Y]
    cx = dvs_params[DVS_CUT_X]
    cy = dvs_params[DVS_CUT_Y]
    if px < ox or px > cx or py < oy or py > cy:
        return -1, 0, 0
    xx = px - ox
    yy = py - oy
    if dvs_params[DVS_MIRROR_X]:
        xx = cx - ox - xx
    if dvs_params[DVS_MIRROR_Y]:
        yy = cy - oy - yy
    if dvs_params[DVS_SWAP]:
        return f, xx, yy
    return f, yy, xx


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _chip(
    packed: PackedChip, state: State, split: int, queued: np.ndarray, cascade_cap: int
) -> Chip:
    """Borrowed views of the chip's arrays, valid while the caller holds ``packed``, ``state``
    and ``queued``."""
    return Chip(
        borrowed(packed.cores),
        borrowed(packed.dvs),
        borrowed(packed.readout),
        borrowed(packed.weights),
        borrowed(packed.biases),
        packed.tick_period_us,
        borrowed(state.states),
        borrowed(state.dyn),
        borrowed(state.ro_counts),
        borrowed(state.ro_ring),
        borrowed(state.stack),
        split,
        borrowed(queued),
        cascade_cap,
    )


@njit(cache=True, nogil=True, error_model="numpy")
def run(
    packed: PackedChip,
    state: State,
    spikes: np.ndarray,
    dvs: np.ndarray,
    t_end: int,
    out: np.ndarray,
    ro_out: np.ndarray,
    dvs_out: np.ndarray,
    split: int,
    queue: np.ndarray,
    cascade_cap: int,
) -> tuple[np.ndarray, int, np.ndarray, int, np.ndarray, int, np.ndarray, int]:
    """Process input spikes and DVS events (each sorted by t) merged by t, spikes first on ties.

    Then run the ticks due by ``t_end`` (ignored when negative). Returns the output buffers
    (possibly reallocated) and how many rows of each are filled, then the queue for the
    downstream stage (cores in the mask ``split``; 0: none) and its length. ``cascade_cap``:
    see ``Chip``.
    """
    queued = np.zeros(1, dtype=np.int64)
    chip = _chip(packed, state, split, queued, cascade_cap)
    dvs_params = chip.dvs
    dyn = chip.dyn
    stack = chip.stack
    spikes = borrowed(spikes)
    dvs = borrowed(dvs)
    # ``out`` owns the spike buffer returned to Python; ``sink`` is what the hot path writes.
    sink = borrowed(out)
    nout = 0
    nro = 0
    ndvs = 0
    i = 0
    j = 0
    n_spikes = spikes.shape[0]
    n_dvs = dvs.shape[0]
    next_tick = _next_tick(chip)
    while True:
        more = i < n_spikes or j < n_dvs
        take_spike = False
        if more:
            take_spike = j == n_dvs or (i < n_spikes and spikes[i]["t"] <= dvs[j]["t"])
            t = np.int64(spikes[i]["t"]) if take_spike else np.int64(dvs[j]["t"])
        else:
            t = np.int64(t_end)  # after the last event: the ticks due by t_end
        if t > dyn[CLOCK]:
            if t >= next_tick:
                out, queue, nout, ro_out, nro = _ticks_until(chip, out, queue, nout, ro_out, nro, t)
                sink = borrowed(out)
                next_tick = _next_tick(chip)
            dyn[CLOCK] = t
        if not more:
            return out, nout, ro_out, nro, dvs_out, ndvs, queue, queued[0]
        now = dyn[CLOCK]
        sp = 0
        if take_spike:
            spike = spikes[i]
            i += 1
            stack[0] = _packed_event(spike["core"], spike["feature"], spike["y"], spike["x"])
            sp = 1
        else:
            sensed = dvs[j]
            j += 1
            if dvs_params[DVS_RAW_MONITOR]:
                if ndvs == dvs_out.shape[0]:
                    dvs_out = _grown(dvs_out, ndvs, ndvs + 1)
                raw = dvs_out[ndvs]
                raw["t"] = now
                raw["x"] = sensed["x"]
                raw["y"] = sensed["y"]
                raw["p"] = sensed["p"]
                ndvs += 1
            if dvs_params[DVS_PASS]:
                f, y, x = _dvs_layer(
                    dvs_params, np.int64(sensed["x"]), np.int64(sensed["y"]), np.int64(sensed["p"])
                )
                if f >= 0:
                    if nout == sink.shape[0]:
                        out = _grown(out, nout, nout + 1)
                        sink = borrowed(out)
                    nout, sp = _emit(chip, 0, sink, nout, DVS_CORE, f, y, x, now)
                    _reverse(stack, 0, sp)
        out, queue, nout, _ = _cascade(chip, sp, out, queue, nout, now, 0)
        sink = borrowed(out)


@njit(cache=True, nogil=True, error_model="numpy")
def run_downstream(
    packed: PackedChip,
    state: State,
    queue: np.ndarray,
    queued: int,
    out: np.ndarray,
    ro_out: np.ndarray,
) -> tuple[np.ndarray, int, np.ndarray, int]:
    """The downstream stage: the cascades and tick markers ``run`` queued, in queue order.

    Fills each entry's ``b_start``. Each event's cascade resumes its input event's runaway
    count where the upstream stage left it: the upstream count of its cascade, which already
    counts this event's pop, plus the downstream events of the entries before it.
    """
    no_queue = np.empty(0, dtype=QUEUE_DTYPE)
    unused = np.zeros(1, dtype=np.int64)  # this stage queues nothing
    chip = _chip(packed, state, 0, unused, MAX_CASCADE)
    nout = 0
    nro = 0
    processed = 0
    for e in range(queued):
        entry = queue[e]
        entry["b_start"] = nout
        event = entry["event"]
        t = entry["t"]
        if event >= 0:
            processed = entry["arg"] - 1 if entry["root"] == e else processed - 1
            chip.stack[0] = event
            out, _, nout, processed = _cascade(chip, 1, out, no_queue, nout, t, processed)
        elif event == READOUT_MARK:
            chip.dyn[TICKS] = entry["arg"]
            ro_out, nro = _readout_tick(chip, ro_out, nro, t)
        else:
            out, _, nout = _leak(chip, out, no_queue, nout, LEAK_MARK - event, t)
    return out, nout, ro_out, nro


@njit(cache=True, nogil=True, error_model="numpy")
def first_bad_spike(cores: np.ndarray, spikes: np.ndarray) -> int:
    """Index of the first input spike outside its core's input, or -1 when all fit."""
    for i in range(spikes.shape[0]):
        c = spikes[i]["core"]
        if (
            c >= NUM_CORES
            or not cores[c, ACTIVE]
            or spikes[i]["feature"] >= cores[c, CIN]
            or spikes[i]["y"] >= cores[c, HIN]
            or spikes[i]["x"] >= cores[c, WIN]
        ):
            return i
    return -1


@njit(cache=True, nogil=True, error_model="numpy")
def first_bad_dvs(dvs_params: np.ndarray, dvs: np.ndarray) -> int:
    """Index of the first DVS event outside the sensor or with polarity > 1, or -1."""
    for i in range(dvs.shape[0]):
        if (
            dvs[i]["x"] >= dvs_params[DVS_IN_W]
            or dvs[i]["y"] >= dvs_params[DVS_IN_H]
            or dvs[i]["p"] > 1
        ):
            return i
    return -1
