"""Event arrays: the currency of every hot path, on the wire and inside the daemon.

Each kind of event is a packed, little-endian numpy structured dtype with a 64-bit
microsecond timestamp ``t``. Field names follow the event-vision ecosystem (tonic, aedat):
``t, x, y, p`` for DVS events.

Spikes carry both addresses a user needs: ``layer`` is the *model* layer index (what users
speak, as in the vendor guide) and ``core`` the chip layer (0-8, or 13 for the DVS layer).
Inputs only need ``layer``: the daemon fills in ``core``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

import numpy as np

#: Chip layer id of the DVS pre-processing layer in spike events.
DVS_CORE: Final = 13
#: Chip layer id of the readout layer.
READOUT_CORE: Final = 12
#: Model-layer value of spikes that come from the DVS layer (it has no model-layer index).
DVS_LAYER: Final = 255

SPIKE_DTYPE: Final = np.dtype(
    [("t", "<u8"), ("layer", "u1"), ("core", "u1"), ("feature", "<u2"), ("x", "u1"), ("y", "u1")]
)
DVS_DTYPE: Final = np.dtype([("t", "<u8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])
READOUT_DTYPE: Final = np.dtype([("t", "<u8"), ("class_id", "u1"), ("value", "<u2")])


class EventKind(StrEnum):
    SPIKE = "spike"
    DVS = "dvs"
    READOUT = "readout"


DTYPES: Final[dict[EventKind, np.dtype]] = {
    EventKind.SPIKE: SPIKE_DTYPE,
    EventKind.DVS: DVS_DTYPE,
    EventKind.READOUT: READOUT_DTYPE,
}


def dtype_signature(dtype: np.dtype) -> str:
    """A short, exact text form of a structured dtype, e.g. ``t<u8,x<u2,y<u2,p|u1``."""
    if dtype.names is None:
        return dtype.str
    return ",".join(f"{name}{dtype[name].str}" for name in dtype.names)


SIGNATURES: Final[dict[EventKind, str]] = {kind: dtype_signature(dt) for kind, dt in DTYPES.items()}


# numpy copies packed structured arrays field by field (a 200k-spike copy takes ~10 ms, a
# concatenation or a gather several times that); the same bytes copied as bytes take ~0.2 ms.
# The helpers below move events as rows of bytes: same results, no per-field work.


def _rows(events: np.ndarray) -> np.ndarray:
    """The events as an (n, itemsize) byte matrix (a view when they are contiguous)."""
    return np.ascontiguousarray(events).view(np.uint8).reshape(len(events), events.dtype.itemsize)


def copy_events(events: np.ndarray) -> np.ndarray:
    """A writable copy of an event array."""
    return _rows(events).copy().view(events.dtype).reshape(len(events))


def concat_events(parts: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    """The event arrays one after the other, as one new array of ``dtype``."""
    if not parts:
        return np.zeros(0, dtype)
    joined: np.ndarray = np.concatenate([_rows(part) for part in parts]).view(dtype).reshape(-1)
    return joined


def take_events(events: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``events[indices]`` for an index array (a reordering or a selection)."""
    taken: np.ndarray = _rows(events)[indices].view(events.dtype).reshape(len(indices))
    return taken


def empty(kind: EventKind | str, size: int = 0) -> np.ndarray:
    return np.zeros(size, dtype=DTYPES[EventKind(kind)])


def from_columns(columns: Mapping[str, np.typing.ArrayLike], dtype: np.dtype) -> np.ndarray:
    """An event array of ``dtype`` from named columns (scalars broadcast; fields not given are 0).

    Every value must be a whole number inside its field's range: a value that would wrap
    around (``x=300`` into a ``u1``, ``t=-5`` into a ``u8``) raises ``ValueError`` naming the
    field, instead of arriving as another number.
    """
    names = list(columns)
    arrays = np.broadcast_arrays(*(np.asarray(columns[name]) for name in names))
    size = arrays[0].shape[0] if arrays and arrays[0].ndim else 1
    out = np.zeros(size, dtype)
    for name, column in zip(names, arrays, strict=True):
        column = column.reshape(-1) if column.ndim else column.reshape(1)
        _check_range(name, column, dtype[name])
        out[name] = column
    return out


def _check_range(name: str, column: np.ndarray, target: np.dtype) -> None:
    if column.dtype.kind not in "biuf":
        raise ValueError(f"event field {name!r} must hold numbers, got {column.dtype}")
    if column.dtype.kind == "f" and not np.array_equal(column, np.round(column)):
        raise ValueError(f"event field {name!r} must hold whole numbers")
    if column.size and column.dtype.kind != "b":
        low, high = column.min(), column.max()
        info = np.iinfo(target)
        if low < info.min or high > info.max:
            raise ValueError(
                f"event field {name!r} holds {low if low < info.min else high}, outside "
                f"{info.min}..{info.max}"
            )


def spikes(
    t: np.typing.ArrayLike,
    layer: np.typing.ArrayLike,
    feature: np.typing.ArrayLike,
    x: np.typing.ArrayLike,
    y: np.typing.ArrayLike,
    core: np.typing.ArrayLike = 0,
) -> np.ndarray:
    """Build a spike array from columns (scalars broadcast; out-of-range values refused)."""
    columns = {"t": t, "layer": layer, "core": core, "feature": feature, "x": x, "y": y}
    return from_columns(columns, SPIKE_DTYPE)


def dvs_events(
    t: np.typing.ArrayLike, x: np.typing.ArrayLike, y: np.typing.ArrayLike, p: np.typing.ArrayLike
) -> np.ndarray:
    """Build a DVS event array from columns (scalars broadcast; out-of-range values refused)."""
    return from_columns({"t": t, "x": x, "y": y, "p": p}, DVS_DTYPE)
