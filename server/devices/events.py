"""Checks and bookkeeping that both device implementations share, mostly on event arrays."""

from __future__ import annotations

import numpy as np

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.events import DVS_DTYPE, SIGNATURES, SPIKE_DTYPE, EventKind

from .base import DeviceDescription
from .errors import ConfigRejected, DeviceStateError, InvalidEvents

_NO_LIMIT = -1


def check_chip(description: DeviceDescription, config: ChipConfig) -> None:
    if config.chip != description.chip:
        raise ConfigRejected(
            f"the configuration is for {config.chip}, {description.id} carries a {description.chip}"
        )


def input_spikes(config: ChipConfig | None, spikes: np.ndarray | None) -> np.ndarray:
    """Spikes checked against the applied configuration: a known core, in its input shape."""
    spikes = _as_events(spikes, SPIKE_DTYPE, EventKind.SPIKE)
    if len(spikes) == 0:
        return spikes
    if config is None:
        raise DeviceStateError("apply a configuration before sending events")
    # Per-core limits as lookup tables, so the check is a few vectorised gathers.
    features = np.full(256, _NO_LIMIT, dtype=np.int64)
    width = np.full(256, _NO_LIMIT, dtype=np.int64)
    height = np.full(256, _NO_LIMIT, dtype=np.int64)
    for core, layer in config.cnn_layers.items():
        shape = layer.dimensions.input_shape
        features[core], width[core], height[core] = shape.feature_count, shape.size.x, shape.size.y
    cores = spikes["core"]
    unknown = features[cores] == _NO_LIMIT
    if unknown.any():
        index = int(np.flatnonzero(unknown)[0])
        raise InvalidEvents(
            f"spike {index} addresses core {int(cores[index])}, which the configuration does "
            f"not use (cores {sorted(config.cnn_layers)})"
        )
    for name, limit in (("feature", features), ("x", width), ("y", height)):
        bad = spikes[name] >= limit[cores]
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            core = int(cores[index])
            raise InvalidEvents(
                f"spike {index} has {name}={int(spikes[name][index])}, but core {core} takes "
                f"{name} < {int(limit[core])}"
            )
    return spikes


def input_dvs(config: ChipConfig | None, dvs: np.ndarray | None) -> np.ndarray:
    """DVS events checked against the configuration's DVS layer."""
    dvs = _as_events(dvs, DVS_DTYPE, EventKind.DVS)
    if len(dvs) == 0:
        return dvs
    if config is None:
        raise DeviceStateError("apply a configuration before sending events")
    if config.dvs_layer is None:
        raise InvalidEvents("DVS events need a configuration with a DVS layer")
    size = config.dvs_layer.input_size
    for name, limit in (("x", size.x), ("y", size.y), ("p", 2)):
        bad = dvs[name] >= limit
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            raise InvalidEvents(
                f"DVS event {index} has {name}={int(dvs[name][index])}, the DVS layer takes "
                f"{name} < {limit}"
            )
    return dvs


def _as_events(events: np.ndarray | None, dtype: np.dtype, kind: EventKind) -> np.ndarray:
    if events is None:
        return np.zeros(0, dtype=dtype)
    if not isinstance(events, np.ndarray) or events.dtype != dtype or events.ndim != 1:
        got = getattr(events, "dtype", type(events).__name__)
        raise InvalidEvents(f"{kind.value} events must be a 1-d array of {SIGNATURES[kind]}: {got}")
    return events


def batch_origin(spikes: np.ndarray, dvs: np.ndarray) -> int:
    """The earliest timestamp of a batch: forward shifts inputs so that it becomes 0."""
    starts = [int(a["t"].min()) for a in (spikes, dvs) if len(a)]
    return min(starts) if starts else 0


def batch_span_s(*batches: np.ndarray | None) -> float:
    """Seconds from a batch's first to its last event (0 for what is not an event array)."""
    times = [
        b["t"]
        for b in batches
        if b is not None and len(b) and b.dtype.names and "t" in b.dtype.names
    ]
    if not times:
        return 0.0
    return (max(int(t.max()) for t in times) - min(int(t.min()) for t in times)) / 1e6


def batch_end(spikes: np.ndarray, dvs: np.ndarray) -> int:
    ends = [int(a["t"].max()) for a in (spikes, dvs) if len(a)]
    return max(ends) if ends else 0


def summary(is_open: bool, config: ChipConfig | None, sensor: bool) -> str:
    """One line for a device's health: open or not, network, sensor."""
    network = "no network" if config is None else f"{len(config.cnn_layers)} cores configured"
    return f"{'open' if is_open else 'closed'}, {network}, sensor {'on' if sensor else 'off'}"
