"""The guide's network, compiled by the compiler, on the engine and on the slow reference."""

from __future__ import annotations

import numpy as np
import torch

from specklab.schemas.compile import CompileOptions
from specklab.schemas.patch import ConfigPatch, apply_patch
from specklab.server.compiler import ArchiveLimits
from specklab.server.compiler.pipeline import compile_graph, import_model
from specklab.server.simulator import ChipSimulator

from ..fixtures_models import guide_network, torchscript_bytes
from ..guide_inputs import guide_spikes
from .simref import SlowChip


def _active_guide_network() -> torch.nn.Sequential:
    """Random weights nudged positive, so activity reaches the last layer."""
    network = guide_network(seed=3)
    with torch.no_grad():
        for layer in network:
            if isinstance(layer, torch.nn.Conv2d | torch.nn.Linear):
                layer.weight.add_(0.3 / layer.weight[0].numel() ** 0.5)
    return network


def test_the_compiled_guide_network_runs_spike_for_spike_like_the_reference() -> None:
    # Our own test file: reading it in-process is fine here (the daemon uses worker processes).
    graph = import_model(torchscript_bytes(_active_guide_network()), ArchiveLimits())
    compiled = compile_graph(graph, CompileOptions(input_shape=(1, 28, 28))).config
    assert compiled.core_of_layer == {0: 0, 1: 3, 2: 5, 3: 6, 4: 1}
    config = apply_patch(compiled, ConfigPatch(monitor_layers=[0, 1, 2, 3, 4]))
    rng = np.random.default_rng(0)
    n = 300
    inputs = compiled.spikes_to_cores(guide_spikes(rng, n, 20_000))

    engine = ChipSimulator(config).run(spikes=inputs)
    reference = SlowChip(config)
    reference.run(inputs)

    expected = reference.output_spikes()
    assert np.array_equal(engine.spikes, expected)
    per_layer = np.bincount(expected["layer"], minlength=5)
    assert (per_layer > 0).all(), per_layer  # every layer, the last included, spiked
