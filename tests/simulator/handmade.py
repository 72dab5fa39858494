"""Inputs and readable outputs for the rule-by-rule tests (their chips: tests/chip_configs.py)."""

from __future__ import annotations

import numpy as np

from specklab.schemas.events import DVS_DTYPE, SPIKE_DTYPE


def spikes(*events: tuple[int, int, int, int, int]) -> np.ndarray:
    """Input spikes from ``(t, core, feature, y, x)`` tuples."""
    out = np.zeros(len(events), SPIKE_DTYPE)
    for i, (t, core, feature, y, x) in enumerate(events):
        out[i] = (t, 0, core, feature, x, y)
    return out


def dvs_events(*events: tuple[int, int, int, int]) -> np.ndarray:
    """DVS events from ``(t, x, y, p)`` tuples."""
    return np.array(list(events), dtype=DVS_DTYPE)


def rows(spike_array: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """Output spikes as ``(t, core, feature, y, x)`` tuples, for readable assertions."""
    return [
        (int(s["t"]), int(s["core"]), int(s["feature"]), int(s["y"]), int(s["x"]))
        for s in spike_array
    ]
