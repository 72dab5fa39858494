"""The asyncio client against the real daemon: the same calls, awaited."""

from __future__ import annotations

import asyncio

import pytest

from specklab.client import (
    AsyncClient,
    AuthenticationError,
    BookingConflict,
    ClientClosed,
    NotFound,
)
from specklab.schemas.booking import BookingStatus

from ..daemon import Daemon
from .conftest import LEASE_LAPSES_S, Account, new_account


async def test_calls_are_awaited_and_errors_typed(daemon: Daemon, account: Account) -> None:
    async with AsyncClient(daemon.url, account.token) as client:
        assert (await client.health()).status == "ok"
        assert (await client.me()).name == account.name
        devices, types = await asyncio.gather(client.devices(), client.supported_devices())
        assert "speck2fdevkit" in types and devices
        with pytest.raises(NotFound):
            await client.device("speck2fdevkit:99")
    async with AsyncClient(daemon.url, "spk_wrong") as stranger:
        with pytest.raises(AuthenticationError):
            await stranger.me()


async def test_a_closed_async_client_refuses_reuse(daemon: Daemon) -> None:
    client = AsyncClient(daemon.url)
    await client.aclose()
    with pytest.raises(ClientClosed, match="AsyncClient is closed"):
        await client.health()


async def test_async_booking_beats_and_releases(admin, account: Account) -> None:
    other = new_account(admin)
    async with (
        AsyncClient(account.url, account.token) as client,
        AsyncClient(other.url, other.token) as rival,
    ):
        async with client.book("speck2fdevkit", minutes=5) as booking:
            assert booking.booking.status is BookingStatus.RUNNING
            with pytest.raises(BookingConflict):
                await rival.create_booking(booking.device_id, minutes=5)
            await asyncio.sleep(LEASE_LAPSES_S)  # longer than a lease: the task must beat
            assert (await booking.refresh()).status is BookingStatus.RUNNING
            assert booking.lost is None
        assert booking.booking.status is BookingStatus.RELEASED
        # Awaiting book() makes the booking without holding its lease.
        plain = await client.book(booking.device_id, minutes=5)
        assert plain.booking.status is BookingStatus.RUNNING
        assert (await client.cancel(plain.id)).status is BookingStatus.RELEASED
