"""``add_block`` against numpy: saturation, the low clamp, the lane count and the firing mask."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from specklab.server.simulator.intrinsics import LANES, add_block, lowest_bit


@njit(cache=False)
def _add(
    neurons: np.ndarray,
    start: int,
    inputs: np.ndarray,
    input_start: int,
    count: int,
    low: int,
    high: int,
) -> int:
    return add_block(neurons, start, inputs, input_start, count, low, high)


@njit(cache=False)
def _bits(mask: int) -> list[int]:
    found = []
    while mask:
        found.append(lowest_bit(mask))
        mask &= mask - 1
    return found


def _expected(
    neurons: np.ndarray, inputs: np.ndarray, count: int, low: int, high: int
) -> tuple[np.ndarray, int]:
    summed = np.clip(neurons[:count].astype(np.int64) + inputs[:count], -(2**15), 2**15 - 1)
    new = np.maximum(summed, low)
    mask = sum(1 << i for i in np.flatnonzero(new >= high).tolist())
    return new.astype(np.int16), mask


@pytest.mark.parametrize("input_dtype", [np.int8, np.int16])
def test_add_block_matches_numpy(input_dtype: type[np.integer]) -> None:
    rng = np.random.default_rng(0)
    info = np.iinfo(input_dtype)
    for _ in range(300):
        count = int(rng.integers(1, LANES + 1))
        low = int(rng.integers(-(2**15), 0))
        high = int(rng.integers(low + 1, 2**15))
        # Near the int16 limits half the time, so that saturation happens.
        scale = 2**15 - 1 if rng.random() < 0.5 else 200
        neurons = rng.integers(-scale - 1, scale + 1, 2 * LANES).astype(np.int16)
        inputs = rng.integers(info.min, info.max + 1, 2 * LANES).astype(input_dtype)
        start, input_start = int(rng.integers(0, LANES)), int(rng.integers(0, LANES))
        before = neurons.copy()
        mask = _add(neurons, start, inputs, input_start, count, low, high)
        new, expected_mask = _expected(before[start:], inputs[input_start:], count, low, high)
        assert neurons[start : start + count].tolist() == new.tolist()
        assert mask == expected_mask
        untouched = np.ones(neurons.size, bool)
        untouched[start : start + count] = False
        assert neurons[untouched].tolist() == before[untouched].tolist()
        assert _bits(mask) == [i for i in range(count) if new[i] >= high]


def test_add_block_refuses_other_dtypes() -> None:
    with pytest.raises(TypingError, match="int16"):
        _add(np.zeros(64, np.int32), 0, np.zeros(64, np.int8), 0, 1, -1, 1)
    with pytest.raises(TypingError, match="int8 or int16"):
        _add(np.zeros(64, np.int16), 0, np.zeros(64, np.int32), 0, 1, -1, 1)
