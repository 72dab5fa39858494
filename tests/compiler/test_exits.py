"""The network's exit layers, and what ``monitor_layers=[-1]`` monitors (as sinabs does)."""

from __future__ import annotations

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.deploy import DeploymentRequest
from specklab.server.compiler import LayerGraph, compile_graph
from specklab.server.compiler.graph import GRAPH_INPUT, ReLU
from specklab.server.deployments.registry import deployed_config

from .graphs import conv, options


def _two_exits() -> LayerGraph:
    """a -> (b, c): both b and c are outputs of the network."""
    graph = LayerGraph(format="graph")
    a = graph.add(conv(1, 4, 3), (GRAPH_INPUT,), "Conv2d", "a")
    ra = graph.add(ReLU(), (a,), "ReLU", "ra")
    b = graph.add(conv(4, 2, 3, seed=1), (ra,), "Conv2d", "b")
    c = graph.add(conv(4, 3, 3, seed=2), (ra,), "Conv2d", "c")
    graph.outputs = (graph.add(ReLU(), (b,), "ReLU", "rb"), graph.add(ReLU(), (c,), "ReLU", "rc"))
    return graph


def _monitored(config_layers: dict[int, bool]) -> list[int]:
    return [layer for layer, on in config_layers.items() if on]


def test_monitoring_minus_one_monitors_every_exit_layer() -> None:
    result = compile_graph(_two_exits(), options((1, 10, 10)))
    assert result.config.outputs == [1, 2]
    request = DeploymentRequest(model_id=1)  # monitor_layers defaults to [-1]
    config = deployed_config(result.config, request)
    monitored = {p.layer: config.cnn_layers[p.core].monitor_enable for p in config.layers}
    assert _monitored(monitored) == [1, 2]


def test_other_negative_layers_still_count_from_the_end() -> None:
    result = compile_graph(_two_exits(), options((1, 10, 10)))
    config = deployed_config(result.config, DeploymentRequest(model_id=1, monitor_layers=[-3]))
    monitored = {p.layer: config.cnn_layers[p.core].monitor_enable for p in config.layers}
    assert _monitored(monitored) == [0]


def test_configurations_without_outputs_take_the_layers_that_send_nowhere() -> None:
    document = compile_graph(_two_exits(), options((1, 10, 10))).config.model_dump()
    del document["outputs"]
    assert ChipConfig.model_validate(document).outputs == [1, 2]
