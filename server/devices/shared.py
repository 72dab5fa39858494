"""Checks and bookkeeping that both device implementations share, mostly on event arrays."""

from __future__ import annotations

from collections import deque

import numpy as np

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.events import (
    DVS_DTYPE,
    SIGNATURES,
    SPIKE_DTYPE,
    EventKind,
    concat_events,
    take_events,
)

from .base import DeviceDescription
from .errors import ConfigRejected, DeviceStateError, InputQueueFull, InvalidEvents

#: Continuous-mode inputs further ahead of the device's stopwatch than this are refused.
MAX_INPUT_HORIZON_US = 60_000_000
#: Most input events of one kind a device holds waiting for their time (56 MB of spikes).
MAX_QUEUED_INPUTS = 1 << 22


def check_chip(description: DeviceDescription, config: ChipConfig) -> None:
    if config.chip != description.chip:
        raise ConfigRejected(
            f"the configuration is for {config.chip}, {description.id} carries a {description.chip}"
        )


def input_spikes(config: ChipConfig | None, spikes: np.ndarray | None) -> np.ndarray:
    """Input spikes as an array of the spike dtype. Their contents were checked before they
    reached the device, by the one input check (``schemas/inputs.py``): not again here."""
    return _inputs(config, spikes, SPIKE_DTYPE, EventKind.SPIKE)


def input_dvs(config: ChipConfig | None, dvs: np.ndarray | None) -> np.ndarray:
    """Input DVS events as an array of the DVS dtype (checked before, as spikes are)."""
    return _inputs(config, dvs, DVS_DTYPE, EventKind.DVS)


def _inputs(
    config: ChipConfig | None, events: np.ndarray | None, dtype: np.dtype, kind: EventKind
) -> np.ndarray:
    events = _as_events(events, dtype, kind)
    if len(events) and config is None:
        raise DeviceStateError("apply a configuration before sending events")
    return events


def _as_events(events: np.ndarray | None, dtype: np.dtype, kind: EventKind) -> np.ndarray:
    if events is None:
        return np.zeros(0, dtype=dtype)
    if not isinstance(events, np.ndarray) or events.dtype != dtype or events.ndim != 1:
        got = getattr(events, "dtype", type(events).__name__)
        raise InvalidEvents(f"{kind.value} events must be a 1-d array of {SIGNATURES[kind]}: {got}")
    return events


class InputQueue:
    """Written inputs waiting for the stopwatch to reach their ``t``, bounded in length
    (``max_events``) and in how far ahead of the stopwatch they reach (``horizon_us``).

    Kept as runs of t-sorted arrays: a write that comes after everything queued (a client
    streaming in time order) is appended without copying the queue; one that goes back in
    time is merged with the runs it overlaps only. At equal t, earlier writes go first.

    Each run knows whether all its events passed the input check (``checked`` of
    :meth:`add`): slices and t-ordered merges of checked events are in range and sorted, so
    what :meth:`pop_due` hands out from checked runs only needs no check again.
    """

    def __init__(
        self,
        dtype: np.dtype,
        *,
        max_events: int = MAX_QUEUED_INPUTS,
        horizon_us: int = MAX_INPUT_HORIZON_US,
    ) -> None:
        self._dtype = dtype
        self._max_events = max_events
        self._horizon_us = horizon_us
        self._runs: deque[tuple[np.ndarray, bool]] = deque()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, events: np.ndarray, now_us: int, *, checked: bool = False) -> None:
        """Queue ``events``; all or none (InvalidEvents, InputQueueFull). ``checked``: they
        passed the input check for the configuration the queue serves."""
        if not len(events):
            return
        times = events["t"]
        if bool((times[1:] < times[:-1]).any()):
            events = take_events(events, np.argsort(times, kind="stable"))
            times = events["t"]
        if int(times[-1]) > now_us + self._horizon_us:
            raise InvalidEvents(
                f"an input at t={int(times[-1])} us is more than {self._horizon_us / 1e6:g} s "
                f"ahead of the device's stopwatch ({now_us} us): send it closer to its time"
            )
        if self._count + len(events) > self._max_events:
            raise InputQueueFull(
                f"{self._count} inputs wait for their time already; {len(events)} more would "
                f"pass the {self._max_events} a device holds: send them closer to their time"
            )
        self._count += len(events)
        overlapping: list[tuple[np.ndarray, bool]] = []
        while self._runs and int(self._runs[-1][0]["t"][-1]) > int(times[0]):
            overlapping.append(self._runs.pop())
        if overlapping:
            parts = [run for run, _ in reversed(overlapping)]
            merged = concat_events([*parts, events], self._dtype)
            events = take_events(merged, np.argsort(merged["t"], kind="stable"))
            checked = checked and all(run_checked for _, run_checked in overlapping)
        self._runs.append((events, checked))

    def pop_due(self, now_us: int) -> tuple[np.ndarray, bool]:
        """Remove and return the queued events with ``t <= now_us``, in order, and whether
        they were all checked."""
        due: list[np.ndarray] = []
        checked = True
        while self._runs:
            run, run_checked = self._runs[0]
            split = int(np.searchsorted(run["t"], np.uint64(now_us), side="right"))
            if split < len(run):
                if split:
                    due.append(run[:split])
                    checked = checked and run_checked
                    self._runs[0] = (run[split:], run_checked)
                break
            due.append(self._runs.popleft()[0])
            checked = checked and run_checked
        self._count -= sum(len(part) for part in due)
        if len(due) == 1:
            return due[0], checked
        return concat_events(due, self._dtype), checked

    def clear(self) -> None:
        self._runs.clear()
        self._count = 0


def batch_origin(spikes: np.ndarray, dvs: np.ndarray, *, sorted_by_t: bool = False) -> int:
    """The earliest timestamp of a batch: forward shifts inputs so that it becomes 0.
    ``sorted_by_t``: the arrays are known sorted (checked), so their ends are read."""
    starts = [_bounds(a, sorted_by_t)[0] for a in (spikes, dvs) if len(a)]
    return min(starts) if starts else 0


def batch_span_s(*batches: np.ndarray | None, sorted_by_t: bool = False) -> float:
    """Seconds from a batch's first to its last event (0 for what is not an event array)."""
    bounds = [
        _bounds(b, sorted_by_t)
        for b in batches
        if b is not None and len(b) and b.dtype.names and "t" in b.dtype.names
    ]
    if not bounds:
        return 0.0
    return (max(last for _, last in bounds) - min(first for first, _ in bounds)) / 1e6


def batch_end(spikes: np.ndarray, dvs: np.ndarray, *, sorted_by_t: bool = False) -> int:
    ends = [_bounds(a, sorted_by_t)[1] for a in (spikes, dvs) if len(a)]
    return max(ends) if ends else 0


def _bounds(events: np.ndarray, sorted_by_t: bool) -> tuple[int, int]:
    """The first and last timestamps of non-empty ``events``."""
    times = events["t"]
    if sorted_by_t:
        return int(times[0]), int(times[-1])
    return int(times.min()), int(times.max())


def summary(is_open: bool, config: ChipConfig | None, sensor: bool) -> str:
    """One line for a device's health: open or not, network, sensor."""
    network = "no network" if config is None else f"{len(config.cnn_layers)} cores configured"
    return f"{'open' if is_open else 'closed'}, {network}, sensor {'on' if sensor else 'off'}"
