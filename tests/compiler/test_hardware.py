"""One test per chip limit (docs/chip.md §3, values from server/chips.py)."""

from __future__ import annotations

import pytest

from specklab.schemas.compile import DvsOptions, ReadoutOptions
from specklab.server.chips import CHIPS
from specklab.server.compiler import HardwareLimit, compile_graph
from specklab.server.compiler.graph import GRAPH_INPUT, Flatten, LayerGraph, Op, Pool, ReLU

from .graphs import avg, conv, linear, options, sequential, sumpool

LIMITS = CHIPS["speck2f"].limits


def _violations(graph: LayerGraph, **kwargs: object) -> list[tuple[str, int | None]]:
    with pytest.raises(HardwareLimit) as caught:
        compile_graph(graph, options(**kwargs))
    report = caught.value.report
    assert report is not None and not report.ok
    return [(p.code, p.layer) for p in report.errors if p.code != "no_placement"]


def test_within_every_limit_compiles() -> None:
    k = LIMITS.max_kernel_size
    graph = sequential(
        conv(2, 4, k, stride=max(LIMITS.strides), padding=LIMITS.max_padding), ReLU()
    )
    size = LIMITS.max_input_size
    assert compile_graph(graph, options((2, size, size))).report.ok


@pytest.mark.parametrize(
    ("ops", "shape", "code"),
    [
        ((conv(1, 2, (3, 5)),), (1, 16, 16), "kernel_not_square"),
        ((conv(1, 2, LIMITS.max_kernel_size + 1),), (1, 32, 32), "kernel_too_large"),
        ((conv(1, 2, 3, stride=3),), (1, 16, 16), "stride"),
        ((conv(1, 2, 3, padding=LIMITS.max_padding + 1),), (1, 8, 8), "padding"),
        ((conv(1, 2, 1),), (1, LIMITS.max_output_size + 1, 8), "output_too_large"),
        ((conv(1, LIMITS.max_channels + 1, 1),), (1, 2, 2), "too_many_channels"),
        ((conv(1, 2, 4, stride=4),), (1, LIMITS.max_input_size + 4, 8), "input_too_large"),
    ],
)
def test_layer_limits(ops: tuple[Op, ...], shape: tuple[int, int, int], code: str) -> None:
    assert _violations(sequential(*ops, ReLU()), input_shape=shape) == [(code, 0)]


@pytest.mark.parametrize("pool", [sumpool(3), Pool("sum", (2, 1), (2, 1)), avg(8)])
def test_pooling_is_1_2_or_4_and_square(pool: Pool) -> None:
    graph = sequential(conv(1, 2, 1), ReLU(), pool, conv(2, 2, 1), ReLU())
    assert _violations(graph, input_shape=(1, 16, 16)) == [("pooling", 0)]


def test_a_linear_after_a_large_map_becomes_a_kernel_the_chip_cannot_hold() -> None:
    size = LIMITS.max_kernel_size + 2
    graph = sequential(conv(1, 2, 3), ReLU(), Flatten(), linear(2 * size * size, 4), ReLU())
    assert _violations(graph, input_shape=(1, size + 2, size + 2)) == [("kernel_too_large", 1)]


def test_fan_out_is_at_most_two_destinations() -> None:
    graph = LayerGraph(format="graph")
    source = graph.add(ReLU(), (graph.add(conv(1, 2, 1), (GRAPH_INPUT,), "Conv2d", "a"),), "ReLU")
    outputs = []
    for branch in range(LIMITS.max_destinations + 1):
        c = graph.add(conv(2, 2, 1, seed=branch), (source,), "Conv2d", f"b{branch}")
        outputs.append(graph.add(ReLU(), (c,), "ReLU", f"r{branch}"))
    graph.outputs = tuple(outputs)
    assert _violations(graph, input_shape=(1, 4, 4)) == [("fan_out", 0)]


def test_at_most_one_layer_per_core() -> None:
    ops: list[Op] = []
    for index in range(CHIPS["speck2f"].num_cores + 1):
        ops += [conv(2 if index else 1, 2, 1, seed=index), ReLU()]
    with pytest.raises(HardwareLimit) as caught:
        compile_graph(sequential(*ops), options((1, 4, 4)))
    report = caught.value.report
    assert report is not None
    assert [p.code for p in report.errors] == ["too_many_layers", "no_placement"]
    assert any("remove or merge 1 layers" in s for s in report.placement.suggestions)


def test_dvs_pooling_is_1_2_or_4_on_each_axis() -> None:
    graph = sequential(Pool("sum", (2, 8), (2, 8)), conv(2, 2, 3), ReLU())
    assert _violations(graph, input_shape=(2, 128, 128), dvs_input=True) == [("dvs_pooling", None)]
    with pytest.raises(HardwareLimit, match="x pooling 8"):
        compile_graph(graph, options((2, 128, 128), dvs_input=True))


def test_the_dvs_crop_must_stay_on_the_sensor() -> None:
    graph = sequential(conv(2, 2, 3), ReLU())
    shifted = DvsOptions(crop_origin=(100, 0))
    problems = _violations(graph, input_shape=(2, 64, 64), dvs_input=True, dvs=shifted)
    assert problems == [("dvs_crop", None)]


def test_the_readout_counts_fewer_than_16_classes() -> None:
    classes = LIMITS.max_readout_classes + 1
    graph = sequential(conv(1, 2, 3), ReLU(), Flatten(), linear(2 * 6 * 6, classes))
    with pytest.raises(HardwareLimit, match="readout"):
        compile_graph(graph, options((1, 8, 8), readout=ReadoutOptions()))


def test_every_problem_is_reported_at_once() -> None:
    graph = sequential(conv(1, 2, (3, 5), stride=3, padding=9), ReLU())
    codes = {code for code, _ in _violations(graph, input_shape=(1, 16, 16))}
    assert codes == {"kernel_not_square", "stride", "padding"}
