"""Chip configurations built by hand for the device tests (no compiler involved)."""

from __future__ import annotations

import numpy as np

from specklab.schemas.chipconfig import ChipConfig, LayerPlacement

from .. import chip_configs
from ..chip_configs import GUIDE_LAYERS, GUIDE_PLACEMENT

__all__ = ["GUIDE_LAYERS", "GUIDE_PLACEMENT", "guide_network", "tiny_network"]


def guide_network(seed: int = 1) -> ChipConfig:
    """The guide's network, with every per-core value random so that a mix-up shows."""
    config = chip_configs.guide_network(seed)
    rng = np.random.default_rng(seed)
    for layer in config.cnn_layers.values():
        layer.biases = rng.integers(-100, 100, size=len(layer.biases)).tolist()
        layer.threshold_high = int(rng.integers(50, 500))
        layer.threshold_low = -int(rng.integers(50, 500))
        layer.neurons_initial_value = rng.integers(-9, 9, size=layer.neuron_shape).tolist()
    return config


def tiny_network(chip: str = "speck2f") -> ChipConfig:
    """Core 2 alone: 2 features of 4x4 in, 3 features of 4x4 out (1x1 kernel), monitored."""
    weights = np.random.default_rng(7).integers(-128, 128, size=(3, 2, 1, 1))
    return ChipConfig(
        chip=chip,  # type: ignore[arg-type]
        cnn_layers={2: chip_configs.layer(weights, size=(4, 4), high=64, low=-64)},
        layers=[LayerPlacement(layer=0, core=2)],
        inputs=[0],
    )
