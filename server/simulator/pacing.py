"""Real-time pacing, as the devkit's stopwatch does it: an event goes in once its time is due.

The engine itself runs as fast as it can; a device thread that wants real time walks its input
with :func:`due_slices` and runs each slice as it falls due. Nothing here starts a thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np

#: Longest single wait, so a stop request is noticed quickly even before a distant event.
MAX_WAIT_S = 0.05


class Stopwatch:
    """Microseconds since creation or the last :meth:`start`, on a monotonic clock.

    The devkit's stopwatch; ``clock_ns`` is replaceable for tests.
    """

    def __init__(self, clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self._clock_ns = clock_ns
        self._origin_ns = clock_ns()

    def start(self) -> None:
        """(Re)start at 0."""
        self._origin_ns = self._clock_ns()

    def elapsed_us(self) -> int:
        return (self._clock_ns() - self._origin_ns) // 1000


def due_slices(
    t: np.ndarray,
    stopwatch: Stopwatch,
    *,
    stop: threading.Event | None = None,
    sleep: Callable[[float], object] = time.sleep,
) -> Iterator[slice]:
    """Consecutive slices of ``t`` (sorted timestamps, us) holding the events due by now.

    Each slice holds every not yet yielded event with ``t <= stopwatch.elapsed_us()``; events
    already in the past come at once (as the devkit forwards them). Between slices it waits
    until the next event is due, at most ``MAX_WAIT_S`` at a time; setting ``stop`` ends the
    iteration at the next wait.
    """
    start = 0
    while start < t.size:
        now = stopwatch.elapsed_us()
        end = int(np.searchsorted(t, now, side="right"))
        if end > start:
            yield slice(start, end)
            start = end
            continue
        wait = min((int(t[start]) - now) / 1e6, MAX_WAIT_S)
        if stop is None:
            sleep(wait)
        elif stop.wait(wait):
            return
