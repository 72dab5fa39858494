"""A virtual 128x128 DVS sensor: a synthetic scene, or a recording played back.

Both kinds answer ``events(t_start_us, t_end_us)`` with the DVS events in ``[t_start, t_end)``
and ``windows(window_us)`` with successive windows, so a virtual devkit can record or stream
DVS events with no hardware. The synthetic scene is a pure function of (seed, time): the
events of a window do not depend on how the time axis was cut into windows before it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from enum import StrEnum

import numpy as np

from specklab.schemas.events import DVS_DTYPE

from .errors import SimulatorError

SENSOR_SIZE = 128
#: The synthetic scene draws its events block by block; each block has its own seed.
BLOCK_US = 1000


class DvsSensor(ABC):
    @property
    def end_us(self) -> int | None:
        """Where the sensor's events end (exclusive), or None when they never do."""
        return None

    @abstractmethod
    def events(self, t_start_us: int, t_end_us: int) -> np.ndarray:
        """DVS events with ``t_start_us <= t < t_end_us``, sorted by t (a new array)."""

    def windows(
        self, window_us: int, t_start_us: int = 0, t_end_us: int | None = None
    ) -> Iterator[np.ndarray]:
        """Successive windows of ``window_us`` from ``t_start_us`` to ``t_end_us`` (or the end)."""
        if window_us <= 0:
            raise SimulatorError(f"window must be > 0 us, got {window_us}")
        end = t_end_us if t_end_us is not None else self.end_us
        t = t_start_us
        while end is None or t < end:
            stop = t + window_us if end is None else min(t + window_us, end)
            yield self.events(t, stop)
            t = stop


class Pattern(StrEnum):
    #: A bar sweeping across the field, alternately left to right and top to bottom:
    #: ON events on its leading edge, OFF events on its trailing edge.
    EDGES = "edges"
    #: Three dots on Lissajous paths: ON events ahead of each dot, OFF events behind it.
    DOTS = "dots"


class SyntheticSensor(DvsSensor):
    """A seeded synthetic scene producing about ``rate_hz`` events per second (Poisson).

    ``noise_fraction`` of the events are background activity, uniform over the field.
    """

    def __init__(
        self,
        rate_hz: float = 100_000.0,
        seed: int = 0,
        pattern: Pattern | str = Pattern.EDGES,
        *,
        noise_fraction: float = 0.05,
    ) -> None:
        if not 0 < rate_hz <= 50_000_000:
            raise SimulatorError(f"event rate must be in (0, 50 M] events/s, got {rate_hz}")
        if not 0 <= noise_fraction <= 1:
            raise SimulatorError(f"noise fraction must be in [0, 1], got {noise_fraction}")
        try:
            self.pattern = Pattern(pattern)
        except ValueError:
            choices = ", ".join(p.value for p in Pattern)
            raise SimulatorError(f"unknown pattern {pattern!r}; choose one of {choices}") from None
        self.rate_hz = rate_hz
        self.seed = seed
        self.noise_fraction = noise_fraction
        #: Where the scene starts: the bar's first sweep, the dots' places on their paths.
        self._phases = np.random.default_rng([seed, 2**32]).uniform(0, 2 * math.pi, 6)

    def events(self, t_start_us: int, t_end_us: int) -> np.ndarray:
        if t_start_us < 0 or t_end_us < t_start_us:
            raise SimulatorError(f"bad time window [{t_start_us}, {t_end_us})")
        if t_end_us == t_start_us:
            return np.zeros(0, DVS_DTYPE)
        first, last = t_start_us // BLOCK_US, (t_end_us - 1) // BLOCK_US
        events = np.concatenate([self._block(b) for b in range(first, last + 1)])
        t = events["t"]
        return events[(t >= t_start_us) & (t < t_end_us)]

    def _block(self, block: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, block])
        n = int(rng.poisson(self.rate_hz * BLOCK_US / 1e6))
        t = np.sort(rng.integers(0, BLOCK_US, n)) + block * BLOCK_US
        seconds = t / 1e6
        if self.pattern is Pattern.EDGES:
            x, y, p = self._edges(rng, seconds)
        else:
            x, y, p = self._dots(rng, seconds)
        noise = rng.random(n) < self.noise_fraction
        x[noise] = rng.integers(0, SENSOR_SIZE, int(noise.sum()))
        y[noise] = rng.integers(0, SENSOR_SIZE, int(noise.sum()))
        p[noise] = rng.integers(0, 2, int(noise.sum()))
        events = np.empty(n, DVS_DTYPE)
        events["t"] = t
        events["x"] = np.clip(x, 0, SENSOR_SIZE - 1)
        events["y"] = np.clip(y, 0, SENSOR_SIZE - 1)
        events["p"] = p
        return events

    def _edges(
        self, rng: np.random.Generator, seconds: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        width, speed = 12.0, 256.0  # pixels, pixels per second
        travel = SENSOR_SIZE + width
        sweep = seconds * speed / travel + self._phases[0] / (2 * math.pi)
        horizontal = np.floor(sweep).astype(np.int64) % 2 == 0
        lead = (sweep % 1.0) * travel
        on = rng.random(seconds.size) < 0.5
        across = np.where(on, lead, lead - width) + rng.integers(-1, 2, seconds.size)
        # While the bar enters or leaves, its edges are off the field: those events land
        # anywhere, as background activity does.
        off = (across < 0) | (across >= SENSOR_SIZE)
        across[off] = rng.integers(0, SENSOR_SIZE, int(off.sum()))
        along = rng.integers(0, SENSOR_SIZE, seconds.size)
        x = np.where(horizontal, across, along).astype(np.int64)
        y = np.where(horizontal, along, across).astype(np.int64)
        return x, y, on.astype(np.uint8)

    def _dots(
        self, rng: np.random.Generator, seconds: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        frequencies = np.array([[0.7, 1.1], [1.3, 0.5], [0.9, 1.7]])  # Hz, per dot and axis
        dot = rng.integers(0, 3, seconds.size)
        fx, fy = frequencies[dot, 0], frequencies[dot, 1]
        phase_x, phase_y = self._phases[dot], self._phases[dot + 3]
        amplitude = 0.35 * SENSOR_SIZE
        cx = SENSOR_SIZE / 2 + amplitude * np.sin(2 * np.pi * fx * seconds + phase_x)
        cy = SENSOR_SIZE / 2 + amplitude * np.sin(2 * np.pi * fy * seconds + phase_y)
        vx = np.cos(2 * np.pi * fx * seconds + phase_x) * fx
        vy = np.cos(2 * np.pi * fy * seconds + phase_y) * fy
        dx, dy = rng.normal(0, 2.0, (2, seconds.size))
        p = (dx * vx + dy * vy > 0).astype(np.uint8)
        return np.rint(cx + dx).astype(np.int64), np.rint(cy + dy).astype(np.int64), p


class ReplaySensor(DvsSensor):
    """A recorded DVS array as the sensor's output; with ``loop`` it repeats forever.

    The recording's own timestamps are kept (shifted by whole periods when looping, the
    period being the last timestamp + 1).
    """

    def __init__(self, events: np.ndarray, *, loop: bool = False) -> None:
        if events.dtype != DVS_DTYPE:
            raise SimulatorError(f"a recording must have dtype {DVS_DTYPE}, got {events.dtype}")
        if loop and events.size == 0:
            raise SimulatorError("cannot loop an empty recording")
        self._events = np.sort(events, order="t", kind="stable")
        # Contiguous, and searched with uint64 keys: a strided field or int keys would make
        # searchsorted convert the whole column on every call.
        self._t = np.ascontiguousarray(self._events["t"])
        self.loop = loop

    @property
    def period_us(self) -> int:
        return int(self._events["t"][-1]) + 1 if self._events.size else 0

    @property
    def end_us(self) -> int | None:
        return None if self.loop else self.period_us

    def events(self, t_start_us: int, t_end_us: int) -> np.ndarray:
        if t_start_us < 0 or t_end_us < t_start_us:
            raise SimulatorError(f"bad time window [{t_start_us}, {t_end_us})")
        if not self.loop or t_end_us == t_start_us:
            return self._slice(t_start_us, t_end_us)
        period = self.period_us
        parts = []
        for k in range(t_start_us // period, (t_end_us - 1) // period + 1):
            offset = k * period
            part = self._slice(t_start_us - offset, t_end_us - offset)
            part["t"] += np.uint64(offset)
            parts.append(part)
        return np.concatenate(parts) if parts else np.zeros(0, DVS_DTYPE)

    def _slice(self, t_start_us: int, t_end_us: int) -> np.ndarray:
        # A loop's earlier periods ask from before 0: the same place as 0 (t is unsigned).
        window = np.array([max(t_start_us, 0), max(t_end_us, 0)], dtype=np.uint64)
        lo, hi = np.searchsorted(self._t, window, side="left")
        return self._events[lo:hi].copy()
