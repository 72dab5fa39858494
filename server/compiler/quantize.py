"""Quantization to the chip's integers, exactly as the vendor's ``discretize`` (docs/chip.md §6).

One scale ``s`` per core: the smallest of ``scale(W, 8)``, ``scale(b, 8)`` and
``scale([min_v_mem, threshold], 16)``. Then ``W' = round(W * s)`` etc., rounding half to even
(``np.round`` = ``torch.round``), no clipping. The arithmetic mirrors the vendor's torch code
to the bit: the extremes are read as Python floats (float32 values, exact), ``s`` is computed in
float64, and products are float32 tensor x scale, i.e. float32 multiplications with ``s``
rounded to float32. Plain float64 arithmetic would give a different integer in rare ties.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from specklab.schemas.compile import Problem

from .convert import ChipLayer, fail, warning
from .errors import QuantizationError

WEIGHT_BITS = 8
BIAS_BITS = 8
STATE_BITS = 16
#: What the vendor quantizes with when ``min_v_mem`` is None.
NO_FLOOR = -(2 ** (STATE_BITS - 1))
#: A layer whose non-zero weights mostly become 0 gets a warning.
ZERO_WARNING_FRACTION = 0.5

Term = Literal["weights", "bias", "thresholds"]


@dataclass(frozen=True, slots=True, eq=False)
class Quantized:
    #: ``(out, in, kh, kw)`` integers.
    weight: np.ndarray
    #: One integer per output feature (zeros when the layer has no bias).
    bias: np.ndarray
    threshold_high: int
    threshold_low: int
    #: None when the model came quantized (``discretize=False``).
    scale: float | None
    zero_fraction: float


def scale(values: np.ndarray, bits: int) -> float:
    """The spec's ``scale(x, bits)``; an all-zero ``x`` gives infinity (it never wins)."""
    dmin, dmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    low, high = float(values.min()), float(values.max())
    if abs(low) <= abs(high) * abs(dmin / dmax):
        return abs(dmax / high) if high != 0 else float("inf")
    return abs(dmin / low)


def _round(values: np.ndarray, factor: float) -> np.ndarray:
    return np.round(values.astype(np.float32) * np.float32(factor)).astype(np.int64)


def _zero_fraction(weight: np.ndarray, quantized: np.ndarray) -> float:
    nonzero = weight != 0
    count = int(nonzero.sum())
    return float((quantized[nonzero] == 0).sum()) / count if count else 0.0


def quantize(layer: ChipLayer, discretize: bool) -> tuple[Quantized, list[Problem]]:
    weight = layer.scaled_weight()
    bias = layer.bias if layer.bias is not None else np.zeros(weight.shape[0], np.float32)
    floor = layer.min_v_mem if layer.min_v_mem is not None else NO_FLOOR
    states = np.array([floor, layer.threshold], dtype=np.float32)
    if not discretize:
        return _as_given(layer, weight, bias, states), []
    terms: dict[Term, float] = {
        "weights": scale(weight, WEIGHT_BITS),
        "bias": scale(bias, BIAS_BITS),
        "thresholds": scale(states, STATE_BITS),
    }
    limited_by = min(terms, key=lambda t: terms[t])
    factor = terms[limited_by]
    weight_q = _round(weight, factor)
    low, high = _round(states, factor).tolist()
    result = Quantized(
        weight=weight_q,
        bias=_round(bias, factor),
        threshold_high=int(high),
        threshold_low=int(low),
        scale=factor,
        zero_fraction=_zero_fraction(weight, weight_q),
    )
    problems = []
    if result.zero_fraction > ZERO_WARNING_FRACTION:
        problems.append(_zero_warning(layer, result, limited_by, weight, bias))
    return result, problems


def _zero_warning(
    layer: ChipLayer, result: Quantized, limited_by: Term, weight: np.ndarray, bias: np.ndarray
) -> Problem:
    largest = float(np.abs(weight).max())
    if limited_by == "thresholds" and layer.min_v_mem is None:
        cause = (
            "min_v_mem is None, so the quantization uses -32768 as the low threshold, which "
            f"caps the scale at {result.scale:g}: weights below 0.5 round to 0. "
            "Set min_v_mem (the guide's default is -1.0)"
        )
    elif limited_by == "thresholds":
        cause = (
            f"the thresholds [{layer.min_v_mem:g}, {layer.threshold:g}] set the scale to "
            f"{result.scale:g}, and the weights are small next to them (largest {largest:g})"
        )
    elif limited_by == "bias":
        cause = (
            f"the bias (largest {float(np.abs(bias).max()):g}) sets the scale to "
            f"{result.scale:g}; the weights are small next to it (largest {largest:g})"
        )
    else:
        cause = (
            f"the largest weight ({largest:g}) sets the scale to {result.scale:g}; most "
            "weights are much smaller"
        )
    return warning(
        "zero_weights",
        f"model layer {layer.index}: {result.zero_fraction:.0%} of its non-zero weights "
        f"quantize to 0: {cause}",
        layer=layer.index,
    )


def _integers(values: np.ndarray, bits: int, what: str, layer: ChipLayer) -> np.ndarray:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    rounded = np.round(values)
    bad = (rounded != values) | (rounded < low) | (rounded > high)
    if np.any(bad):
        first = float(values[bad].reshape(-1)[0])
        hint = ""
        if what == "weights" and np.any(layer.input_scale != 1):
            hint = " (average pooling before it rescales its weights by 1/k^2)"
        fail(
            QuantizationError,
            f"model layer {layer.index}: with discretize off, {what} must be {bits}-bit integers "
            f"in [{low}, {high}]; found {first:g}{hint}",
            layer.sources[0],
            "discretize=False means the model is already quantized",
        )
    return rounded.astype(np.int64)


def _as_given(
    layer: ChipLayer, weight: np.ndarray, bias: np.ndarray, states: np.ndarray
) -> Quantized:
    weight_q = _integers(weight, WEIGHT_BITS, "weights", layer)
    low, high = _integers(states, STATE_BITS, "thresholds", layer).tolist()
    return Quantized(
        weight=weight_q,
        bias=_integers(bias, BIAS_BITS, "biases", layer),
        threshold_high=int(high),
        threshold_low=int(low),
        scale=None,
        zero_fraction=0.0,
    )
