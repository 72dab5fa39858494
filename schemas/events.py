"""Event arrays: the currency of every hot path, on the wire and inside the daemon.

Each kind of event is a packed, little-endian numpy structured dtype with a 64-bit
microsecond timestamp ``t``. Field names follow the event-vision ecosystem (tonic, aedat):
``t, x, y, p`` for DVS events.

Spikes carry both addresses a user needs: ``layer`` is the *model* layer index (what users
speak, as in the vendor guide) and ``core`` the chip layer (0-8, or 13 for the DVS layer).
Inputs only need ``layer``: the daemon fills in ``core``.
"""

from __future__ import annotations

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
    return ",".join(f"{name}{dtype.fields[name][0].str}" for name in dtype.names)


SIGNATURES: Final[dict[EventKind, str]] = {kind: dtype_signature(dt) for kind, dt in DTYPES.items()}


def empty(kind: EventKind | str, size: int = 0) -> np.ndarray:
    return np.zeros(size, dtype=DTYPES[EventKind(kind)])


def spikes(
    t: np.typing.ArrayLike,
    layer: np.typing.ArrayLike,
    feature: np.typing.ArrayLike,
    x: np.typing.ArrayLike,
    y: np.typing.ArrayLike,
    core: np.typing.ArrayLike = 0,
) -> np.ndarray:
    """Build a spike array from columns (scalars broadcast)."""
    columns = np.broadcast_arrays(*(np.asarray(c) for c in (t, layer, core, feature, x, y)))
    out = np.empty(columns[0].shape[0] if columns[0].ndim else 1, dtype=SPIKE_DTYPE)
    for name, column in zip(("t", "layer", "core", "feature", "x", "y"), columns, strict=True):
        out[name] = column
    return out


def dvs_events(
    t: np.typing.ArrayLike, x: np.typing.ArrayLike, y: np.typing.ArrayLike, p: np.typing.ArrayLike
) -> np.ndarray:
    """Build a DVS event array from columns (scalars broadcast)."""
    columns = np.broadcast_arrays(*(np.asarray(c) for c in (t, x, y, p)))
    out = np.empty(columns[0].shape[0] if columns[0].ndim else 1, dtype=DVS_DTYPE)
    for name, column in zip(("t", "x", "y", "p"), columns, strict=True):
        out[name] = column
    return out
