"""``specklab device``: list, show, stream events through a device's network."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .output import emit
from .parsing import UsageError, Verb, positive, seconds
from .running import runner

if TYPE_CHECKING:
    from .._client import Client


def _list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--types", action="store_true", help="list device types instead")
    parser.set_defaults(handler=runner(_devices))


def _devices(client: Client, args: argparse.Namespace) -> None:
    from specklab.schemas.render import format_table

    if args.types:
        types = client.device_types()
        headers = ("type", "samna name", "supported", "chip")
        rows = [(t.type, t.samna_name, t.supported, t.chip) for t in types]
        emit(args, types, lambda: format_table(headers, rows))
        return
    listing = client.lab_status()

    def table() -> str:
        rows = [
            (
                d.id,
                d.type,
                d.chip,
                d.status if d.detail is None else f"{d.status} ({d.detail})",
                d.booking.user_name if d.booking else None,
                d.booking.ends_at if d.booking else None,
                d.host,
            )
            for d in listing.devices
        ]
        headers = ("id", "type", "chip", "status", "booked by", "until", "host")
        return format_table(headers, rows) + f"\nsamna: {listing.samna.state}"

    emit(args, listing, table)


def _show(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("device", help="a device id (virtual-speck2fdevkit:0)")
    parser.set_defaults(handler=runner(_device))


def _device(client: Client, args: argparse.Namespace) -> None:
    from specklab.schemas.render import format_table

    device = client.device(args.device)
    fields = device.model_dump(exclude={"booking", "usb"})
    if device.booking is not None:
        fields["booked by"] = f"{device.booking.user_name} until {device.booking.ends_at}"
    emit(args, device, lambda: format_table(("field", "value"), list(fields.items())))


def _stream_verb(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("device")
    parser.add_argument("--in", dest="input", type=Path, required=True, help="events (.npy)")
    parser.add_argument("--out", type=Path, required=True, help="where outputs go (.npy)")
    parser.add_argument("--mode", choices=["forward", "continuous"], default="forward")
    parser.add_argument(
        "--dt",
        type=positive,
        help="--in holds a raster [T, C, H, W] of counts: microseconds per time step",
    )
    parser.add_argument(
        "--idle", type=seconds, default=1.0, help="continuous: stop after this many quiet seconds"
    )
    parser.set_defaults(handler=runner(_stream))


def _stream(client: Client, args: argparse.Namespace) -> None:
    import numpy as np

    from .._conversions import as_events

    try:
        loaded = np.load(args.input, allow_pickle=False)
    except ValueError as error:
        raise UsageError(f"--in file {args.input} is not a numpy .npy file ({error})") from None
    events = as_events(loaded, dt=args.dt)
    counts: dict[str, int | float]
    with client.stream(args.device, mode=args.mode) as stream:
        if args.mode == "forward":
            result = stream.forward(events)
            outputs, counts = result.spikes, dict(result.counts)
        else:
            stream.send(events)
            parts = list(stream.outputs(idle=args.idle))
            outputs = np.concatenate(parts) if parts else np.zeros(0, events.dtype)
            counts = stream.stats()
    np.save(args.out, outputs, allow_pickle=False)
    summary = {"sent": len(events), "received": len(outputs), "out": str(args.out), **counts}
    emit(args, summary, lambda: f"sent {len(events)} events, saved {len(outputs)} to {args.out}")


VERBS: dict[str, tuple[str, Verb]] = {
    "list": ("the lab's devices with status and holder (--types: the device types)", _list),
    "show": ("one device in full", _show),
    "stream": ("send events from a file to a device, save its outputs", _stream_verb),
}
