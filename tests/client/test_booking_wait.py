"""Waiting for a booking's start: the countdown, looking again (the daemon may start it
early) and giving up after ``timeout``, in the SDK (sync and async)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from specklab.client import AsyncClient, Client, WaitTimeout
from specklab.client._waiting import POLL_S, StartWait
from specklab.schemas.booking import BookingPublic

from .conftest import Account


def _booking(starts_in_s: float, status: str = "upcoming") -> BookingPublic:
    now = datetime.now(UTC)
    start = now + timedelta(seconds=starts_in_s)
    return BookingPublic.model_validate(
        {
            "id": 7,
            "device_id": "x:1",
            "user_id": 1,
            "user_name": "ada",
            "starts_at": start,
            "ends_at": start + timedelta(minutes=5),
            "status": status,
            "created_at": now,
            "ended_at": None,
            "lease_expires_at": None,
        }
    )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_running_or_ended_booking_needs_no_wait() -> None:
    wait = StartWait(None, countdown=False)
    assert wait.pause(_booking(-1, "running")) is None
    assert wait.pause(_booking(60, "cancelled")) is None
    assert wait.pause(_booking(-0.1)) is None  # its start passed: the lease call tells


def test_it_looks_again_every_few_seconds_and_never_past_the_start_or_the_deadline() -> None:
    clock = Clock()
    wait = StartWait(10.0, countdown=False, clock=clock)
    assert wait.pause(_booking(3600)) == POLL_S
    assert wait.pause(_booking(0.5)) == pytest.approx(0.5, abs=0.05)
    clock.now += 9.5
    assert wait.pause(_booking(3600)) == pytest.approx(0.5)


def test_past_the_timeout_it_gives_up_saying_when_the_booking_would_start() -> None:
    clock = Clock()
    wait = StartWait(90.0, countdown=False, clock=clock)
    clock.now += 90.0
    with pytest.raises(WaitTimeout, match=r"booking 7 of x:1 did not start within 1:30 \(it "):
        wait.pause(_booking(3600))


def test_the_countdown_says_when_it_starts_and_when_the_wait_gives_up(
    capsys: pytest.CaptureFixture[str],
) -> None:
    wait = StartWait(60.0, countdown=True, clock=Clock())
    wait.pause(_booking(3 * 3600 + 0.4))
    wait.close()
    err = capsys.readouterr().err
    assert "waiting for x:1 (booking 7): starts in 3:00:00, giving up in 1:00" in err
    assert err.endswith("\n")


def _far_start() -> datetime:
    """Within the booking horizon, far enough ahead that it cannot start during a test."""
    return (datetime.now(UTC) + timedelta(days=25)).replace(second=0, microsecond=0)


def test_the_sdk_gives_up_and_cancels_the_booking(client: Client) -> None:
    booking = client.book("speck2fdevkit", minutes=5, start=_far_start(), timeout=0.2)
    with pytest.raises(WaitTimeout), booking:
        pytest.fail("the block ran although the booking never started")
    assert client.booking(booking.id).status == "cancelled"


def test_the_async_sdk_gives_up_and_cancels_the_booking(account: Account) -> None:
    async def main() -> str:
        async with AsyncClient(account.url, account.token) as lab:
            booking = await lab.book("speck2fdevkit", minutes=5, start=_far_start(), timeout=0.2)
            with pytest.raises(WaitTimeout):
                await booking.wait()
            return (await lab.booking(booking.id)).status

    assert asyncio.run(main()) == "cancelled"
