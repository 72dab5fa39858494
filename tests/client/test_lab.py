"""Accounts, devices and bookings through the blocking client against a real daemon."""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from specklab.client import (
    AuthenticationError,
    BookingConflict,
    Client,
    ClientClosed,
    Conflict,
    NotFound,
    PermissionDenied,
    TransportError,
)
from specklab.schemas.booking import BookingStatus
from specklab.schemas.devices import DeviceStatus

from ..daemon import Daemon, free_port
from .conftest import LEASE_LAPSES_S, VIRTUAL_DEVKITS, Account, new_account


def test_health_and_version_need_no_token(daemon: Daemon) -> None:
    with Client(daemon.url) as client:
        assert client.health().status == "ok"
        assert client.version().specklab


def test_url_and_token_come_from_the_environment(
    daemon: Daemon, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPECKLAB_URL", daemon.url)
    monkeypatch.setenv("SPECKLAB_TOKEN", account.token)
    with Client() as client:
        assert client.url == daemon.url
        assert client.me().name == account.name


def test_bad_tokens_and_missing_rights_are_typed_errors(daemon: Daemon, client: Client) -> None:
    with (
        Client(daemon.url, "spk_not-a-real-token") as stranger,
        pytest.raises(AuthenticationError) as raised,
    ):
        stranger.me()
    assert raised.value.status == 401 and raised.value.message
    with pytest.raises(PermissionDenied, match="admin"):
        client.users()


def test_an_unreachable_daemon_is_a_transport_error() -> None:
    with (
        Client(f"http://127.0.0.1:{free_port()}", timeout=2) as client,
        pytest.raises(TransportError, match="cannot reach"),
    ):
        client.health()


def test_a_closed_client_refuses_reuse(daemon: Daemon) -> None:
    client = Client(daemon.url)
    client.close()
    with pytest.raises(ClientClosed, match="closed"):
        client.health()
    with pytest.raises(ClientClosed):
        client.__enter__()


def test_tokens_can_be_listed_created_and_revoked(daemon: Daemon, client: Client) -> None:
    created = client.create_token("laptop", expires_in_days=None)
    assert created.token.startswith("spk_") and created.expires_at is None
    assert "laptop" in [t.name for t in client.tokens()]
    with Client(daemon.url, created.token) as laptop:
        assert laptop.me().id == client.me().id
        assert client.revoke_token(created).revoked_at is not None
        with pytest.raises(AuthenticationError):
            laptop.me()


def test_admins_manage_users(admin: Client) -> None:
    observer = admin.create_user("watcher", role="observer")
    assert observer.role == "observer"
    assert "watcher" in [u.name for u in admin.users()]
    # Arguments the schemas refuse never leave the client.
    with pytest.raises(ValueError, match="pattern"):
        admin.create_user("no spaces allowed")
    with pytest.raises(Conflict, match="watcher"):
        admin.create_user("watcher")


def test_devices_types_and_supported_devices(client: Client) -> None:
    devices = client.devices()
    virtual = [d for d in devices if d.virtual]
    assert len(virtual) == VIRTUAL_DEVKITS
    assert {d.type for d in virtual} == {"speck2fdevkit"}
    first = client.device(virtual[0].id)
    assert first.id == virtual[0].id and first.supported
    assert client.lab_status().samna.state
    types = {t.type: t for t in client.device_types()}
    assert types["speck2fdevkit"].samna_name == "Speck2fDevKit"
    assert client.supported_devices() == [
        "speck2e",
        "speck2edevkit",
        "speck2fmodule",
        "speck2fdevkit",
    ]
    with pytest.raises(NotFound, match="speck2fdevkit:99"):
        client.device("speck2fdevkit:99")


def test_book_holds_the_lease_and_releases_on_exit(client: Client) -> None:
    with client.book("speck2fdevkit", minutes=5) as booking:
        assert booking.booking.status is BookingStatus.RUNNING
        assert [b.id for b in client.bookings(current=True)] == [booking.id]
        device = client.device(booking.device_id)
        assert device.status is DeviceStatus.BOOKED
        assert device.booking is not None and device.booking.id == booking.id
        # Without heartbeats the booking would expire in this time.
        time.sleep(LEASE_LAPSES_S)
        assert booking.refresh().status is BookingStatus.RUNNING
        assert booking.refresh().lease_expires_at is not None
        assert booking.lost is None
    assert booking.booking.status is BookingStatus.RELEASED
    assert client.booking(booking.id).status is BookingStatus.RELEASED


def test_a_taken_slot_is_a_booking_conflict_with_the_next_free_time(
    admin: Client, account: Account
) -> None:
    other = new_account(admin)
    with (
        account.client() as mine,
        other.client() as theirs,
        mine.book("speck2fdevkit", minutes=10) as booking,
    ):
        with pytest.raises(BookingConflict) as raised:
            theirs.create_booking(booking.device_id, minutes=5)
        error = raised.value
        assert error.status == 409 and error.device_id == booking.device_id
        assert error.next_free is not None and error.next_free >= booking.booking.ends_at


def test_bookings_list_extend_and_cancel(client: Client) -> None:
    start = datetime.now(UTC) + timedelta(hours=1)
    booking = client.create_booking("speck2fdevkit", minutes=10, start=start)
    assert booking.status is BookingStatus.UPCOMING
    assert booking.id in [b.id for b in client.bookings(current=True)]
    assert [b.id for b in client.bookings(device=booking.device_id)] == [booking.id]
    longer = client.extend(booking, minutes=5)
    assert longer.ends_at - booking.ends_at == timedelta(minutes=5)
    assert client.cancel(booking.id).status is BookingStatus.CANCELLED
    assert booking.id not in [b.id for b in client.bookings(current=True)]
    with pytest.raises(NotFound):
        client.booking(10**6)


def test_an_admin_preempts_and_the_lease_notices(admin: Client, client: Client) -> None:
    with client.book("speck2fdevkit", minutes=5) as booking:
        assert admin.preempt(booking.id, reason="maintenance").status is BookingStatus.PREEMPTED
        deadline = time.monotonic() + 10
        while booking.lost is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert booking.lost is not None and "preempted" in str(booking.lost)
    assert booking.booking.status is BookingStatus.PREEMPTED
    assert client.booking(booking.id).status is BookingStatus.PREEMPTED


def test_a_booking_waiting_for_a_type_starts_as_soon_as_a_device_frees(
    admin: Client, account: Account
) -> None:
    devices = [d.id for d in admin.devices() if d.virtual and d.type == "speck2fdevkit"]
    with account.client() as holder, new_account(admin).client() as waiter:
        held = [holder.create_booking(device, minutes=10) for device in devices]
        try:
            booking = waiter.book("speck2fdevkit", minutes=5, wait=True)
            planned = booking.booking.starts_at
            assert planned >= min(b.ends_at for b in held)
            entered: list[datetime] = []

            def enter() -> None:
                with booking:
                    entered.append(datetime.now(UTC))

            thread = threading.Thread(target=enter)
            thread.start()
            time.sleep(1.5)  # entered, and waiting
            assert not entered
            holder.cancel(held[1])
            thread.join(timeout=60)
            assert entered and entered[0] < planned
            assert booking.device_id == held[1].device_id
        finally:
            for b in held:
                with contextlib.suppress(Conflict):
                    holder.cancel(b)


def test_entering_a_future_booking_waits_for_its_start(client: Client) -> None:
    start = datetime.now(UTC) + timedelta(seconds=1.5)
    booking = client.book("speck2fdevkit", minutes=1, start=start)
    assert booking.booking.status is BookingStatus.UPCOMING
    with booking:
        assert datetime.now(UTC) >= start
        assert booking.refresh().status is BookingStatus.RUNNING
    assert booking.booking.status is BookingStatus.RELEASED
