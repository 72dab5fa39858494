"""``specklab booking``: list, show, create (``book``), extend, cancel, hold."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

from .output import booking_rows, emit
from .parsing import Verb, positive, seconds, when
from .running import runner

if TYPE_CHECKING:
    from .._client import Booking, Client


def _list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--current", action="store_true", help="only upcoming and running")
    parser.add_argument("--device", help="only this device's")
    parser.set_defaults(handler=runner(_bookings))


def _bookings(client: Client, args: argparse.Namespace) -> None:
    bookings = client.bookings(device=args.device, current=args.current)
    emit(args, bookings, lambda: booking_rows(bookings))


def _show(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("booking_id", type=positive, metavar="BOOKING")
    parser.set_defaults(handler=runner(_booking))


def _booking(client: Client, args: argparse.Namespace) -> None:
    booking = client.booking(args.booking_id)
    emit(args, booking, lambda: booking_rows([booking]))


def _waiting_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hold",
        action="store_true",
        help="keep the booking in use until Ctrl-C or SIGTERM, then release it",
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        metavar="SECONDS",
        help="wait for the start at most this long (a countdown shows), else cancel the "
        "booking and exit 5",
    )


def _create(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="a device id (speck2fdevkit:0) or a type (speck2fdevkit)")
    length = parser.add_mutually_exclusive_group(required=True)
    length.add_argument("--minutes", type=positive)
    length.add_argument("--until", type=when, help="end time (ISO 8601, e.g. 2030-01-01T10:00)")
    parser.add_argument("--start", type=when, help="start time (ISO 8601; default now)")
    parser.add_argument(
        "--next-free",
        action="store_true",
        help="for a type whose devices are all busy: book the next free slot instead of failing",
    )
    _waiting_options(parser)
    parser.set_defaults(handler=runner(_book))


def _book(client: Client, args: argparse.Namespace) -> None:
    booking = client.book(
        args.target,
        minutes=args.minutes,
        start=args.start,
        end=args.until,
        wait=args.next_free,
        timeout=args.timeout,
        progress=True,
    )
    emit(args, booking.booking, lambda: booking_rows([booking.booking]))
    _wait_or_hold(booking, args)


def _hold(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("booking_id", type=positive, metavar="BOOKING")
    parser.add_argument(
        "--timeout",
        type=seconds,
        metavar="SECONDS",
        help="wait for the start at most this long, else cancel the booking and exit 5",
    )
    parser.set_defaults(handler=runner(_hold_existing), hold=True)


def _hold_existing(client: Client, args: argparse.Namespace) -> None:
    from .._client import Booking

    # Released at the end, as `book --hold` does: holding is using it now, not keeping it.
    booking = Booking(
        client, client.booking(args.booking_id), release=True, timeout=args.timeout, progress=True
    )
    emit(args, booking.booking, lambda: booking_rows([booking.booking]))
    _wait_or_hold(booking, args)


def _wait_or_hold(booking: Booking, args: argparse.Namespace) -> None:
    """With ``--hold``, hold the booking until it ends or the user stops; with ``--timeout``
    alone, wait for its start."""
    if not args.hold and args.timeout is None:
        return
    with _terminate_as_interrupt():
        if not args.hold:
            booking.wait()  # Ctrl-C cancels the booking and exits 130
            return
        try:
            with booking:
                print("holding the booking; Ctrl-C or SIGTERM releases it", file=sys.stderr)
                # Look now and then for a booking that ended under us (preempted, idle).
                while booking.lost is None and booking.refresh().status in ("upcoming", "running"):
                    time.sleep(1.0)
        except KeyboardInterrupt:
            pass  # leaving the block released the booking
    if booking.booking.status in ("preempted", "expired"):
        from .._errors import SpecklabError

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


def _extend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("booking_id", type=positive, metavar="BOOKING")
    parser.add_argument("--minutes", type=positive, required=True)
    parser.set_defaults(handler=runner(_extend_booking))


def _extend_booking(client: Client, args: argparse.Namespace) -> None:
    booking = client.extend(args.booking_id, minutes=args.minutes)
    emit(args, booking, lambda: booking_rows([booking]))


def _cancel(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("booking_ids", type=positive, nargs="+", metavar="BOOKING")
    parser.set_defaults(handler=runner(_cancel_bookings))


def _cancel_bookings(client: Client, args: argparse.Namespace) -> None:
    ended = [client.cancel(booking_id) for booking_id in args.booking_ids]
    emit(args, ended, lambda: booking_rows(ended))


VERBS: dict[str, tuple[str, Verb]] = {
    "list": ("your bookings (admins: everyone's), with lease state", _list),
    "show": ("one booking", _show),
    "create": ("book a device, or the first free device of a type", _create),
    "extend": ("make a booking longer", _extend),
    "cancel": ("cancel bookings (or release running ones)", _cancel),
    "hold": ("keep an existing booking in use until Ctrl-C, then release it", _hold),
}
