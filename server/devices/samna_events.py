"""numpy event arrays <-> samna event objects, at the samna driver's edge only.

samna takes and gives one Python object per event, so per-event work cannot be avoided here; it
is kept to one C-level ``map`` over column lists on the way in and one pass that sorts events by
type on the way out, with the columns then filled as whole arrays.

``ReadoutValue.value`` holds 21 bits: bit 20 = valid, bits 19:16 = class, bits 15:0 = value.
Readouts without the valid bit are dropped (counted). A readout that carries no timestamp gets
the timestamp of the newest timed event before it in the same batch.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from specklab.schemas.events import DVS_DTYPE, READOUT_DTYPE, SPIKE_DTYPE

READOUT_VALID_BIT = 20
READOUT_CLASS_SHIFT = 16
READOUT_CLASS_MASK = 0xF
READOUT_VALUE_MASK = 0xFFFF


def to_samna(chip: ModuleType, spikes: np.ndarray, dvs: np.ndarray, shift: int = 0) -> list[Any]:
    """Input events for ``chip`` (e.g. ``samna.speck2f``), time-ordered, ``shift`` us earlier.

    Spikes address cores: samna's ``Spike.layer`` is the core."""
    event = chip.event
    spike_t = spikes["t"].astype(np.int64) - shift
    dvs_t = dvs["t"].astype(np.int64) - shift
    made_spikes = _build(
        event.Spike,
        layer=spikes["core"].tolist(),
        x=spikes["x"].tolist(),
        y=spikes["y"].tolist(),
        feature=spikes["feature"].tolist(),
        timestamp=spike_t.tolist(),
    )
    made_dvs = _build(
        event.DvsEvent,
        x=dvs["x"].tolist(),
        y=dvs["y"].tolist(),
        p=(dvs["p"] != 0).tolist(),
        timestamp=dvs_t.tolist(),
    )
    if not made_dvs:
        return made_spikes if _sorted(spike_t) else [made_spikes[i] for i in _order(spike_t)]
    if not made_spikes:
        return made_dvs if _sorted(dvs_t) else [made_dvs[i] for i in _order(dvs_t)]
    both = made_spikes + made_dvs
    return [both[i] for i in _order(np.concatenate([spike_t, dvs_t]))]


def _build(kind: type, **columns: list[Any]) -> list[Any]:
    """One ``kind`` event per row of ``columns``, every field set by name (as sinabs does): a
    positional build would silently swap fields if samna's argument order were not ours."""
    names = list(columns)
    made = []
    for row in zip(*columns.values(), strict=True):
        ev = kind()
        for name, value in zip(names, row, strict=True):
            setattr(ev, name, value)
        made.append(ev)
    return made


def _sorted(t: np.ndarray) -> bool:
    return bool(np.all(t[1:] >= t[:-1]))


def _order(t: np.ndarray) -> list[int]:
    return np.argsort(t, kind="stable").tolist()


@dataclass
class Decoded:
    spikes: np.ndarray
    dvs: np.ndarray
    readout: np.ndarray
    #: (core, address, state) of every NeuronValue.
    neurons: list[tuple[int, int, int]] = field(default_factory=list)
    #: Events that are not outputs specklab passes on, by type name (and invalid readouts).
    ignored: Counter[str] = field(default_factory=Counter)


def from_samna(chip: ModuleType, events: list[Any]) -> Decoded:
    """Sort samna output events into arrays. Spikes get ``core`` (= samna's layer) only."""
    event = chip.event
    spike_type, dvs_type = event.Spike, event.DvsEvent
    readout_type, neuron_type = event.ReadoutValue, event.NeuronValue
    spikes: list[Any] = []
    dvs: list[Any] = []
    readouts: list[tuple[int, int]] = []
    neurons: list[tuple[int, int, int]] = []
    ignored: Counter[str] = Counter()
    last_t = 0
    for ev in events:
        kind = type(ev)
        if kind is spike_type:
            spikes.append(ev)
            last_t = ev.timestamp
        elif kind is dvs_type:
            dvs.append(ev)
            last_t = ev.timestamp
        elif kind is readout_type:
            stamp = getattr(ev, "timestamp", None)
            if stamp is not None:
                last_t = stamp
            readouts.append((last_t, ev.value))
        elif kind is neuron_type:
            neurons.append((ev.layer, ev.address, ev.neuron_state))
        else:
            ignored[kind.__name__] += 1
    readout = _readout_array(readouts)
    invalid = len(readouts) - len(readout)
    if invalid:
        ignored["ReadoutValue without valid bit"] += invalid
    return Decoded(_spike_array(spikes), _dvs_array(dvs), readout, neurons, ignored)


def _spike_array(events: list[Any]) -> np.ndarray:
    out = np.zeros(len(events), dtype=SPIKE_DTYPE)
    if events:
        out["t"] = [e.timestamp for e in events]
        out["core"] = [e.layer for e in events]
        out["feature"] = [e.feature for e in events]
        out["x"] = [e.x for e in events]
        out["y"] = [e.y for e in events]
    return out


def _dvs_array(events: list[Any]) -> np.ndarray:
    out = np.zeros(len(events), dtype=DVS_DTYPE)
    if events:
        out["t"] = [e.timestamp for e in events]
        out["x"] = [e.x for e in events]
        out["y"] = [e.y for e in events]
        out["p"] = [bool(e.p) for e in events]
    return out


def _readout_array(readouts: list[tuple[int, int]]) -> np.ndarray:
    raw = np.array(readouts, dtype=np.int64).reshape(-1, 2)
    valid = (raw[:, 1] >> READOUT_VALID_BIT) & 1 == 1
    raw = raw[valid]
    out = np.zeros(len(raw), dtype=READOUT_DTYPE)
    out["t"] = raw[:, 0]
    out["class_id"] = (raw[:, 1] >> READOUT_CLASS_SHIFT) & READOUT_CLASS_MASK
    out["value"] = raw[:, 1] & READOUT_VALUE_MASK
    return out


def neuron_address(core_shape: tuple[int, int, int], feature: int, y: int, x: int) -> int:
    """Address of a neuron in its core's neuron memory, for ``ReadNeuronValue``.

    The packing of the vendor library (sinabs 3.1.3, ``io.calculate_neuron_address``): with
    ``c`` and ``h`` the ceiling of log2 of the feature count and the height, the feature sits
    in the low ``c`` bits, ``x`` from bit ``c`` and ``y`` from bit ``c + h``. (The ``y`` shift
    counts the height's bits, not the width's, exactly as the vendor's does.)
    """
    features, height, _ = core_shape
    feature_bits, y_bits = _bits(features), _bits(height)
    return (y << (feature_bits + y_bits)) | (x << feature_bits) | feature


def _bits(size: int) -> int:
    """ceil(log2(size)) for sizes >= 1, in integers."""
    return (size - 1).bit_length()
