"""Waiting for a booking to start (a ``wait=True`` booking of a busy type): when to look
again, the countdown shown meanwhile, and when to give up. No I/O but the countdown line;
the blocking and asyncio bookings sleep and refresh around it."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from specklab.schemas.booking import BookingPublic, BookingStatus

from ._errors import WaitTimeout

#: Seconds between looks at a waiting booking: the daemon may start it early, when a device
#: of its type frees.
POLL_S = 2.0


class StartWait:
    """One wait for ``booking``'s start, giving up ``timeout`` seconds after it began."""

    def __init__(
        self,
        timeout: float | None,
        *,
        countdown: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._timeout = timeout
        self._deadline = None if timeout is None else clock() + timeout
        self._countdown = countdown
        self._shown = False

    def pause(self, booking: BookingPublic) -> float | None:
        """Seconds to sleep before refreshing ``booking``; None once it runs (or ended).
        Raises :class:`WaitTimeout` when the timeout passed first."""
        if booking.status != BookingStatus.UPCOMING:
            return None
        to_start = (booking.starts_at - datetime.now(UTC)).total_seconds()
        if to_start <= 0:
            return None
        left = None if self._deadline is None else self._deadline - self._clock()
        if left is not None and left <= 0:
            raise WaitTimeout(
                f"booking {booking.id} of {booking.device_id} did not start within "
                f"{_clock_text(self._timeout or 0)} (it would start in {_clock_text(to_start)})"
            )
        self._show(booking, to_start, left)
        return min(POLL_S, to_start, POLL_S if left is None else left)

    def _show(self, booking: BookingPublic, to_start: float, left: float | None) -> None:
        if not self._countdown:
            return
        giving_up = "" if left is None else f", giving up in {_clock_text(left)}"
        line = f"waiting for {booking.device_id} (booking {booking.id}): starts in "
        sys.stderr.write(f"\r{line}{_clock_text(to_start)}{giving_up}\x1b[K")
        sys.stderr.flush()
        self._shown = True

    def close(self) -> None:
        """End the countdown's line."""
        if self._shown:
            sys.stderr.write("\n")
            self._shown = False


def _clock_text(seconds: float) -> str:
    """``754`` as ``12:34``; hours as ``1:02:03``."""
    whole = max(0, round(seconds))
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"
