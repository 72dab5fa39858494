"""``specklab deployment``: list, show, create (``deploy``), undeploy, reset-states."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .output import deployment_rows, emit
from .parsing import Verb, cores, monitor_layers, positive, read_json_file
from .running import runner

if TYPE_CHECKING:
    from .._client import Client


def _list(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=runner(_deployments))


def _deployments(client: Client, args: argparse.Namespace) -> None:
    from .._errors import ApiError

    found = []
    for device in client.devices():
        if device.booking is None:
            continue  # nothing can be deployed on a device nobody holds
        try:
            found.append(client.deployment(device.id))
        except ApiError as error:
            if error.status not in (403, 404, 409):
                raise
    emit(args, found, lambda: deployment_rows(found))


def _device(handler: Any) -> Verb:
    def declare(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("device", help="a device id (virtual-speck2fdevkit:0)")
        parser.set_defaults(handler=runner(handler))

    return declare


def _show(client: Client, args: argparse.Namespace) -> None:
    deployment = client.deployment(args.device)
    emit(args, deployment, lambda: deployment.summary)


def _undeploy(client: Client, args: argparse.Namespace) -> None:
    client.undeploy(args.device)
    emit(args, {"undeployed": args.device}, lambda: f"cleared {args.device}")


def _reset_states(client: Client, args: argparse.Namespace) -> None:
    client.reset_states(args.device)
    done = f"reset the neuron states of {args.device}"
    emit(args, {"reset": args.device}, lambda: done)


def _create(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_id", type=positive, metavar="MODEL", help="model id")
    parser.add_argument("device", help="device id")
    parser.add_argument(
        "--layers",
        type=cores,
        default="auto",
        help="chip_layers_ordering: 'auto' (default) or cores in layer order: 0,3,5",
    )
    parser.add_argument(
        "--monitor",
        type=monitor_layers,
        default=[-1],
        help="monitored layers: comma-separated indices and 'dvs', or 'all' "
        "(default -1: every exit layer)",
    )
    parser.add_argument("--patch", type=Path, help="a JSON configuration patch to apply last")
    parser.add_argument(
        "--slow-clock-hz", type=float, help="the slow clock's rate (layers with biases need it)"
    )
    parser.set_defaults(handler=runner(_deploy))


def _deploy(client: Client, args: argparse.Namespace) -> None:
    patch = read_json_file("--patch", args.patch) if args.patch else None
    model = client.deploy(
        args.model_id,
        args.device,
        chip_layers_ordering=args.layers,
        monitor_layers=args.monitor,
        config_patch=patch,
        slow_clock_hz=args.slow_clock_hz,
    )
    emit(args, model.deployment, lambda: model.deployment.summary)


VERBS: dict[str, tuple[str, Verb]] = {
    "list": ("the deployments on devices booked now that you may see", _list),
    "show": ("a device's deployment", _device(_show)),
    "create": ("put a compiled model on a booked device", _create),
    "undeploy": ("clear a device's deployment", _device(_undeploy)),
    "reset-states": ("reset the neuron states of a device's network", _device(_reset_states)),
}
