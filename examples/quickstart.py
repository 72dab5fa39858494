"""The vendor guide's first example ("TLDR"), run on a specklab daemon's devkit.

The same network as the guide, with random weights instead of a trained file: compile it on the
daemon, book a Speck 2F devkit (a virtual one will do), deploy it, send input events and print
the output events. Start a daemon (``specklab serve --virtual speck2fdevkit``), then::

    SPECKLAB_URL=http://127.0.0.1:8765 SPECKLAB_TOKEN=spk_... python examples/quickstart.py
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn as nn

from specklab.client import Client, Spike, to_spikes


def guide_network() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 20, 5, 1, bias=False),
        nn.ReLU(),
        nn.AvgPool2d(2, 2),
        nn.Conv2d(20, 32, 5, 1, bias=False),
        nn.ReLU(),
        nn.AvgPool2d(2, 2),
        nn.Conv2d(32, 128, 3, 1, bias=False),
        nn.ReLU(),
        nn.AvgPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(128, 500, bias=False),
        nn.ReLU(),
        nn.Linear(500, 10, bias=False),
    )


def random_weights(ann: nn.Sequential, seed: int) -> None:
    """torch's default initialisation, nudged positive: untrained zero-mean weights let the
    activity die out before the last layer, and the example wants something to print."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for layer in ann:
            if isinstance(layer, nn.Conv2d | nn.Linear):
                layer.reset_parameters()
                fan_in = layer.weight[0].numel()
                layer.weight.add_(0.1 / fan_in**0.5)


def input_spikes(seed: int, count: int = 4000, duration_us: int = 100_000) -> list[Spike]:
    """Random input spikes on the 28x28 input, as the guide's list of ``Spike`` objects."""
    rng = np.random.default_rng(seed)
    times = np.sort(rng.integers(0, duration_us, count))
    xs, ys = rng.integers(0, 28, count), rng.integers(0, 28, count)
    return [
        Spike(layer=0, x=int(x), y=int(y), feature=0, timestamp=int(t))
        for t, x, y in zip(times, xs, ys, strict=True)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="the daemon (default: SPECKLAB_URL)")
    parser.add_argument("--token", help="API token (default: SPECKLAB_TOKEN)")
    parser.add_argument("--device", default="speck2fdevkit", help="a device id or type")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    ann = guide_network()
    random_weights(ann, args.seed)  # the guide loads trained weights here

    with Client(args.url, args.token) as lab:
        # The guide's from_model(..., add_spiking_output=True) and
        # DynapcnnNetwork(..., discretize=True, input_shape=(1, 28, 28)), done by the daemon.
        model = lab.compile(ann, input_shape=(1, 28, 28), add_spiking_output=True, discretize=True)
        print(model.report_table())

        with lab.book(args.device, minutes=10) as booking:
            # The guide's hw_model.to(device="speck2fdevkit:0", ...), on the booked devkit.
            hw_model = lab.deploy(
                model, booking.device_id, chip_layers_ordering="auto", monitor_layers=[-1]
            )
            events_in = input_spikes(args.seed)
            events_out = hw_model(events_in)
            hw_model.close()

    print(f"sent {len(events_in)} spikes to {booking.device_id}, got {len(events_out)} back")
    for spike in to_spikes(events_out)[:20]:
        print(spike)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
