"""The one check of input events against a deployment: every input reaches a device through it.

Streams (``stream.ServerStream``) and replays run it once per batch; the devices trust what it
passed and do not check again: :meth:`InputCheck.checked` hands out a :class:`Checked` proof
naming the very arrays it passed and the configuration it checked them against, and a device
skips its own guard (the simulator's) only for those arrays on that configuration.

A fault is a :class:`~.frames.FrameError` with the code ``bad_input`` and a message naming the
first offending event and how many such events the batch holds.

Spikes are addressed by *model* layer (what users speak); :meth:`InputCheck.spikes` fills in
``core`` in the same pass, from lookup tables built once per deployment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np

from .chipconfig import ChipConfig
from .events import DTYPES, EventKind, copy_events
from .frames import FrameError

#: Largest timestamp of an input event (about 146,000 years of microseconds): device time
#: arithmetic stays within signed 64 bits.
MAX_TIMESTAMP_US: Final = (1 << 62) - 1
#: Lookup value of a model layer that takes no input.
_NO_INPUT: Final = -1


@dataclass(frozen=True, slots=True, eq=False)
class Checked:
    """Proof that :class:`InputCheck` passed ``events`` (this very array, made read-only: in
    range for ``config``'s inputs, sorted by t) against ``config`` (this very object).

    Only the array itself is vouched for: a slice, a copy or a merge of it is not, and another
    configuration is not, so whatever was not checked is still checked by the device. The one
    other maker is a device's continuous-mode input queue, for what it hands out of checked
    arrays only (their slices and t-ordered merges: in range and sorted as they were).
    """

    config: ChipConfig
    events: np.ndarray

    def covers(self, config: object, *arrays: np.ndarray) -> bool:
        """Whether every one of ``arrays`` is empty or the checked array, for ``config``."""
        if config is not self.config:
            return False
        return all(array is self.events or not len(array) for array in arrays)


class InputCheck:
    """Input events checked against one configuration."""

    def __init__(self, config: ChipConfig) -> None:
        self.config = config
        self.inputs = list(config.inputs)
        # Per model layer (the spike field is a u1): its core and input shape, -1 when none.
        self._core = np.full(256, _NO_INPUT, dtype=np.int64)
        self._limits = {
            name: np.full(256, _NO_INPUT, dtype=np.int64) for name in ("feature", "x", "y")
        }
        for layer in self.inputs:
            core = config.core_of_layer[layer]
            shape = config.cnn_layers[core].dimensions.input_shape
            self._core[layer] = core
            self._limits["feature"][layer] = shape.feature_count
            self._limits["x"][layer] = shape.size.x
            self._limits["y"][layer] = shape.size.y
        dvs = config.dvs_layer
        self._dvs_limits = (
            None if dvs is None else {"x": dvs.input_size.x, "y": dvs.input_size.y, "p": 2}
        )

    def events(self, kind: EventKind, events: np.ndarray) -> np.ndarray:
        """``events`` of ``kind`` as a device takes them (spikes with ``core``), or FrameError."""
        if events.dtype != DTYPES[kind] or events.ndim != 1:
            raise FrameError(
                "bad_input", f"{kind.value} events must be a 1-d array of {DTYPES[kind]}"
            )
        if kind is EventKind.SPIKE:
            checked = self.spikes(events)
        elif kind is EventKind.DVS:
            checked = self.dvs(events)
        else:
            raise FrameError("bad_input", f"{kind.value} events cannot be sent to a device")
        _check_times(events["t"])
        return checked

    def checked(self, kind: EventKind, events: np.ndarray) -> Checked:
        """:meth:`events`, as a proof the devices trust (the array is made read-only)."""
        passed = self.events(kind, events)
        passed.flags.writeable = False
        return Checked(self.config, passed)

    def spikes(self, spikes: np.ndarray) -> np.ndarray:
        """Model-layer spikes in range, as a copy with ``core`` filled in."""
        layers = spikes["layer"]
        if len(layers) and layers.min() == layers.max():
            return self._one_layer_spikes(spikes, int(layers[0]))
        cores = self._core[layers]
        unknown = np.flatnonzero(cores == _NO_INPUT)
        if unknown.size:
            raise self._no_input(int(unknown[0]), int(layers[unknown[0]]))
        for name, limits in self._limits.items():
            _refuse_outside(
                spikes[name], limits[layers], name, lambda i: f"model layer {int(layers[i])}"
            )
        out = copy_events(spikes)
        out["core"] = cores
        return out

    def _one_layer_spikes(self, spikes: np.ndarray, layer: int) -> np.ndarray:
        """:meth:`spikes` for a batch of one layer (the usual one): its limits are numbers,
        checked with one reduction per field instead of a lookup per event."""
        core = int(self._core[layer])
        if core == _NO_INPUT:
            raise self._no_input(0, layer)
        target = f"model layer {layer}"
        for name, limits in self._limits.items():
            _refuse_outside(spikes[name], int(limits[layer]), name, lambda i: target)
        out = copy_events(spikes)
        out["core"] = core
        return out

    def _no_input(self, index: int, layer: int) -> FrameError:
        return FrameError(
            "bad_input",
            f"event {index}: model layer {layer} takes no input spikes; "
            f"input layers are {self.inputs}",
        )

    def dvs(self, events: np.ndarray) -> np.ndarray:
        """DVS events inside the DVS layer's input (as they are: no copy)."""
        if self._dvs_limits is None:
            raise FrameError("bad_input", "the deployed network has no DVS input layer")
        for name, limit in self._dvs_limits.items():
            _refuse_outside(events[name], limit, name, lambda i: "the DVS layer")
        return events


def _refuse_outside(
    column: np.ndarray, limit: np.ndarray | int, name: str, target: Callable[[int], str]
) -> None:
    """Refuse values at or past ``limit`` (one per event, or one for all); ``target(index)``
    names what the offending event was meant for."""
    if isinstance(limit, int) and (not column.size or int(column.max()) < limit):
        return  # one reduction, no temporary arrays: the usual batch is inside its layer
    bad = np.flatnonzero(column >= limit)
    if bad.size:
        index = int(bad[0])
        bound = int(limit[index]) if isinstance(limit, np.ndarray) else limit
        raise FrameError(
            "bad_input",
            f"event {index}: {name}={int(column[index])} is out of range for {target(index)} "
            f"({name} < {bound}); {bad.size} such events in the batch",
        )


def _check_times(times: np.ndarray) -> None:
    # The field is strided (every 13 or 14 bytes): numpy compares a contiguous copy of it
    # faster, copy included (200k DVS times, in process: 0.29 -> 0.12 ms).
    times = np.ascontiguousarray(times)
    # One pass for sorted times (the usual batch): their largest is the last.
    back = np.flatnonzero(times[1:] < times[:-1]) if times.size > 1 else times[:0]
    if times.size and int(times.max() if back.size else times[-1]) > MAX_TIMESTAMP_US:
        index = int(np.argmax(times > MAX_TIMESTAMP_US))
        raise FrameError(
            "bad_input",
            f"event {index}: t={int(times[index])} is beyond the largest timestamp, "
            f"{MAX_TIMESTAMP_US} us",
        )
    if back.size:
        raise FrameError(
            "bad_input",
            f"events must be sorted by t; event {int(back[0]) + 1} goes back in time",
        )
