"""Conversion rules (docs/chip.md §5): what becomes what, and every illegal sequence's error."""

from __future__ import annotations

import numpy as np
import pytest

from specklab.schemas.compile import DvsOptions, ReadoutOptions
from specklab.server.compiler import (
    IllegalSequence,
    InvalidOptions,
    ModelError,
    ShapeMismatch,
    UnsupportedLayer,
    compile_graph,
)
from specklab.server.compiler.convert import convert
from specklab.server.compiler.graph import (
    GRAPH_INPUT,
    Add,
    BatchNorm,
    Concat,
    Flatten,
    Identity,
    LayerGraph,
    Op,
    Pool,
    ReLU,
    Unsupported,
)

from .graphs import avg, conv, linear, options, sequential, sumpool


def _conv_numpy(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Valid cross-correlation, stride 1: what a core computes."""
    c_out, _, kh, kw = w.shape
    h, wd = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((c_out, h, wd), dtype=np.float64)
    for i in range(h):
        for j in range(wd):
            out[:, i, j] = np.tensordot(w, x[:, i : i + kh, j : j + kw], axes=3)
    return out


def test_linear_after_flatten_becomes_a_convolution_over_the_whole_map() -> None:
    fc = linear(4 * 6 * 6, 3)
    graph = sequential(conv(1, 4, 3), ReLU(), Flatten(), fc, ReLU())
    network = convert(graph, options((1, 8, 8)))
    layer = network.layers[1]
    assert (layer.kind, layer.kernel_size, layer.input_shape) == ("linear", (6, 6), (4, 6, 6))
    assert layer.output_shape == (3, 1, 1)
    x = np.random.default_rng(1).normal(size=(4, 6, 6))
    # torch's flatten order: the reshaped kernel computes the same as the Linear
    np.testing.assert_allclose(
        _conv_numpy(x, layer.weight)[:, 0, 0], fc.weight @ x.reshape(-1), rtol=1e-5
    )


def test_a_linear_after_a_linear_is_a_1x1_convolution() -> None:
    graph = sequential(conv(1, 4, 8), ReLU(), Flatten(), linear(4, 6), ReLU(), linear(6, 2))
    network = convert(graph, options((1, 8, 8)))
    assert [layer.kernel_size for layer in network.layers] == [(8, 8), (1, 1), (1, 1)]
    assert network.layers[2].input_shape == (6, 1, 1)
    assert network.outputs == [2]


def test_batch_norm_is_folded_without_eps_like_the_vendor() -> None:
    c = conv(2, 3, 3, bias=True)
    rng = np.random.default_rng(2)
    gamma, beta = rng.uniform(0.5, 2, 3), rng.normal(size=3)
    mean, var = rng.normal(size=3), np.array([1e-4, 1.0, 4.0])
    norm = BatchNorm(*(v.astype(np.float32) for v in (gamma, beta, mean, var)), eps=1e-3)
    graph = sequential(c, norm, ReLU())
    network = convert(graph, options((2, 6, 6)))
    layer = network.layers[0]
    factor = (gamma / np.sqrt(var)).astype(np.float32)
    np.testing.assert_allclose(layer.weight, c.weight * factor[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(layer.bias, beta + (c.bias - mean) * factor, rtol=1e-5)
    assert [node.type for node in layer.sources] == ["Conv", "BatchNorm", "ReLU"]
    # var = 1e-4 with eps = 1e-3: folding without eps changes that channel's scale a lot
    assert [p.code for p in network.warnings] == ["batchnorm_eps", "bias_needs_slow_clock"]


def test_average_pooling_rescales_the_destination_weights_not_its_bias() -> None:
    second = conv(4, 2, 3, bias=True, seed=3)
    network = convert(
        sequential(conv(1, 4, 3), ReLU(), avg(2), second, ReLU()), options((1, 10, 10))
    )
    first, layer = network.layers
    assert first.destinations[0].pooling == (2, 2)
    np.testing.assert_array_equal(layer.input_scale, np.full(4, 0.25, np.float32))
    np.testing.assert_array_equal(layer.scaled_weight(), second.weight * np.float32(0.25))
    np.testing.assert_array_equal(layer.bias, second.bias)


def test_chained_pools_multiply_and_sum_pooling_does_not_rescale() -> None:
    graph = sequential(conv(1, 2, 3), ReLU(), avg(2), sumpool(2), conv(2, 2, 1), ReLU())
    network = convert(graph, options((1, 18, 18)))
    assert network.layers[0].destinations[0].pooling == (4, 4)
    np.testing.assert_array_equal(network.layers[1].input_scale, np.full(2, 1 / 4, np.float32))


def test_dropout_and_identity_are_dropped() -> None:
    plain = compile_graph(
        sequential(conv(1, 2, 3), ReLU(), avg(2), conv(2, 3, 3), ReLU()), options()
    )
    padded = compile_graph(
        sequential(conv(1, 2, 3), Identity(), ReLU(), Identity(), avg(2), conv(2, 3, 3), ReLU()),
        options(),
    )
    assert plain.config == padded.config


def test_grouped_convolutions_become_dense_ones() -> None:
    grouped = conv(4, 6, 3, groups=2)
    network = convert(sequential(grouped, ReLU()), options((4, 8, 8)))
    weight = network.layers[0].weight
    assert weight.shape == (6, 4, 3, 3)
    np.testing.assert_array_equal(weight[:3, :2], grouped.weight[:3])
    np.testing.assert_array_equal(weight[3:, 2:], grouped.weight[3:])
    assert not weight[:3, 2:].any() and not weight[3:, :2].any()


def _branchy(merge: Op) -> LayerGraph:
    """a -> (b, c) -> merge -> d: a fans out to two cores that both feed d."""
    graph = LayerGraph(format="graph")
    a = graph.add(conv(1, 4, 3), (GRAPH_INPUT,), "Conv2d", "a")
    ra = graph.add(ReLU(), (a,), "ReLU", "ra")
    b = graph.add(conv(4, 4, 3, padding=1, seed=1), (ra,), "Conv2d", "b")
    rb = graph.add(ReLU(), (b,), "ReLU", "rb")
    c = graph.add(conv(4, 4, 3, padding=1, seed=2), (ra,), "Conv2d", "c")
    rc = graph.add(ReLU(), (c,), "ReLU", "rc")
    m = graph.add(merge, (rb, rc), type(merge).__name__, "merge")
    channels = 8 if isinstance(merge, Concat) else 4
    d = graph.add(conv(channels, 2, 3, seed=3), (m,), "Conv2d", "d")
    graph.outputs = (graph.add(ReLU(), (d,), "ReLU", "rd"),)
    return graph


def test_branches_merge_by_addition_into_one_core() -> None:
    result = compile_graph(_branchy(Add()), options((1, 10, 10)))
    layers = result.report.layers
    assert [layer.destinations for layer in layers] == [[1, 2], [3], [3], []]
    cores = result.config.core_of_layer
    assert [d.layer for d in result.config.cnn_layers[cores[0]].destinations] == [
        cores[1],
        cores[2],
    ]
    shifts = [result.config.cnn_layers[cores[i]].destinations[0].feature_shift for i in (1, 2)]
    assert shifts == [0, 0]


def test_concatenated_branches_arrive_side_by_side() -> None:
    result = compile_graph(_branchy(Concat(1)), options((1, 10, 10)))
    cores = result.config.core_of_layer
    shifts = [result.config.cnn_layers[cores[i]].destinations[0].feature_shift for i in (1, 2)]
    assert shifts == [0, 4]
    assert result.report.layers[3].input_shape == (8, 8, 8)


def test_dvs_input_takes_the_pooling_crop_and_flips() -> None:
    graph = sequential(avg(4), conv(1, 4, 3), ReLU())
    opts = options(
        (1, 64, 96),
        dvs_input=True,
        dvs=DvsOptions(crop_origin=(3, 5), flip_x=True, swap_xy=True),
    )
    result = compile_graph(graph, opts)
    dvs = result.config.dvs_layer
    assert dvs is not None and dvs.merge
    assert (dvs.pooling.x, dvs.pooling.y) == (4, 4)
    # swap_xy: the model's 64x96 is the sensor's 96 rows x 64 columns; pooled 16 x 24
    assert (dvs.origin.x, dvs.origin.y, dvs.cut.x, dvs.cut.y) == (3, 5, 3 + 16 - 1, 5 + 24 - 1)
    assert dvs.mirror.x and not dvs.mirror.y and dvs.mirror_diagonal
    assert [d.layer for d in dvs.destinations] == [result.config.core(0)]
    assert result.config.inputs == []
    layer = convert(graph, opts).layers[0]
    np.testing.assert_array_equal(layer.input_scale, np.full(1, 1 / 16, np.float32))


def test_dvs_polarity_options_must_match_the_input_channels() -> None:
    graph = sequential(conv(2, 4, 3), ReLU())
    with pytest.raises(InvalidOptions, match="merge_polarities"):
        convert(
            graph,
            options((2, 32, 32), dvs_input=True, dvs=DvsOptions(merge_polarities=True)),
        )
    with pytest.raises(InvalidOptions, match="polarity"):
        convert(sequential(conv(3, 4, 3), ReLU()), options((3, 32, 32), dvs_input=True))


def test_readout_widens_the_output_layer_for_the_channel_erratum() -> None:
    graph = sequential(conv(1, 4, 3), ReLU(), Flatten(), linear(4 * 6 * 6, 3))
    result = compile_graph(graph, options((1, 8, 8), readout=ReadoutOptions()))
    readout = result.config.readout
    assert readout is not None and readout.num_classes == 3 and readout.channel_stride == 4
    assert readout.input_core == result.config.core(-1)
    weights = result.config.cnn_layers[readout.input_core].weight_array()
    assert weights.shape[0] == 9  # classes on features 0, 4, 8
    silent = [f for f in range(9) if f % 4]
    assert not weights[silent].any() and weights[::4].any()


def test_the_added_spiking_output_uses_the_options_threshold() -> None:
    graph = sequential(conv(1, 4, 3), ReLU(), Flatten(), linear(4 * 6 * 6, 3))
    low = compile_graph(graph, options((1, 8, 8), spike_threshold=1.0))
    high = compile_graph(graph, options((1, 8, 8), spike_threshold=4.0))
    assert high.report.layers[1].threshold_high != low.report.layers[1].threshold_high
    assert low.report.outputs == [1]
    assert low.config.cnn_layers[low.config.core(-1)].monitor_enable


# -- illegal sequences: each error names the node and the rule ------------------------------


def _fails(
    graph: LayerGraph,
    error: type[ModelError],
    node_index: int | None,
    **kwargs: object,
) -> ModelError:
    with pytest.raises(error) as caught:
        compile_graph(graph, options(**kwargs) if kwargs else options())
    exc = caught.value
    problem = exc.report.problems[0] if exc.report else exc.problems[0]
    assert problem.severity == "error" and problem.code == error.code
    if node_index is not None:
        assert problem.node is not None and problem.node.index == node_index
        assert f"#{node_index}" in exc.message
    return exc


@pytest.mark.parametrize(
    ("ops", "bad"),
    [
        ((conv(1, 2, 3), conv(2, 2, 3), ReLU()), 1),  # conv -> conv
        ((conv(1, 2, 3), avg(2), ReLU()), 1),  # conv -> pool, no spiking layer
        ((conv(1, 2, 3), ReLU(), avg(2), ReLU()), 3),  # spiking after pooling
        ((ReLU(), conv(1, 2, 3), ReLU()), 0),  # spiking on the input
        ((conv(1, 2, 3), ReLU(), ReLU()), 2),  # spiking after spiking
        ((conv(1, 2, 3), ReLU(), BatchNorm(None, None, np.zeros(2), np.ones(2), 1e-5)), 2),
    ],
)
def test_illegal_sequences_name_the_layer(ops: tuple[Op, ...], bad: int) -> None:
    exc = _fails(sequential(*ops), IllegalSequence, bad)
    assert exc.problems[0].rule


def test_unsupported_operations_name_the_layer() -> None:
    graph = sequential(conv(1, 2, 3), ReLU(), Unsupported("max pooling cannot be done on spikes"))
    exc = _fails(graph, UnsupportedLayer, 2)
    assert "max pooling" in exc.message


def test_a_model_that_does_not_end_spiking_needs_add_spiking_output() -> None:
    graph = sequential(conv(1, 2, 3), ReLU(), Flatten(), linear(2 * 26 * 26, 4))
    exc = _fails(graph, IllegalSequence, 3, add_spiking_output=False)
    assert "add_spiking_output" in exc.message


def test_pooling_the_input_needs_the_dvs_layer() -> None:
    exc = _fails(sequential(avg(2), conv(1, 2, 3), ReLU()), IllegalSequence, 0)
    assert "dvs_input" in exc.message


def test_the_output_cannot_be_pooled_after_the_last_spiking_layer() -> None:
    _fails(sequential(conv(1, 2, 3), ReLU(), avg(2)), IllegalSequence, 2)


def test_a_weight_layer_feeding_two_spiking_layers_is_illegal() -> None:
    graph = LayerGraph(format="graph")
    c = graph.add(conv(1, 2, 3), (GRAPH_INPUT,), "Conv2d", "c")
    graph.outputs = (
        graph.add(ReLU(), (c,), "ReLU", "r1"),
        graph.add(ReLU(), (c,), "ReLU", "r2"),
    )
    _fails(graph, IllegalSequence, 2)


def test_merging_sources_with_different_average_pooling_is_illegal() -> None:
    graph = LayerGraph(format="graph")
    a = graph.add(conv(1, 2, 3, padding=1), (GRAPH_INPUT,), "Conv2d", "a")
    ra = graph.add(ReLU(), (a,), "ReLU", "ra")
    b = graph.add(conv(2, 2, 2, stride=2), (ra,), "Conv2d", "b")
    rb = graph.add(ReLU(), (b,), "ReLU", "rb")
    pooled = graph.add(avg(2), (ra,), "AvgPool2d", "pool")
    total = graph.add(Add(), (pooled, rb), "aten::add", "")
    d = graph.add(conv(2, 2, 1), (total,), "Conv2d", "d")
    graph.outputs = (graph.add(ReLU(), (d,), "ReLU", "rd"),)
    exc = _fails(graph, IllegalSequence, d, input_shape=(1, 8, 8))
    assert "1/k^2" in exc.message


@pytest.mark.parametrize(
    ("ops", "error", "bad"),
    [
        ((conv(1, 2, 3), ReLU(), Flatten(2, -1)), UnsupportedLayer, 2),
        ((conv(1, 2, 3), ReLU(), Pool("avg", (2, 2), (1, 1))), IllegalSequence, 2),
        ((conv(1, 2, 3), ReLU(), linear(2, 2)), ShapeMismatch, 2),
        ((conv(3, 2, 3), ReLU()), ShapeMismatch, 0),
        ((conv(1, 2, 3), ReLU(), Concat(2)), UnsupportedLayer, 2),
    ],
)
def test_shapes_and_layer_parameters_are_checked(
    ops: tuple[Op, ...], error: type[ModelError], bad: int
) -> None:
    _fails(sequential(*ops), error, bad)


@pytest.mark.parametrize("kind", ["avg", "sum"])
def test_non_square_pooling_after_the_dvs_input_pools_x_and_y_separately(kind: str) -> None:
    graph = sequential(Pool(kind, (2, 4), (2, 4)), conv(1, 4, 3), ReLU())
    result = compile_graph(graph, options((1, 128, 128), dvs_input=True))
    dvs = result.config.dvs_layer
    assert dvs is not None and (dvs.pooling.y, dvs.pooling.x) == (2, 4)
    assert (dvs.cut.x, dvs.cut.y) == (128 // 4 - 1, 128 // 2 - 1)
    assert result.report.layers[0].input_shape == (1, 64, 32)
    assert result.report.dvs is not None and result.report.dvs.pooling == (2, 4)


def test_with_swap_xy_the_sensor_pools_its_own_axes() -> None:
    # The chip pools before it swaps: the model's 2-row pooling is the sensor's x pooling.
    graph = sequential(sumpool(1), Pool("sum", (2, 4), (2, 4)), conv(1, 4, 3), ReLU())
    opts = options((1, 128, 64), dvs_input=True, dvs=DvsOptions(swap_xy=True))
    dvs = compile_graph(graph, opts).config.dvs_layer
    assert dvs is not None and (dvs.pooling.y, dvs.pooling.x) == (4, 2)
    # the sensor window is 64 rows x 128 columns: pooled 16 x 64
    assert (dvs.cut.x, dvs.cut.y) == (63, 15)
