"""The bias trap: a bias is a leak the chip adds per slow-clock tick, and the slow clock is off
unless the deployment sets it. The compile report and the deployment both say so."""

from __future__ import annotations

from specklab.schemas.deploy import DeploymentRequest
from specklab.server.compiler import compile_graph
from specklab.server.compiler.graph import ReLU
from specklab.server.deployments.registry import deployed_config, describe

from .graphs import conv, options, sequential


def _codes(graph_bias: bool) -> list[str]:
    graph = sequential(conv(1, 4, 3, bias=graph_bias), ReLU(), conv(4, 2, 3, seed=1), ReLU())
    return [p.code for p in compile_graph(graph, options((1, 10, 10))).report.warnings]


def test_the_compile_report_warns_about_biases() -> None:
    assert "bias_needs_slow_clock" in _codes(graph_bias=True)
    assert "bias_needs_slow_clock" not in _codes(graph_bias=False)


def test_a_deployment_without_a_slow_clock_warns_about_its_leaks() -> None:
    graph = sequential(conv(1, 4, 3, bias=True), ReLU(), conv(4, 2, 3, seed=1), ReLU())
    compiled = compile_graph(graph, options((1, 10, 10))).config
    unclocked = deployed_config(compiled, DeploymentRequest(model_id=1))
    (warning,) = describe("dev", 1, "net", "ada", unclocked).warnings
    assert "model layers [0]" in warning and "slow_clock_hz" in warning
    clocked = deployed_config(compiled, DeploymentRequest(model_id=1, slow_clock_hz=1000))
    assert describe("dev", 1, "net", "ada", clocked).warnings == []
    no_leak = deployed_config(
        compiled,
        DeploymentRequest(model_id=1, config_patch={"layers": {0: {"leak_enable": False}}}),
    )
    assert describe("dev", 1, "net", "ada", no_leak).warnings == []
