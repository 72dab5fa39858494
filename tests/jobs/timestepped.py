"""A time-stepped simulation of a compiled, feed-forward chip configuration, in numpy.

The other way to run a quantized network, as sinabs' ``IAFSqueeze`` does: input events
binned into steps, each core adds the convolution of its input counts to its membranes once
per step and fires ``v // threshold`` spikes (subtracting them), then sum pooling carries
the counts on. The chip instead handles each event on its own, one spike per neuron per
event, so the two agree on most samples, not all; tests pin how often.
"""

from __future__ import annotations

import numpy as np
import torch

from specklab.schemas.chipconfig import ChipConfig
from specklab.server.datasets.formats import Samples


def _chain(config: ChipConfig) -> list[tuple[int, int]]:
    """The cores from the input to the output, each with the pooling into the next."""
    core = config.core(config.inputs[0])
    chain = []
    while True:
        destinations = [d for d in config.cnn_layers[core].destinations if d.enable]
        chain.append((core, destinations[0].pooling if destinations else 1))
        if not destinations:
            return chain
        core = destinations[0].layer


def output_counts(config: ChipConfig, events: np.ndarray, step_us: int, steps: int) -> np.ndarray:
    """Spike counts of the output layer's features for one sample."""
    chain = _chain(config)
    first = config.cnn_layers[chain[0][0]].dimensions.input_shape
    frames = np.zeros((steps, first.feature_count, first.size.y, first.size.x))
    np.add.at(frames, (events["t"] // step_us, events["p"], events["y"], events["x"]), 1)
    states = {core: config.cnn_layers[core].initial_state().astype(np.float64) for core, _ in chain}
    last = chain[-1][0]
    counts = np.zeros(config.cnn_layers[last].dimensions.output_shape.feature_count)
    for frame in frames:
        incoming = torch.from_numpy(frame)[None]
        for core, pooling in chain:
            layer = config.cnn_layers[core]
            d = layer.dimensions
            weights = torch.tensor(layer.weight_array(), dtype=torch.float64)
            drive = torch.nn.functional.conv2d(
                incoming,
                weights,
                stride=(d.stride.y, d.stride.x),
                padding=(d.padding.y, d.padding.x),
            )[0].numpy()
            v = np.minimum(states[core] + drive, 32767)
            fired = np.where(v >= layer.threshold_high, v // layer.threshold_high, 0)
            v = v - fired * layer.threshold_high
            states[core] = np.maximum(v, layer.threshold_low)
            if core == last:
                counts += fired.sum(axis=(1, 2))
            incoming = torch.from_numpy(fired)[None]
            if pooling > 1:  # the chip's sum pooling
                incoming = torch.nn.functional.avg_pool2d(incoming, pooling) * pooling**2
    return counts


def predictions(config: ChipConfig, samples: Samples, step_us: int, steps: int) -> np.ndarray:
    out = []
    for index in range(len(samples)):
        counts = output_counts(config, samples.sample(index), step_us, steps)
        out.append(int(np.argmax(counts)) if counts.any() else -1)
    return np.array(out)
