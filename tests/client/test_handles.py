"""The lease logic written once for ``Booking`` and ``AsyncBooking``, against a scripted daemon
(``httpx.MockTransport``): missed heartbeats, a lost booking, a release after the end."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from specklab.client import (
    AsyncBooking,
    AsyncClient,
    Booking,
    BookingPublic,
    Client,
    Conflict,
    TransportError,
)

URL = "http://lab.invalid"
NOW = datetime.now(UTC)
Handler = Callable[[httpx.Request], httpx.Response]


def booking_json(status: str = "running", end_reason: str | None = None) -> dict[str, object]:
    return BookingPublic(
        id=7,
        device_id="speck2fdevkit:0",
        user_id=1,
        user_name="ada",
        starts_at=NOW - timedelta(minutes=1),
        ends_at=NOW + timedelta(minutes=29),
        status=status,
        created_at=NOW - timedelta(minutes=1),
        ended_at=None,
        end_reason=end_reason,
        lease_expires_at=None,
    ).model_dump(mode="json")


def lease_json() -> dict[str, object]:
    return {"booking_id": 7, "renewed_at": NOW.isoformat(), "expires_at": NOW.isoformat()}


def conflict(code: str) -> httpx.Response:
    return httpx.Response(409, json={"code": code, "message": "no", "detail": None})


def heartbeats(*answers: httpx.Response | Exception) -> Handler:
    """A daemon whose heartbeats answer ``answers`` in turn."""
    pending = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/bookings/7/heartbeat"
        answer = pending.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handle


def test_a_missed_heartbeat_keeps_the_lease_a_refused_one_loses_it() -> None:
    handler = heartbeats(
        httpx.ConnectError("unreachable"),
        httpx.Response(200, json=lease_json()),
        conflict("booking_over"),
    )
    with Client(URL, "t", transport=httpx.MockTransport(handler)) as client:
        booking = Booking(client, BookingPublic(**booking_json()), release=False)
        assert client._run(booking._beat()) is True  # the network failed once
        assert client._run(booking._beat()) is True
        assert booking.lost is None
        assert client._run(booking._beat()) is False
        assert isinstance(booking.lost, Conflict)


async def test_async_booking_shares_the_heartbeat_logic() -> None:
    handler = heartbeats(httpx.ConnectError("unreachable"), conflict("booking_not_running"))
    async with AsyncClient(URL, "t", transport=httpx.MockTransport(handler)) as client:
        booking = AsyncBooking(client, BookingPublic(**booking_json()), release=False)
        assert await client._run(booking._beat()) is True
        assert await client._run(booking._beat()) is False
        assert isinstance(booking.lost, Conflict)


def releases(cancel: httpx.Response) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            return cancel
        return httpx.Response(200, json=booking_json("preempted", "preempted by root: repair"))

    return handle


def test_stop_of_a_booking_already_over_reads_why_it_ended() -> None:
    handler = releases(conflict("booking_over"))
    with Client(URL, "t", transport=httpx.MockTransport(handler)) as client:
        booking = Booking(client, BookingPublic(**booking_json()), release=True)
        booking.stop()
        assert booking.booking.end_reason == "preempted by root: repair"


def test_stop_raises_other_conflicts() -> None:
    handler = releases(conflict("booking_not_yours"))
    with Client(URL, "t", transport=httpx.MockTransport(handler)) as client:
        booking = Booking(client, BookingPublic(**booking_json()), release=True)
        with pytest.raises(Conflict):
            booking.stop()


def test_a_transport_failure_of_a_plain_call_still_raises() -> None:
    handler = heartbeats(httpx.ConnectError("unreachable"))
    client = Client(URL, "t", transport=httpx.MockTransport(handler))
    with client, pytest.raises(TransportError, match="cannot reach the daemon"):
        client.heartbeat(7)
