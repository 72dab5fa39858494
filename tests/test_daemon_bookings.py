"""Bookings against real daemon processes: a burst of conflicting requests, and a restart."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from specklab.server.storage import Database, utcnow

from .daemon import Daemon, run_daemon
from .db_fixtures import add_devices
from .lab_client import ADMIN_TOKEN, bearer

DEVICE = "speck2fdevkit:0"


def _daemon_args(database_url: str) -> list[str]:
    # SQLite: the daemon's default, a file in its data dir; PostgreSQL: the test's database.
    return [] if database_url.startswith("sqlite") else ["--database-url", database_url]


def _database(daemon: Daemon, database_url: str) -> Database:
    if database_url.startswith("sqlite"):
        return Database(f"sqlite:///{daemon.data_dir / 'specklab.db'}")
    return Database(database_url)


def _add_user(url: str, admin: dict[str, str], name: str) -> dict[str, str]:
    user = httpx.post(f"{url}/v1/users", json={"name": name}, headers=admin).json()
    token = httpx.post(
        f"{url}/v1/tokens", json={"name": "t", "user_id": user["id"]}, headers=admin
    ).json()
    return bearer(token["token"])


def _slot(hours: int) -> dict[str, object]:
    """A booking request for 30 minutes of ``DEVICE``, ``hours`` from now."""
    starts_at = (utcnow() + timedelta(hours=hours)).isoformat()
    return {"device_id": DEVICE, "starts_at": starts_at, "minutes": 30}


def _book(url: str, headers: dict[str, str], hours: int) -> dict:
    return httpx.post(f"{url}/v1/bookings", json=_slot(hours), headers=headers).json()


@contextmanager
def _daemon_with_device(tmp_path: Path, database_url: str) -> Iterator[Daemon]:
    """A daemon with the admin token, and ``DEVICE`` in its lab."""
    env = {"SPECKLAB_ADMIN_TOKEN": ADMIN_TOKEN, "SPECKLAB_VIRTUAL": "none"}
    with run_daemon(tmp_path / "data", *_daemon_args(database_url), env=env) as daemon:
        db = _database(daemon, database_url)
        add_devices(db, (DEVICE, "speck2fdevkit"))
        db.dispose()
        yield daemon


def test_of_100_concurrent_requests_for_one_slot_exactly_one_wins(
    tmp_path: Path, database_url: str
) -> None:
    with _daemon_with_device(tmp_path, database_url) as daemon:
        users = [_add_user(daemon.url, bearer(ADMIN_TOKEN), f"user{i}") for i in range(10)]
        slot = _slot(hours=1)

        async def burst() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=100)
            async with httpx.AsyncClient(base_url=daemon.url, timeout=120, limits=limits) as client:
                return await asyncio.gather(
                    *(
                        client.post("/v1/bookings", json=slot, headers=users[i % len(users)])
                        for i in range(100)
                    )
                )

        responses = asyncio.run(burst())
        assert Counter(r.status_code for r in responses) == {201: 1, 409: 99}, Counter(
            (r.status_code, r.text[:200]) for r in responses
        )
        winner = next(r.json() for r in responses if r.status_code == 201)
        for response in responses:
            if response.status_code == 409:
                error = response.json()
                assert error["code"] == "booking_conflict"
                assert datetime.fromisoformat(
                    error["detail"]["next_free"]
                ) == datetime.fromisoformat(winner["ends_at"])
        everything = httpx.get(f"{daemon.url}/v1/bookings", headers=bearer(ADMIN_TOKEN)).json()
        assert [b["id"] for b in everything] == [winner["id"]]
    assert "Traceback" not in daemon.log()


def test_a_restart_keeps_users_tokens_bookings_and_the_audit_log(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPECKLAB_ADMIN_TOKEN", raising=False)
    args = _daemon_args(database_url)
    env = {"SPECKLAB_VIRTUAL": "none"}
    with run_daemon(tmp_path / "data", *args, env=env) as first:
        # Printed once to stderr; the log line saying so has it redacted.
        found = re.search(r"first start: .* \(shown once\): (spk_\S+)", first.log())
        assert found, first.log()
        admin = bearer(found[1])
        db = _database(first, database_url)
        add_devices(db, (DEVICE, "speck2fdevkit"))
        db.dispose()
        alice = _add_user(first.url, admin, "alice")
        booking = _book(first.url, alice, hours=3)
    with run_daemon(tmp_path / "data", *args, env=env) as second:
        assert "shown once" not in second.log()
        users = httpx.get(f"{second.url}/v1/users", headers=admin).json()
        assert [u["name"] for u in users] == ["admin", "alice"]
        kept = httpx.get(f"{second.url}/v1/bookings/{booking['id']}", headers=alice).json()
        assert kept == booking
        actions = [e["action"] for e in httpx.get(f"{second.url}/v1/audit", headers=admin).json()]
        assert actions[:2] == ["booking.create", "token.create"]
        assert actions[-2:] == ["token.create", "user.create"]


def _at_once(daemon_urls: list[str], requests: list[tuple[int, str, dict, dict]]) -> list:
    """``(daemon index, path, json, headers)`` POSTs, all in flight together; the responses."""

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(requests))
        clients = [
            httpx.AsyncClient(base_url=url, timeout=120, limits=limits) for url in daemon_urls
        ]
        try:
            return await asyncio.gather(
                *(clients[i].post(path, json=body, headers=h) for i, path, body, h in requests)
            )
        finally:
            for client in clients:
                await client.aclose()

    return asyncio.run(burst())


def test_50_concurrent_extends_of_one_booking_all_take_effect(
    tmp_path: Path, database_url: str
) -> None:
    """Each extend reads the booking after locking it: no answer of 200 is a lost update."""
    with _daemon_with_device(tmp_path, database_url) as daemon:
        alice = _add_user(daemon.url, bearer(ADMIN_TOKEN), "alice")
        booking = _book(daemon.url, alice, hours=1)
        path = f"/v1/bookings/{booking['id']}/extend"
        responses = _at_once([daemon.url], [(0, path, {"minutes": 1}, alice)] * 50)
        assert Counter(r.status_code for r in responses) == {200: 50}, [
            r.text[:200] for r in responses if r.status_code != 200
        ]
        # Each saw the one before it: 50 different ends, one minute apart.
        ends = sorted(datetime.fromisoformat(r.json()["ends_at"]) for r in responses)
        first_end = datetime.fromisoformat(booking["ends_at"])
        assert ends == [first_end + timedelta(minutes=m) for m in range(1, 51)]
        final = httpx.get(f"{daemon.url}/v1/bookings/{booking['id']}", headers=alice).json()
        assert datetime.fromisoformat(final["ends_at"]) == ends[-1]
    assert "Traceback" not in daemon.log()
