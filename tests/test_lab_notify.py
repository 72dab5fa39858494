"""Booking changes reach the other hosts of a PostgreSQL lab by LISTEN/NOTIFY, not only at their
next sweep: the hosts here sweep once an hour, so only a notification can bring host B the
change that host A commits, first to a bare listener, then to a stream on B's devkit."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from specklab.schemas.frames import ErrorFrame, decode
from specklab.server.booking.listener import listen
from specklab.server.booking.notifications import CHANNEL, BookingEvents, Subscription
from specklab.server.storage import normalize_url

from .db_fixtures import POSTGRES_ENV, add_devices, fresh_postgres_database, postgres_url
from .lab_client import Lab, bearer, running_lab

pytestmark = pytest.mark.postgres

DEVICE = "virtual-speck2fdevkit:0@host-b"
#: Long enough that a test waiting on an event never waits for a sweep instead.
NO_SWEEP_S = 3600.0
WAIT_S = 60.0


@pytest.fixture
def lab_a(tmp_path: Path) -> Iterator[tuple[Lab, str]]:
    server = postgres_url()
    if server is None:
        pytest.skip(f"no PostgreSQL: set {POSTGRES_ENV} (see .ci/postgres.sh)")
    with (
        fresh_postgres_database(server) as url,
        running_lab(tmp_path / "a", url, host_name="host-a", sweep_interval_s=NO_SWEEP_S) as lab,
    ):
        add_devices(lab.db, (DEVICE, "speck2fdevkit"), host="host-b")
        yield lab, url


def _sql(url: str, statement: str) -> None:
    engine = create_engine(normalize_url(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


async def _listening(lab: Lab, alice: dict[str, str], booking_id: int, sub: Subscription) -> None:
    """Extend the booking until host B hears of an extension: its listener is then up."""
    for _ in range(int(WAIT_S / 0.5)):
        extended = lab.client.post(
            f"/v1/bookings/{booking_id}/extend", json={"minutes": 1}, headers=alice
        )
        assert extended.status_code == 200, extended.text
        try:
            event = await asyncio.wait_for(sub.get(), 0.5)
        except TimeoutError:
            continue
        assert (event.kind, event.booking_id) == ("extended", booking_id)
        return
    raise AssertionError("host B never heard of a booking change")


async def test_a_booking_cancelled_on_one_host_reaches_another_by_notify(
    lab_a: tuple[Lab, str],
) -> None:
    lab, url = lab_a
    alice = bearer(lab.add_user("alice")[1])
    booking = lab.client.post(
        "/v1/bookings", json={"device_id": DEVICE, "minutes": 10}, headers=alice
    ).json()
    host_b = BookingEvents()
    listener = asyncio.create_task(listen(url, host_b, retry_s=0.1))
    try:
        async with host_b.subscribe(DEVICE) as sub:
            await _listening(lab, alice, booking["id"], sub)
            # Junk on the channel is ignored, and a lost connection is opened again.
            _sql(url, f"SELECT pg_notify('{CHANNEL}', 'not an event')")
            _sql(
                url,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE query = 'LISTEN {CHANNEL}' AND datname = current_database()",
            )
            await _listening(lab, alice, booking["id"], sub)
            cancelled = lab.client.delete(f"/v1/bookings/{booking['id']}", headers=alice)
            assert cancelled.status_code == 200, cancelled.text
            event = await asyncio.wait_for(sub.get(), WAIT_S)
    finally:
        listener.cancel()
        with pytest.raises(asyncio.CancelledError):
            await listener
    assert (event.kind, event.booking_id, event.device_id) == ("ended", booking["id"], DEVICE)


def test_a_booking_cancelled_on_one_host_ends_a_stream_on_another(tmp_path: Path) -> None:
    server = postgres_url()
    if server is None:
        pytest.skip(f"no PostgreSQL: set {POSTGRES_ENV} (see .ci/postgres.sh)")
    hosts = {"sweep_interval_s": NO_SWEEP_S}
    with (
        fresh_postgres_database(server) as url,
        running_lab(tmp_path / "a", url, host_name="host-a", **hosts) as a,
        running_lab(
            tmp_path / "b", url, host_name="host-b", virtual=["speck2fdevkit=1"], **hosts
        ) as b,
    ):
        alice = bearer(a.add_user("alice")[1])
        booking = a.client.post(
            "/v1/bookings", json={"device_id": DEVICE, "minutes": 10}, headers=alice
        ).json()
        with b.client.websocket_connect(f"/v1/devices/{DEVICE}/dvs", headers=alice) as stream:
            stream.receive_bytes()  # ready
            cancelled = a.client.delete(f"/v1/bookings/{booking['id']}", headers=alice)
            assert cancelled.status_code == 200, cancelled.text
            while not isinstance(frame := decode(stream.receive_bytes()), ErrorFrame):
                pass
    assert (frame.code, frame.fatal) == ("booking_ended", True)
