"""Input spikes for the guide's network, as the tests and benchmarks draw them."""

from __future__ import annotations

import numpy as np

from specklab.schemas.events import spikes

#: The guide network's input: one channel of 28 x 28 pixels.
GUIDE_INPUT_SIZE = 28


def guide_spikes(rng: np.random.Generator, n: int, span_us: int, *, start: int = 0) -> np.ndarray:
    """``n`` spikes into model layer 0 at random pixels, at sorted random times in
    ``[start, start + span_us)`` (drawn from ``rng`` in that order: times, x, y)."""
    return spikes(
        t=start + np.sort(rng.integers(0, span_us, n)),
        layer=0,
        feature=0,
        x=rng.integers(0, GUIDE_INPUT_SIZE, n),
        y=rng.integers(0, GUIDE_INPUT_SIZE, n),
    )
