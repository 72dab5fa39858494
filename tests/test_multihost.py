"""Two daemons on loopback sharing one PostgreSQL database are one lab: every daemon lists
every device with the daemon that serves it, and bookings, tokens and leases work through
either of them."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from .daemon import Daemon, run_daemon
from .db_fixtures import POSTGRES_ENV, fresh_postgres_database, postgres_url
from .lab_client import ADMIN_TOKEN, bearer

pytestmark = pytest.mark.postgres

DEVICE_A = "virtual-speck2fdevkit:0@host-a"
DEVICE_B = "virtual-speck2edevkit:0@host-b"
ADMIN = bearer(ADMIN_TOKEN)


@pytest.fixture
def two_hosts(tmp_path: Path) -> Iterator[tuple[Daemon, Daemon]]:
    server = postgres_url()
    if server is None:
        pytest.skip(f"no PostgreSQL: set {POSTGRES_ENV} (see .ci/postgres.sh)")
    with fresh_postgres_database(server) as url, ExitStack() as stack:
        daemons = []
        for name, virtual in (("host-a", "speck2fdevkit=1"), ("host-b", "speck2edevkit=1")):
            env = {
                "SPECKLAB_ADMIN_TOKEN": ADMIN_TOKEN,
                "SPECKLAB_HOST_NAME": name,
                "SPECKLAB_VIRTUAL": virtual,
                "SPECKLAB_SWEEP_INTERVAL_S": "0.5",
            }
            daemons.append(
                stack.enter_context(run_daemon(tmp_path / name, "--database-url", url, env=env))
            )
        yield daemons[0], daemons[1]


def _users(daemon: Daemon, *names: str) -> dict[str, dict[str, str]]:
    """New users, made through ``daemon``: name -> their bearer header."""
    users = {}
    for name in names:
        user = httpx.post(f"{daemon.url}/v1/users", json={"name": name}, headers=ADMIN).json()
        token = httpx.post(
            f"{daemon.url}/v1/tokens", json={"name": "t", "user_id": user["id"]}, headers=ADMIN
        ).json()
        users[name] = bearer(token["token"])
    return users


def _devices(daemon: Daemon) -> dict[str, dict]:
    response = httpx.get(f"{daemon.url}/v1/devices", headers=ADMIN)
    assert response.status_code == 200, response.text
    return {device["id"]: device for device in response.json()["devices"]}


def test_every_daemon_lists_every_device_with_its_host(two_hosts: tuple[Daemon, Daemon]) -> None:
    a, b = two_hosts
    for daemon in (a, b):
        devices = _devices(daemon)
        assert set(devices) == {DEVICE_A, DEVICE_B}
        assert (devices[DEVICE_A]["host"], devices[DEVICE_A]["url"]) == ("host-a", a.url)
        assert (devices[DEVICE_B]["host"], devices[DEVICE_B]["url"]) == ("host-b", b.url)
        assert {d["status"] for d in devices.values()} == {"free"}
    remote = httpx.get(f"{b.url}/v1/devices/{DEVICE_A}", headers=ADMIN).json()
    assert (remote["host"], remote["url"]) == ("host-a", a.url)
    # A host that stops takes its devices offline for the rest of the lab.
    a.stop()
    devices = _devices(b)
    assert (devices[DEVICE_A]["status"], devices[DEVICE_B]["status"]) == ("offline", "free")


def test_bookings_tokens_and_leases_work_through_either_daemon(
    two_hosts: tuple[Daemon, Daemon],
) -> None:
    a, b = two_hosts
    users = _users(a, "alice", "bob")
    # A token made through host A works on host B.
    me = httpx.get(f"{b.url}/v1/users/me", headers=users["alice"]).json()
    assert me["name"] == "alice"

    # Alice books host B's device through host A; Bob, through host B, learns when it is free.
    booking = httpx.post(
        f"{a.url}/v1/bookings", json={"device_id": DEVICE_B, "minutes": 10}, headers=users["alice"]
    ).json()
    assert booking["status"] == "running"
    refused = httpx.post(
        f"{b.url}/v1/bookings", json={"device_id": DEVICE_B, "minutes": 10}, headers=users["bob"]
    )
    assert refused.status_code == 409
    assert refused.json()["detail"]["next_free"] == booking["ends_at"]
    # The serving host leases it, and both hosts show it booked.
    lease = httpx.post(f"{b.url}/v1/bookings/{booking['id']}/heartbeat", headers=users["alice"])
    assert lease.status_code == 200
    for daemon in (a, b):
        device = _devices(daemon)[DEVICE_B]
        assert (device["status"], device["booking"]["user_name"]) == ("booked", "alice")
    # The next free device of a type may be on the other host.
    picked = httpx.post(
        f"{b.url}/v1/bookings",
        json={"device_type": "speck2fdevkit", "minutes": 5},
        headers=users["bob"],
    ).json()
    assert picked["device_id"] == DEVICE_A
    entries = httpx.get(f"{b.url}/v1/audit", params={"action": "booking.create"}, headers=ADMIN)
    assert [(e["actor_name"], e["host_name"]) for e in entries.json()] == [
        ("bob", "host-b"),
        ("alice", "host-a"),
    ]


def test_extends_and_creates_racing_through_two_daemons_never_fail(
    two_hosts: tuple[Daemon, Daemon],
) -> None:
    """Alice extends her booking through host A while Bob books the minutes after it through
    host B: each request either takes effect or is refused with a 409, never a 500 (the
    deadlocks PostgreSQL breaks are run again)."""
    a, b = two_hosts
    users = _users(a, "alice", "bob")
    start = datetime.now(UTC) + timedelta(hours=1)
    booking = httpx.post(
        f"{a.url}/v1/bookings",
        json={"device_id": DEVICE_A, "starts_at": start.isoformat(), "minutes": 30},
        headers=users["alice"],
    ).json()
    first_end = datetime.fromisoformat(booking["ends_at"])
    requests = []
    for i in range(40):
        requests.append((0, f"/v1/bookings/{booking['id']}/extend", {"minutes": 1}, "alice"))
        slot = first_end + timedelta(minutes=i)
        body = {"device_id": DEVICE_A, "starts_at": slot.isoformat(), "minutes": 1}
        requests.append((1, "/v1/bookings", body, "bob"))

    async def race() -> list[httpx.Response]:
        async with (
            httpx.AsyncClient(base_url=a.url, timeout=120) as on_a,
            httpx.AsyncClient(base_url=b.url, timeout=120) as on_b,
        ):
            clients = (on_a, on_b)
            return await asyncio.gather(
                *(
                    clients[i].post(path, json=body, headers=users[who])
                    for i, path, body, who in requests
                )
            )

    responses = asyncio.run(race())
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 201, 409}, [r.text[:200] for r in responses]
    assert all(set(r.json()) >= {"id"} or r.json()["code"] for r in responses)
    # Every extend answered 200 took effect, and nothing overlaps the result.
    final = httpx.get(f"{b.url}/v1/bookings/{booking['id']}", headers=ADMIN).json()
    extended = sum(r.status_code == 200 for r in responses)
    assert datetime.fromisoformat(final["ends_at"]) == first_end + timedelta(minutes=extended)
    taken = [
        (datetime.fromisoformat(r.json()["starts_at"]), datetime.fromisoformat(r.json()["ends_at"]))
        for r in responses
        if r.status_code == 201
    ]
    taken.append((start, datetime.fromisoformat(final["ends_at"])))
    taken.sort()
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(taken))
    for daemon in (a, b):
        assert "Traceback" not in daemon.log()
