"""``specklab recording``: list, show, create (``record``), download, replay, delete."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .output import emit, recording_rows
from .parsing import UsageError, Verb, positive, seconds
from .running import runner

if TYPE_CHECKING:
    from .._client import Client


def _list(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=runner(_recordings))


def _recordings(client: Client, args: argparse.Namespace) -> None:
    recordings = client.recordings()
    emit(args, recordings, lambda: recording_rows(recordings))


def _one(handler: Any, *more: tuple[str, dict[str, Any]]) -> Verb:
    def declare(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("recording_id", type=positive, metavar="RECORDING")
        for name, options in more:
            parser.add_argument(name, **options)
        parser.set_defaults(handler=runner(handler))

    return declare


def _show(client: Client, args: argparse.Namespace) -> None:
    recording = client.recording(args.recording_id)
    emit(args, recording, lambda: recording_rows([recording]))


def _create(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("device")
    parser.add_argument("--duration", type=seconds, required=True, help="seconds")
    parser.add_argument("--source", choices=["dvs", "monitor"], default="dvs")
    parser.add_argument("--name", default="")
    parser.add_argument("--out", type=Path, help="also download it (.npy or .aedat4)")
    parser.set_defaults(handler=runner(_record))


def _record(client: Client, args: argparse.Namespace) -> None:
    # What can be known wrong before the recording starts is said before its bar is drawn.
    if args.out is not None:
        if not args.out.parent.is_dir():
            raise UsageError(f"--out {args.out}: there is no folder {args.out.parent}")
        if args.source == "monitor" and args.out.suffix == ".aedat4":
            raise UsageError("--out: only DVS recordings export to .aedat4; use .npy")
    client.me()  # the token
    recording = client.record(
        args.device, args.duration, source=args.source, name=args.name, progress=True
    )
    if args.out is not None:
        client.download_recording(recording, args.out, progress=True)
    emit(args, recording, lambda: recording_rows([recording]))


def _download(client: Client, args: argparse.Namespace) -> None:
    client.download_recording(args.recording_id, args.out, progress=True)
    emit(args, {"out": str(args.out)}, lambda: f"saved {args.out}")


def _replay(client: Client, args: argparse.Namespace) -> None:
    count = client.replay(args.recording_id, args.device, speed=args.speed)
    said = f"replaying {count} events of recording {args.recording_id} into {args.device}"
    started = {"recording": args.recording_id, "device": args.device, "events": count}
    emit(args, started, lambda: said)


def _delete(client: Client, args: argparse.Namespace) -> None:
    client.delete_recording(args.recording_id)
    emit(args, {"deleted": args.recording_id}, lambda: f"deleted recording {args.recording_id}")


_OUT = ("out", {"type": Path, "help": "where it goes (.npy, or .aedat4 for DVS)"})
_DEVICE = ("device", {"help": "a device whose network takes DVS input"})
_SPEED = ("--speed", {"type": float, "default": 1.0, "help": "playback speed (1: real time)"})

VERBS: dict[str, tuple[str, Verb]] = {
    "list": ("your recordings", _list),
    "show": ("one recording", _one(_show)),
    "create": ("record a device's events on the daemon", _create),
    "download": ("save a recording (.npy or .aedat4)", _one(_download, _OUT)),
    "replay": ("play a DVS recording into a device", _one(_replay, _DEVICE, _SPEED)),
    "delete": ("delete a recording", _one(_delete)),
}
