"""Small random chip configurations and inputs, for comparing the engine with the reference."""

from __future__ import annotations

import numpy as np

from specklab.schemas import chipconfig
from specklab.schemas.events import DVS_DTYPE, SPIKE_DTYPE

from ..chip_configs import chip


def _layer(rng: np.random.Generator, c_in: int, size: tuple[int, int]) -> chipconfig.CNNLayer:
    k = int(rng.integers(1, 4))
    stride = int(rng.integers(1, 3))
    padding = int(rng.integers(0, 2)) if k > 1 else 0
    # Mostly narrow layers; some whose slices (columns x features) span the engine's
    # 32-neuron vector blocks and end in partial ones.
    c_out = int(rng.integers(1, 5)) if rng.random() < 0.8 else int(rng.integers(13, 40))
    h = max(size[0], k - 2 * padding)
    w = max(size[1], k - 2 * padding)
    dimensions = chipconfig.Dimensions.convolution(c_in, (h, w), c_out, k, stride, padding)
    out = dimensions.output_shape.size
    high = int(rng.integers(1, 40))
    leak = bool(rng.random() < 0.4)
    return chipconfig.CNNLayer(
        dimensions=dimensions,
        weights=rng.integers(-12, 30, size=(c_out, c_in, k, k)).tolist(),
        biases=rng.integers(-4, 8, size=c_out).tolist(),
        leak_enable=leak,
        threshold_high=high,
        threshold_low=-int(rng.integers(0, 40)),
        return_to_zero=bool(rng.random() < 0.5),
        neurons_initial_value=(
            rng.integers(-10, high, size=(c_out, out.y, out.x)).tolist()
            if rng.random() < 0.5
            else None
        ),
        monitor_enable=bool(rng.random() < 0.7),
        output_decimator_enable=bool(rng.random() < 0.2),
        output_decimator_interval=int(rng.integers(2, 4)),
    )


def random_chip(seed: int) -> chipconfig.ChipConfig:
    """A feed-forward chain of 1-4 cores on random core ids, with random skips, DVS and readout.

    Destination shapes are not always matched to the next core's input, so some events fall
    outside it and are dropped: that path is part of what is compared.
    """
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5))
    cores = [int(c) for c in rng.permutation(9)[:n]]
    dvs = None
    if rng.random() < 0.5:
        pool = int(rng.choice([1, 2, 4]))
        origin = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        cut = (origin[0] + int(rng.integers(0, 6)), origin[1] + int(rng.integers(0, 6)))
        dvs = chipconfig.DVSLayer(
            input_size=chipconfig.XY(x=16, y=16),
            merge=bool(rng.random() < 0.5),
            pooling=chipconfig.XY(x=pool, y=pool),
            origin=chipconfig.XY(x=origin[0], y=origin[1]),
            cut=chipconfig.XY(x=cut[0], y=cut[1]),
            mirror=chipconfig.Mirror(x=bool(rng.random() < 0.5), y=bool(rng.random() < 0.5)),
            mirror_diagonal=bool(rng.random() < 0.5),
            pass_sensor_events=bool(rng.random() < 0.9),
            destinations=[chipconfig.Destination(layer=cores[0])],
            monitor_enable=bool(rng.random() < 0.5),
            raw_monitor_enable=bool(rng.random() < 0.5),
        )
        size = (cut[1] - origin[1] + 1, cut[0] - origin[0] + 1)
        if dvs.mirror_diagonal:
            size = size[::-1]
        c_in = dvs.output_features
    else:
        size = (int(rng.integers(2, 8)), int(rng.integers(2, 8)))
        c_in = int(rng.integers(1, 3))
    layers: list[chipconfig.CNNLayer] = []
    for _ in range(n):
        layer = _layer(rng, c_in, size)
        layers.append(layer)
        out = layer.dimensions.output_shape
        pooling = int(rng.choice([1, 1, 2]))
        size = (max(1, out.size.y // pooling), max(1, out.size.x // pooling))
        c_in = out.feature_count + int(rng.integers(0, 2))
        layer.destinations = [chipconfig.Destination(layer=0, pooling=pooling)]
    layers[-1].destinations = []
    for i in range(n - 1):
        layers[i].destinations[0].layer = cores[i + 1]
        if i + 2 < n and rng.random() < 0.4:
            layers[i].destinations.append(
                chipconfig.Destination(
                    layer=cores[i + 2],
                    pooling=int(rng.choice([1, 2])),
                    feature_shift=int(rng.integers(0, 3)),
                    enable=bool(rng.random() < 0.9),
                )
            )
    readout = None
    if rng.random() < 0.5:
        last = layers[-1].dimensions.output_shape.feature_count
        stride = int(rng.integers(1, 5))
        readout = chipconfig.Readout(
            enable=True,
            input_core=cores[int(rng.integers(0, n))],
            num_classes=int(rng.integers(1, min(16, max(2, last // stride + 2)))),
            average_window=int(rng.choice([16, 32])),
            threshold=int(rng.integers(0, 2)),
            channel_stride=stride,
        )
    return chip(
        dict(zip(cores, layers, strict=True)),
        dvs=dvs,
        readout=readout,
        slow_clock_hz=float(rng.choice([1000.0, 3000.0, 700.0])) if rng.random() < 0.7 else None,
    )


def random_inputs(
    config: chipconfig.ChipConfig, seed: int, n: int = 60
) -> tuple[np.ndarray, np.ndarray]:
    """Input spikes to the first core and DVS events (when there is a DVS layer), over ~10 ms."""
    rng = np.random.default_rng(seed)
    first = config.cnn_layers[config.core(0)].dimensions.input_shape
    spikes = np.zeros(n, SPIKE_DTYPE)
    spikes["t"] = np.sort(rng.integers(0, 10_000, n))
    spikes["core"] = config.core(0)
    spikes["feature"] = rng.integers(0, first.feature_count, n)
    spikes["y"] = rng.integers(0, first.size.y, n)
    spikes["x"] = rng.integers(0, first.size.x, n)
    dvs = np.zeros(0, DVS_DTYPE)
    if config.dvs_layer is not None:
        dvs = np.zeros(n, DVS_DTYPE)
        dvs["t"] = np.sort(rng.integers(0, 10_000, n))
        dvs["x"] = rng.integers(0, 16, n)
        dvs["y"] = rng.integers(0, 16, n)
        dvs["p"] = rng.integers(0, 2, n)
    return spikes, dvs
