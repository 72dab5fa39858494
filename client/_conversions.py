"""Events in the forms users hold them, to and from the wire's structured arrays.

Inputs may be a structured array (the schemas' dtypes, or any array with the same field
names), a sequence of spike objects with ``layer, x, y, feature, timestamp`` attributes (as
samna's ``Spike``) or DVS objects with ``x, y, p, timestamp``, or a raster ``[T, C, H, W]``
of event counts. Conversions check ranges and refuse what would wrap around silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from specklab.schemas.events import DTYPES, DVS_DTYPE, SPIKE_DTYPE, EventKind, from_columns


@dataclass(frozen=True, slots=True)
class Spike:
    """One spike, addressed as the guide's ``Spike``: model ``layer``, position, ``feature``."""

    layer: int
    x: int
    y: int
    feature: int
    #: Microseconds.
    timestamp: int


@dataclass(frozen=True, slots=True)
class DvsEvent:
    x: int
    y: int
    #: Polarity: 1 for ON, 0 for OFF.
    p: int
    #: Microseconds.
    timestamp: int


def event_kind(events: np.ndarray) -> EventKind:
    """The kind of a wire event array, from its dtype."""
    for kind, dtype in DTYPES.items():
        if events.dtype == dtype:
            return kind
    raise TypeError(f"not an event array of the schemas' dtypes: {events.dtype}")


def as_events(
    events: Any, *, dt: float | None = None, layer: int = 0, kind: EventKind | str | None = None
) -> np.ndarray:
    """Convert inputs to a spike or DVS array of the wire dtype, sorted by time.

    ``dt`` (microseconds per step) is required for rasters; a raster's channels become
    ``feature`` of spikes into model ``layer``, or polarity when ``kind`` is ``"dvs"``.
    """
    kind = EventKind(kind) if kind is not None else None
    if kind is EventKind.READOUT:
        raise ValueError("readout events are outputs; they cannot be sent to a device")
    if _is_tensor(events):
        events = events.detach().cpu().numpy()
    if isinstance(events, np.ndarray) and events.dtype.names is not None:
        array = _from_structured(events)
    elif isinstance(events, np.ndarray):
        if dt is None:
            raise ValueError("a raster [T, C, H, W] needs dt, the microseconds per time step")
        array = raster_to_events(events, dt=dt, layer=layer, kind=kind or EventKind.SPIKE)
    elif isinstance(events, Iterable) and not isinstance(events, str | bytes):
        array = _from_objects(list(events), kind)
    else:
        raise TypeError(
            "events must be a structured array, a raster [T, C, H, W], or a sequence of spike "
            f"objects; got {type(events).__name__}"
        )
    if kind is not None and array.dtype != DTYPES[kind]:
        raise ValueError(f"expected {kind.value} events, got {event_kind(array).value} events")
    return _sorted(array)


def _is_tensor(value: Any) -> bool:
    # Duck-typed so that torch is never imported here.
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def _from_structured(events: np.ndarray) -> np.ndarray:
    if events.ndim != 1:
        raise ValueError(f"an event array must be 1-d, got shape {events.shape}")
    names = set(events.dtype.names or ())
    for dtype in (SPIKE_DTYPE, DVS_DTYPE):
        if events.dtype == dtype:
            return events
        wanted = set(dtype.names or ()) - {"core"}
        if wanted <= names:
            return from_columns({name: events[name] for name in wanted}, dtype)
    raise ValueError(
        f"cannot tell the kind of an array with fields {sorted(names)}: spikes need "
        "t, layer, feature, x, y; DVS events need t, x, y, p"
    )


def _from_objects(objects: list[Any], kind: EventKind | None) -> np.ndarray:
    if not objects:
        return np.zeros(0, DTYPES[kind or EventKind.SPIKE])
    first = objects[0]
    is_dvs = kind is EventKind.DVS or (kind is None and not hasattr(first, "feature"))
    fields = ("timestamp", "x", "y", "p") if is_dvs else ("timestamp", "layer", "feature", "x", "y")
    try:
        columns = {name: [getattr(obj, name) for obj in objects] for name in fields}
    except AttributeError as exc:
        what = "DVS events" if is_dvs else "spikes"
        raise TypeError(
            f"{what} must be objects with the attributes {', '.join(fields)} (like samna's "
            f"events or specklab.client.{'DvsEvent' if is_dvs else 'Spike'}); got "
            f"{type(first).__name__}: {exc}"
        ) from None
    columns["t"] = columns.pop("timestamp")
    return from_columns(columns, DVS_DTYPE if is_dvs else SPIKE_DTYPE)


def _sorted(events: np.ndarray) -> np.ndarray:
    times = events["t"]
    if times.size > 1 and bool((times[1:] < times[:-1]).any()):
        return events[np.argsort(times, kind="stable")]
    return events


def raster_to_events(
    raster: Any, *, dt: float, layer: int = 0, kind: EventKind | str = EventKind.SPIKE
) -> np.ndarray:
    """A ``[T, C, H, W]`` raster of counts to events: a count ``n`` gives ``n`` events.

    The events of step ``t`` carry timestamp ``round(t * dt)`` microseconds.
    """
    kind = EventKind(kind)
    counts = np.asarray(raster)
    if counts.ndim != 4:
        raise ValueError(f"a raster must be [T, C, H, W], got shape {counts.shape}")
    if dt <= 0:
        raise ValueError(f"dt must be positive, got {dt}")
    if counts.dtype.kind == "f" and not np.array_equal(counts, np.round(counts)):
        raise ValueError("a raster holds event counts: whole numbers only")
    if counts.dtype.kind not in "biuf":
        raise ValueError(f"a raster holds event counts, not {counts.dtype}")
    if counts.size and counts.min() < 0:
        raise ValueError("a raster holds event counts: no negative values")
    _, channels, height, width = counts.shape
    if kind is EventKind.DVS and channels > 2:
        raise ValueError(f"a DVS raster has 1 or 2 polarity channels, got {channels}")
    if kind is EventKind.SPIKE and (height > 256 or width > 256):
        raise ValueError(f"spike rasters are at most 256x256, got {height}x{width}")
    index = np.nonzero(counts)
    repeats = counts[index].astype(np.int64)
    t, c, y, x = (np.repeat(axis, repeats) for axis in index)
    times = np.round(t * dt).astype(np.uint64)
    if kind is EventKind.DVS:
        out = np.zeros(len(times), DVS_DTYPE)
        out["p"] = c
    elif kind is EventKind.SPIKE:
        out = np.zeros(len(times), SPIKE_DTYPE)
        out["layer"] = layer
        out["feature"] = c
    else:
        raise ValueError(f"rasters convert to spike or DVS events, not {kind.value}")
    out["t"], out["x"], out["y"] = times, x, y
    return out


def to_spikes(events: np.ndarray) -> list[Spike]:
    """A spike array as a list of :class:`Spike` objects (slow for millions: keep arrays)."""
    if events.dtype != SPIKE_DTYPE:
        raise TypeError(f"expected a spike array, got dtype {events.dtype}")
    columns = [events[name].tolist() for name in ("layer", "x", "y", "feature", "t")]
    return [Spike(*row) for row in zip(*columns, strict=True)]


def to_dvs_events(events: np.ndarray) -> list[DvsEvent]:
    """A DVS event array as a list of :class:`DvsEvent` objects."""
    if events.dtype != DVS_DTYPE:
        raise TypeError(f"expected a DVS event array, got dtype {events.dtype}")
    columns = [events[name].tolist() for name in ("x", "y", "p", "t")]
    return [DvsEvent(*row) for row in zip(*columns, strict=True)]


def to_raster(
    events: np.ndarray,
    *,
    dt: float,
    shape: tuple[int, int, int] | None = None,
    t_start: int | None = None,
    steps: int | None = None,
) -> np.ndarray:
    """Events to a ``[T, C, H, W]`` raster of counts (C = feature, or polarity for DVS).

    Time step ``i`` counts the events with ``t_start + i*dt <= t < t_start + (i+1)*dt``;
    ``t_start`` defaults to the first event's time. ``shape`` is ``(C, H, W)``, by default
    just large enough. ``steps`` defaults to the last event's step + 1; events outside the
    time window are left out.
    """
    kind = event_kind(events)
    if kind is EventKind.READOUT:
        raise TypeError("readout events have no position; they do not make a raster")
    if dt <= 0:
        raise ValueError(f"dt must be positive, got {dt}")
    # int64 throughout: numpy 2 refuses an ``initial=-1`` (or any -1) on unsigned columns
    channel = (events["feature"] if kind is EventKind.SPIKE else events["p"]).astype(np.int64)
    x, y = events["x"].astype(np.int64), events["y"].astype(np.int64)
    if shape is None:
        shape = (
            int(channel.max(initial=-1)) + 1,
            int(y.max(initial=-1)) + 1,
            int(x.max(initial=-1)) + 1,
        )
    times = events["t"].astype(np.int64)
    start = int(times.min(initial=0)) if t_start is None else t_start
    step = np.floor((times - start) / dt).astype(np.int64)
    if steps is None:
        steps = int(step.max(initial=-1)) + 1
    for name, size, column in zip(("channel", "y", "x"), shape, (channel, y, x), strict=True):
        if column.size and int(column.max()) >= size:
            raise ValueError(f"an event has {name}={int(column.max())}, outside shape {shape}")
    inside = (step >= 0) & (step < steps)
    raster = np.zeros((steps, *shape), np.int64)
    np.add.at(raster, (step[inside], channel[inside], y[inside], x[inside]), 1)
    return raster
