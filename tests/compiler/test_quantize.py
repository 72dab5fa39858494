"""Quantization exactly as the vendor's discretize (docs/chip.md §6)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
import torch

from specklab.server.compiler import QuantizationError, compile_graph
from specklab.server.compiler.convert import ChipLayer
from specklab.server.compiler.graph import ReLU
from specklab.server.compiler.quantize import quantize, scale

from .graphs import avg, conv, options, sequential


def _layer(
    weight: list[float] | np.ndarray,
    bias: list[float] | None = None,
    threshold: float = 1.0,
    min_v_mem: float | None = -1.0,
    input_scale: float = 1.0,
) -> ChipLayer:
    w = np.asarray(weight, dtype=np.float32).reshape(-1, 1, 1, 1)
    return ChipLayer(
        index=0,
        kind="conv2d",
        sources=[],
        weight=w,
        bias=None if bias is None else np.asarray(bias, dtype=np.float32),
        input_scale=np.full(1, input_scale, dtype=np.float32),
        stride=(1, 1),
        padding=(0, 0),
        input_shape=(1, 1, 1),
        output_shape=(w.shape[0], 1, 1),
        threshold=threshold,
        min_v_mem=min_v_mem,
    )


def test_worked_example_one() -> None:
    q, warnings = quantize(_layer([0.5], bias=[0.1]), discretize=True)
    assert q.scale == 254
    assert q.weight.ravel().tolist() == [127]
    assert q.bias.tolist() == [25]
    assert (q.threshold_high, q.threshold_low) == (254, -254)
    assert warnings == []


def test_worked_example_two() -> None:
    q, _ = quantize(_layer([0.3, -0.7]), discretize=True)
    assert q.scale == pytest.approx(128 / 0.7)
    assert q.weight.ravel().tolist() == [55, -128]
    assert (q.threshold_high, q.threshold_low) == (183, -183)


def test_scale_of_all_zeros_never_wins() -> None:
    assert scale(np.zeros(4, np.float32), 8) == float("inf")


def _vendor(weight: np.ndarray, threshold: float, low: float) -> tuple[list[int], int, int]:
    """The vendor's arithmetic, in torch: float32 tensors times a Python-float scale."""
    w = torch.tensor(weight)
    states = torch.tensor([low, threshold])

    def s(x: torch.Tensor, bits: int) -> float:
        dmin, dmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        lo, hi = x.min().item(), x.max().item()
        if abs(lo) <= abs(hi) * abs(dmin / dmax):
            return abs(dmax / hi) if hi else float("inf")
        return abs(dmin / lo)

    factor = min(s(w, 8), s(torch.zeros(len(weight)), 8), s(states, 16))
    return (
        torch.round(w * factor).int().tolist(),
        int(torch.round(states[1] * factor)),
        int(torch.round(states[0] * factor)),
    )


def test_matches_torch_float32_including_ties() -> None:
    rng = np.random.default_rng(7)
    # weights that land on x.5 after scaling: where float64 arithmetic would round differently
    largest = np.float32(1.0724611)
    ties = (np.arange(0, 127) + 0.5) / (127 / float(largest))
    weight = np.concatenate([[largest], ties, rng.normal(0, 0.3, 500)]).astype(np.float32)
    float64_result = np.round(weight.astype(np.float64) * (127 / float(largest)))
    q, _ = quantize(_layer(weight, threshold=0.8, min_v_mem=-0.5), discretize=True)
    vendor_weight, vendor_high, vendor_low = _vendor(weight, 0.8, -0.5)
    assert q.weight.ravel().tolist() == vendor_weight
    assert (q.threshold_high, q.threshold_low) == (vendor_high, vendor_low)
    assert (float64_result != q.weight.ravel()).any()  # the test does exercise a tie


def test_average_pooling_rescale_applies_to_weights_only() -> None:
    q, _ = quantize(_layer([0.5], bias=[0.1], input_scale=0.25), discretize=True)
    # W = 0.125 now and sets the scale (127 / 0.125); the bias keeps its 0.1
    assert q.scale == 1016
    assert q.weight.ravel().tolist() == [127]
    assert q.bias.tolist() == [102]  # round(0.1 * 1016); a rescaled bias would give 25


def test_weights_rounding_to_zero_warn_with_the_cause() -> None:
    weight = np.full(8, 0.2, dtype=np.float32)
    q, warnings = quantize(_layer(weight, min_v_mem=None), discretize=True)
    assert q.threshold_low == -32768 and q.scale == 1.0
    assert not q.weight.any()
    [warning] = warnings
    assert warning.severity == "warning" and warning.code == "zero_weights"
    assert "min_v_mem is None" in warning.message and "100%" in warning.message


def test_a_dominant_weight_is_named_as_the_cause() -> None:
    weight = np.concatenate([[100.0], np.full(20, 0.1)]).astype(np.float32)
    _, warnings = quantize(_layer(weight), discretize=True)
    assert "largest weight" in warnings[0].message


def test_without_discretize_integers_pass_and_fractions_fail() -> None:
    q, _ = quantize(_layer([3, -7], threshold=10, min_v_mem=-10), discretize=False)
    assert q.weight.ravel().tolist() == [3, -7] and q.scale is None
    assert (q.threshold_high, q.threshold_low) == (10, -10)
    graph = sequential(conv(1, 2, 3), ReLU())
    with pytest.raises(QuantizationError, match="8-bit integers"):
        compile_graph(graph, options(discretize=False))


def test_without_discretize_an_average_pool_explains_the_fraction() -> None:
    first = conv(1, 2, 3)
    second = conv(2, 2, 3)
    integral = [type(c)(np.round(c.weight * 10), None) for c in (first, second)]
    graph = sequential(integral[0], ReLU(), avg(2), integral[1], ReLU())
    with pytest.raises(QuantizationError, match="1/k\\^2"):
        compile_graph(graph, options((1, 12, 12), discretize=False, min_v_mem=-1.0))


def test_guide_network_quantizes_every_weight_into_8_bits(guide_files: Mapping[str, bytes]) -> None:
    from specklab.server.compiler.archive import ArchiveLimits
    from specklab.server.compiler.pipeline import import_model

    result = compile_graph(import_model(guide_files["script"], ArchiveLimits()), options())
    for core in result.config.cnn_layers.values():
        weights = core.weight_array()
        assert weights.min() >= -128 and weights.max() <= 127
        assert weights.min() == -128 or weights.max() == 127  # the scale uses the full range
        assert core.threshold_high == -core.threshold_low
