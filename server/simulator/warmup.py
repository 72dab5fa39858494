"""Compile every kernel ahead of the first device call.

numba compiles on first use (15-30 s here) and caches the result on disk, after which loading
takes about a second. A device call waiting for a cold compile would run into its timeout, so
the daemon calls :func:`warm_up` at start-up: slow once per installation, fast ever after.
"""

from __future__ import annotations

import numpy as np

from specklab.schemas import chipconfig
from specklab.schemas.events import dvs_events, spikes

from .engine import ChipSimulator


def _every_feature_config() -> chipconfig.ChipConfig:
    """Two cores fed by the DVS layer, with leak, monitors and a readout on a slow clock; two,
    so that the pipeline's stages (``kernel.run`` with a split, ``run_downstream``) compile."""
    core = chipconfig.CNNLayer(
        dimensions=chipconfig.Dimensions.convolution(c_in=2, size=(2, 2), c_out=1, kernel=1),
        weights=np.ones((1, 2, 1, 1), np.int16),
        biases=[1],
        leak_enable=True,
        threshold_high=1,
        threshold_low=-1,
        monitor_enable=True,
        output_decimator_enable=True,
        destinations=[chipconfig.Destination(layer=1)],
    )
    downstream = core.model_copy(
        update={
            "dimensions": chipconfig.Dimensions.convolution(c_in=1, size=(2, 2), c_out=1, kernel=1),
            "weights": np.ones((1, 1, 1, 1), np.int16),
            "destinations": [],
        }
    )
    return chipconfig.ChipConfig(
        cnn_layers={0: core, 1: downstream},
        dvs_layer=chipconfig.DVSLayer(
            input_size=chipconfig.XY(x=2, y=2),
            cut=chipconfig.XY(x=1, y=1),
            destinations=[chipconfig.Destination(layer=0)],
            monitor_enable=True,
            raw_monitor_enable=True,
        ),
        readout=chipconfig.Readout(enable=True, input_core=0, num_classes=1),
        layers=[
            chipconfig.LayerPlacement(layer=0, core=0),
            chipconfig.LayerPlacement(layer=1, core=1),
        ],
        inputs=[0],
        slow_clock_hz=1000.0,
    )


def warm_up() -> None:
    for pipelined in (False, True):
        simulator = ChipSimulator(_every_feature_config(), pipelined=pipelined)
        simulator.run(
            spikes=spikes(t=[0, 1], layer=0, core=0, feature=[0, 1], x=[0, 1], y=[1, 0]),
            dvs=dvs_events(t=[2, 3], x=[0, 1], y=[1, 1], p=[0, 1]),
        )
        simulator.advance_to(5_000)
        simulator.reset_states()
