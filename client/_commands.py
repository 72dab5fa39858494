"""The client's subcommands of ``specklab``: devices, bookings, models, streams, recordings, tokens.

Tables for people by default, ``--json`` for scripts. Every command takes ``--url`` and
``--token`` (else ``SPECKLAB_URL`` / ``SPECKLAB_TOKEN``). Module-level imports stay in the
standard library so that ``specklab --help`` starts fast; handlers import the client.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._client import Client

Handler = Callable[["Client", argparse.Namespace], Any]


def _common_options(nested: bool) -> argparse.ArgumentParser:
    """``--url``, ``--token`` and ``--json``; accepted after an action too (``token list
    --json``), where they must not reset what was given before it."""
    common = argparse.ArgumentParser(add_help=False)
    keep: dict[str, Any] = {"default": argparse.SUPPRESS} if nested else {}
    url_help = "the daemon (default: SPECKLAB_URL or http://127.0.0.1:8765)"
    common.add_argument("--url", help=url_help, **keep)
    common.add_argument("--token", help="API token (default: SPECKLAB_TOKEN)", **keep)
    common.add_argument("--json", action="store_true", help="print JSON instead of a table", **keep)
    return common


def register(commands: argparse._SubParsersAction) -> None:
    common = _common_options(nested=False)
    nested = [_common_options(nested=True)]

    def command(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, parents=[common], help=help, description=help)
        parser.set_defaults(handler=_runner(handler))
        return parser

    devices = command("devices", _devices, "list the lab's devices and their status")
    devices.add_argument("--types", action="store_true", help="list device types instead")

    book = command("book", _book, "book a device, or the first free device of a type")
    book.add_argument("target", help="a device id (speck2fdevkit:0) or a type (speck2fdevkit)")
    length = book.add_mutually_exclusive_group(required=True)
    length.add_argument("--minutes", type=int)
    length.add_argument("--until", type=_when, help="end time (ISO 8601, e.g. 2030-01-01T10:00)")
    book.add_argument("--start", type=_when, help="start time (ISO 8601; default now)")
    book.add_argument(
        "--next-free",
        action="store_true",
        help="for a type whose devices are all busy: book the next free slot instead of failing",
    )
    book.add_argument(
        "--hold",
        action="store_true",
        help="keep the booking in use until Ctrl-C or SIGTERM, then release it",
    )

    bookings = command("bookings", _bookings, "list your bookings (admins: everyone's)")
    bookings.add_argument("--current", action="store_true", help="only upcoming and running")
    bookings.add_argument("--device", help="only this device's")

    cancel = command("cancel", _cancel, "cancel bookings (or release running ones)")
    cancel.add_argument("booking_ids", type=int, nargs="+", metavar="BOOKING")

    extend = command("extend", _extend, "make a booking longer")
    extend.add_argument("booking_id", type=int, metavar="BOOKING")
    extend.add_argument("--minutes", type=int, required=True)

    upload = command("upload", _upload, "upload and compile a model (TorchScript, .pt2, NIR)")
    upload.add_argument("file", type=Path)
    upload.add_argument("--input-shape", type=_shape, required=True, help="C,H,W e.g. 1,28,28")
    upload.add_argument("--name", help="the model's name (default: the file name)")
    upload.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a compile option, VALUE in JSON (e.g. dvs_input=true, chip='\"speck2e\"')",
    )
    upload.add_argument("--report", action="store_true", help="print the full placement table")

    command("models", _models, "list your models")

    deploy = command("deploy", _deploy, "put a compiled model on a booked device")
    deploy.add_argument("model", help="model id")
    deploy.add_argument("device", help="device id")
    deploy.add_argument(
        "--layers", help="chip_layers_ordering: 'auto' (default) or cores in layer order: 0,3,5"
    )
    deploy.add_argument(
        "--monitor",
        type=_monitor_layers,
        default=[-1],
        help="monitored layers: comma-separated indices and 'dvs', or 'all' "
        "(default -1: every exit layer)",
    )
    deploy.add_argument("--patch", type=Path, help="a JSON configuration patch to apply last")

    stream = command("stream", _stream, "send events from a file to a device, save its outputs")
    stream.add_argument("device")
    stream.add_argument("--in", dest="input", type=Path, required=True, help="events (.npy)")
    stream.add_argument("--out", type=Path, required=True, help="where outputs go (.npy)")
    stream.add_argument("--mode", choices=["forward", "continuous"], default="forward")
    stream.add_argument(
        "--idle", type=float, default=1.0, help="continuous: stop after this many quiet seconds"
    )

    record = command("record", _record, "record a device's events on the daemon")
    record.add_argument("device")
    record.add_argument("--duration", type=float, required=True, help="seconds")
    record.add_argument("--source", choices=["dvs", "monitor"], default="dvs")
    record.add_argument("--name", default="")
    record.add_argument("--out", type=Path, help="also download it (.npy or .aedat4)")

    recordings = command("recordings", _recordings, "list, download, replay or delete recordings")
    actions = recordings.add_subparsers(dest="action", metavar="ACTION")
    download = actions.add_parser(
        "download", parents=nested, help="save a recording (.npy or .aedat4)"
    )
    download.add_argument("recording_id")
    download.add_argument("out", type=Path)
    replay = actions.add_parser("replay", parents=nested, help="play a recording into a device")
    replay.add_argument("recording_id")
    replay.add_argument("device")
    replay.add_argument("--speed", type=float, default=1.0)
    delete = actions.add_parser("delete", parents=nested, help="delete a recording")
    delete.add_argument("recording_id")

    token = command("token", _token, "show who you are, or list, create and revoke API tokens")
    actions = token.add_subparsers(dest="action", metavar="ACTION")
    actions.add_parser("list", parents=nested, help="your tokens (never their secrets)")
    create = actions.add_parser(
        "create", parents=nested, help="a new token; its secret is shown once"
    )
    create.add_argument("name")
    lifetime = create.add_mutually_exclusive_group()
    lifetime.add_argument("--days", type=int, default=90)
    lifetime.add_argument("--never-expires", action="store_true")
    revoke = actions.add_parser("revoke", parents=nested, help="revoke a token")
    revoke.add_argument("token_id", type=int)


def _when(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.astimezone()


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not C,H,W") from None


def _monitor_layers(text: str) -> list[int | str] | str:
    if text == "all":
        return text
    try:
        return [part if part == "dvs" else int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not 'all' or comma-separated layer indices and 'dvs'"
        ) from None


def _runner(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from specklab.schemas.render import report_table

        from ._client import Client
        from ._errors import ModelDoesNotFit, SpecklabError, SpecklabWarning

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", SpecklabWarning)
                try:
                    with Client(args.url, args.token) as client:
                        handler(client, args)
                finally:
                    _print_warnings(caught)
        except ModelDoesNotFit as error:
            if error.report is not None:
                print(report_table(error.report), file=sys.stderr)
            else:
                for problem in error.problems:
                    print(f"{problem.severity} {problem.code}: {problem.message}", file=sys.stderr)
            print(f"specklab: {error.message}", file=sys.stderr)
            return 1
        except SpecklabError as error:
            print(f"specklab: {error}", file=sys.stderr)
            return 1
        except (OSError, ValueError) as error:
            print(f"specklab: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
        return 0

    return run


def _print_warnings(caught: list[warnings.WarningMessage]) -> None:
    """The SDK's warnings as one plain line each on stderr; other warnings as Python shows them."""
    from ._errors import SpecklabWarning

    for item in caught:
        if issubclass(item.category, SpecklabWarning):
            print(f"specklab: warning: {item.message}", file=sys.stderr)
        else:
            warnings.showwarning(item.message, item.category, item.filename, item.lineno)


def _emit(args: argparse.Namespace, value: Any, table: Callable[[], str]) -> None:
    """Print ``value`` as JSON with ``--json``, else the human table."""
    if args.json:
        print(json.dumps(_jsonable(value), indent=2))
    else:
        print(table())


def _jsonable(value: Any) -> Any:
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


def _devices(client: Client, args: argparse.Namespace) -> None:
    from specklab.schemas.render import format_table

    if args.types:
        types = client.device_types()
        headers = ("type", "samna name", "supported", "chip")
        rows = [(t.type, t.samna_name, t.supported, t.chip) for t in types]
        _emit(args, types, lambda: format_table(headers, rows))
        return
    listing = client.lab_status()

    def table() -> str:
        headers = ("id", "type", "chip", "status", "booked by", "until", "host")
        rows = []
        for d in listing.devices:
            holder = d.booking
            rows.append(
                (
                    d.id,
                    d.type,
                    d.chip,
                    d.status if d.detail is None else f"{d.status} ({d.detail})",
                    holder.user_name if holder else None,
                    holder.ends_at if holder else None,
                    d.host,
                )
            )
        return format_table(headers, rows) + f"\nsamna: {listing.samna.state}"

    _emit(args, listing, table)


def _booking_rows(bookings: Sequence[Any]) -> str:
    from specklab.schemas.render import format_table

    now = datetime.now(UTC)
    headers = ("id", "device", "user", "starts", "ends", "status", "lease")
    rows = [
        (b.id, b.device_id, b.user_name, b.starts_at, b.ends_at, b.status, _lease(b, now))
        for b in bookings
    ]
    return format_table(headers, rows)


def _lease(booking: Any, now: datetime) -> str:
    """A running booking's use and time to its idle release; why an ended one ended."""
    if booking.status == "running" and booking.lease_expires_at is not None:
        used = f"used {_span(now - booking.last_used_at)} ago" if booking.last_used_at else "unused"
        return f"{used}, idle release in {_span(booking.lease_expires_at - now)}"
    return booking.end_reason or "-"


def _span(length: timedelta) -> str:
    seconds = max(0, round(length.total_seconds()))
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min"


def _book(client: Client, args: argparse.Namespace) -> None:
    from ._errors import SpecklabError

    booking = client.book(
        args.target, minutes=args.minutes, start=args.start, end=args.until, wait=args.next_free
    )
    _emit(args, booking.booking, lambda: _booking_rows([booking.booking]))
    if not args.hold:
        return
    with _terminate_as_interrupt():
        try:
            with booking:
                print("holding the booking; Ctrl-C or SIGTERM releases it", file=sys.stderr)
                # Look now and then for a booking that ended under us (preempted, idle).
                while booking.lost is None and booking.refresh().status in ("upcoming", "running"):
                    time.sleep(1.0)
        except KeyboardInterrupt:
            pass  # leaving the block released the booking
    if booking.booking.status in ("preempted", "expired"):
        ended = booking.booking
        raise booking.lost or SpecklabError(f"booking {ended.id} is over: {ended.end_reason}")


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a service manager, ``kill``) ends the block as Ctrl-C does."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _bookings(client: Client, args: argparse.Namespace) -> None:
    bookings = client.bookings(device=args.device, current=args.current)
    _emit(args, bookings, lambda: _booking_rows(bookings))


def _cancel(client: Client, args: argparse.Namespace) -> None:
    ended = [client.cancel(booking_id) for booking_id in args.booking_ids]
    _emit(args, ended, lambda: _booking_rows(ended))


def _extend(client: Client, args: argparse.Namespace) -> None:
    booking = client.extend(args.booking_id, minutes=args.minutes)
    _emit(args, booking, lambda: _booking_rows([booking]))


def _upload(client: Client, args: argparse.Namespace) -> None:
    options: dict[str, Any] = {}
    for item in args.option:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--option {item!r} is not KEY=VALUE")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text  # a bare word: take it as a string
    model = client.compile(
        args.file, input_shape=args.input_shape, name=args.name, progress=True, **options
    )

    def table() -> str:
        summary = f"model {model.id} ({model.name}, {model.format})"
        return f"{summary}\n{model.report_table()}" if args.report else f"{summary}: compiled"

    _emit(args, model.info, table)


def _models(client: Client, args: argparse.Namespace) -> None:
    from specklab.schemas.render import format_table

    models = client.models()
    headers = ("id", "name", "format", "owner", "created", "layers")
    rows = [(m.id, m.name, m.format, m.owner, m.created_at, len(m.report.layers)) for m in models]
    _emit(args, [m.info for m in models], lambda: format_table(headers, rows))


def _deploy(client: Client, args: argparse.Namespace) -> None:
    ordering: Any = "auto"
    if args.layers and args.layers != "auto":
        ordering = [int(core) for core in args.layers.split(",")]
    patch = json.loads(args.patch.read_text()) if args.patch else None
    model = client.deploy(
        args.model,
        args.device,
        chip_layers_ordering=ordering,
        monitor_layers=args.monitor,
        config_patch=patch,
    )
    _emit(args, model.deployment, lambda: model.deployment.summary)


def _stream(client: Client, args: argparse.Namespace) -> None:
    import numpy as np

    from ._conversions import as_events

    events = as_events(np.load(args.input, allow_pickle=False))
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
    _emit(args, summary, lambda: f"sent {len(events)} events, saved {len(outputs)} to {args.out}")


def _recording_rows(recordings: Sequence[Any]) -> str:
    from specklab.schemas.render import format_table

    headers = ("id", "name", "device", "source", "created", "seconds", "events", "bytes")
    rows = [
        (
            r.id,
            r.name,
            r.device_id,
            r.source,
            r.created_at,
            r.duration_s,
            r.event_count,
            r.size_bytes,
        )
        for r in recordings
    ]
    return format_table(headers, rows)


def _record(client: Client, args: argparse.Namespace) -> None:
    recording = client.record(
        args.device, args.duration, source=args.source, name=args.name, progress=True
    )
    if args.out is not None:
        client.download_recording(recording, args.out, progress=True)
    _emit(args, recording, lambda: _recording_rows([recording]))


def _recordings(client: Client, args: argparse.Namespace) -> None:
    if args.action == "download":
        client.download_recording(args.recording_id, args.out, progress=True)
        _emit(args, {"out": str(args.out)}, lambda: f"saved {args.out}")
    elif args.action == "replay":
        result = client.replay(args.recording_id, args.device, speed=args.speed)
        _emit(args, result, lambda: f"replayed {args.recording_id} into {args.device}")
    elif args.action == "delete":
        client.delete_recording(args.recording_id)
        _emit(args, {"deleted": args.recording_id}, lambda: f"deleted {args.recording_id}")
    else:
        recordings = client.recordings()
        _emit(args, recordings, lambda: _recording_rows(recordings))


def _token(client: Client, args: argparse.Namespace) -> None:
    from specklab.schemas.render import format_table

    if args.action == "create":
        days = None if args.never_expires else args.days
        created = client.create_token(args.name, expires_in_days=days)
        _emit(args, created, lambda: created.token)
    elif args.action == "revoke":
        revoked = client.revoke_token(args.token_id)
        _emit(args, revoked, lambda: f"revoked token {revoked.id} ({revoked.name})")
    elif args.action == "list":
        tokens = client.tokens()
        headers = ("id", "name", "prefix", "created", "expires", "revoked", "last used")
        rows = [
            (t.id, t.name, t.prefix, t.created_at, t.expires_at, t.revoked_at, t.last_used_at)
            for t in tokens
        ]
        _emit(args, tokens, lambda: format_table(headers, rows))
    else:
        me = client.me()
        _emit(args, me, lambda: f"{me.name} ({me.role}) at {client.url}")
