"""Device ids in a lab of many hosts: every host may have a ``speck2fdevkit:0``; each is its
own device under its lab-wide id, and the guide's name still books one; a real devkit keeps its
id, and so its bookings, across a daemon restart that enumerates it elsewhere (docs/devices.md)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import insert, text

from specklab.server.booking import lab as lab_devices
from specklab.server.devices.naming import Candidate, DeviceId, lab_id, resolve_device_ref
from specklab.server.storage import Database, upgrade, utcnow
from specklab.server.storage.tables import Booking, DeviceRecord, Host, User

from .daemon import run_daemon
from .db_fixtures import add_devices
from .devices.conftest import DOUBLE_PATH
from .lab_client import ADMIN_TOKEN, Lab, bearer

HOSTS = [f"host-{i}" for i in range(10)]
NAME = "speck2fdevkit:0"


def test_a_name_stands_for_the_callers_device_else_the_first_free() -> None:
    devices = [
        Candidate("speck2fdevkit:0@a", NAME, online=True, booked=True),
        Candidate("speck2fdevkit:0@b", NAME, online=False, booked=False),
        Candidate("speck2fdevkit:0@c", NAME, online=True, booked=False),
        Candidate("speck2fdevkit:sn-X", "speck2fdevkit:1", online=True, booked=False),
    ]
    assert resolve_device_ref("speck2fdevkit:sn-X", devices) == "speck2fdevkit:sn-X"
    assert resolve_device_ref(NAME, devices) == "speck2fdevkit:0@c"
    assert resolve_device_ref(NAME, devices, held=["speck2fdevkit:0@a"]) == "speck2fdevkit:0@a"
    # Nothing free: the first, whose booking then answers the caller (a 409, not a 404).
    assert resolve_device_ref(NAME, devices[:2]) == "speck2fdevkit:0@a"
    assert resolve_device_ref("speck2fdevkit:1", devices) == "speck2fdevkit:sn-X"
    assert resolve_device_ref("speck2fdevkit:2", devices) is None


def test_ten_hosts_with_a_speck2fdevkit_0_give_ten_bookable_devices(lab: Lab) -> None:
    for host in HOSTS:  # each host's first Speck 2F without a serial number, under its id
        device_id = lab_id(DeviceId("speck2fdevkit", 0), host=host)
        add_devices(lab.db, (device_id, "speck2fdevkit"), host=host)
    listed = lab.client.get("/v1/devices", headers=lab.admin).json()["devices"]
    assert sorted(d["id"] for d in listed if d["name"] == NAME) == [
        f"{NAME}@{host}" for host in HOSTS
    ]
    users = {f"user{i}": bearer(lab.add_user(f"user{i}")[1]) for i in range(len(HOSTS) + 1)}
    booked = []
    for name in list(users)[: len(HOSTS)]:
        response = lab.client.post(
            "/v1/bookings", json={"device_id": NAME, "minutes": 10}, headers=users[name]
        )
        assert response.status_code == 201, response.text
        booked.append(response.json()["device_id"])
    assert sorted(booked) == [f"{NAME}@{host}" for host in HOSTS]
    late = lab.client.post(
        "/v1/bookings", json={"device_id": NAME, "minutes": 10}, headers=users["user10"]
    )
    assert (late.status_code, late.json()["code"]) == (409, "booking_conflict")
    # Each holder's name stands for their own device; an unknown name is still a 404.
    with lab.db.session() as session:
        for name, device_id in zip(users, booked, strict=False):
            user_id = lab.client.get("/v1/users/me", headers=users[name]).json()["id"]
            found = lab_devices.resolve_device(
                session, NAME, user_id=user_id, now=utcnow(), stale_after=timedelta(minutes=1)
            )
            assert found is not None and found.id == device_id
    missing = lab.client.post(
        "/v1/bookings", json={"device_id": "speck2fdevkit:7", "minutes": 10}, headers=users["user0"]
    )
    assert (missing.status_code, missing.json()["code"]) == (404, "device_not_found")


def test_the_migration_gives_virtual_devkits_and_their_bookings_lab_wide_ids(
    database_url: str,
) -> None:
    db = Database(database_url)
    upgrade(db, "0004")
    now = utcnow()
    rows = {
        "hosts": {"name": "Bench", "url": "http://bench:8765", "last_seen_at": now},
        "devices": [
            {"id": "virtual-speck2fdevkit:0", "device_type": "speck2fdevkit"},
            {"id": "speck2fdevkit:0", "device_type": "speck2fdevkit"},
        ],
        "users": {"id": 1, "name": "alice", "role": "user", "created_at": now},
    }
    with db.write_session() as session:
        session.execute(insert(Host), rows["hosts"])
        for device in rows["devices"]:
            session.execute(
                insert(DeviceRecord.__table__).values(
                    **device, host_name="Bench", present=True, updated_at=now
                )
            )
        session.execute(insert(User), rows["users"])
        for device_id in ("virtual-speck2fdevkit:0", "speck2fdevkit:0", "virtual-gone:0"):
            session.execute(
                insert(Booking.__table__).values(
                    user_id=1,
                    device_id=device_id,
                    starts_at=now,
                    ends_at=now + timedelta(hours=1),
                    state="active",
                    created_at=now,
                )
            )
        session.commit()
    upgrade(db)
    with db.session() as session:
        devices = session.execute(text("SELECT id, name FROM devices ORDER BY id")).all()
        bookings = session.scalars(text("SELECT device_id FROM bookings ORDER BY id")).all()
    assert [tuple(row) for row in devices] == [
        ("speck2fdevkit:0", "speck2fdevkit:0"),
        ("virtual-speck2fdevkit:0@bench", "virtual-speck2fdevkit:0"),
    ]
    assert bookings == ["virtual-speck2fdevkit:0@bench", "speck2fdevkit:0", "virtual-gone:0"]
    db.dispose()


def _user(url: str, name: str) -> dict[str, str]:
    admin = bearer(ADMIN_TOKEN)
    user = httpx.post(f"{url}/v1/users", json={"name": name}, headers=admin).json()
    token = httpx.post(f"{url}/v1/tokens", json={"name": "t", "user_id": user["id"]}, headers=admin)
    return bearer(token.json()["token"])


def test_a_devkit_keeps_its_id_and_bookings_across_a_restart_and_a_replug(tmp_path: Path) -> None:
    env = {"SPECKLAB_ADMIN_TOKEN": ADMIN_TOKEN, "SPECKLAB_HOST_NAME": "bench-1"}
    plugged = {"SAMNA_DOUBLE_DEVICES": "Speck2fDevKit/A/1/3,Speck2fDevKit/B/1/5"}
    with run_daemon(tmp_path, env={**env, **plugged}, python_path=[DOUBLE_PATH]) as daemon:
        alice, bob = _user(daemon.url, "alice"), _user(daemon.url, "bob")
        booking = httpx.post(
            f"{daemon.url}/v1/bookings",
            json={"device_id": "speck2fdevkit:1", "minutes": 30},
            headers=alice,
        ).json()
        assert booking["device_id"] == "speck2fdevkit:sn-B"
    # B re-plugged into another port, and enumerated first when the daemon is back.
    replugged = {"SAMNA_DOUBLE_DEVICES": "Speck2fDevKit/B/1/2,Speck2fDevKit/A/2/9"}
    with run_daemon(tmp_path, env={**env, **replugged}, python_path=[DOUBLE_PATH]) as daemon:
        listed = httpx.get(f"{daemon.url}/v1/devices", headers=alice).json()["devices"]
        devices = {d["id"]: (d["name"], d["status"], d["booking"]) for d in listed}
        assert devices["speck2fdevkit:sn-A"] == ("speck2fdevkit:1", "free", None)
        name, status, held = devices["speck2fdevkit:sn-B"]
        assert (name, status, held["id"]) == ("speck2fdevkit:0", "booked", booking["id"])
        kept = httpx.get(f"{daemon.url}/v1/bookings/{booking['id']}", headers=alice).json()
        assert (kept["device_id"], kept["status"]) == ("speck2fdevkit:sn-B", "running")
        taken = httpx.post(
            f"{daemon.url}/v1/bookings",
            json={"device_id": "speck2fdevkit:sn-B", "minutes": 5},
            headers=bob,
        )
        assert (taken.status_code, taken.json()["code"]) == (409, "booking_conflict")
    assert "Traceback" not in daemon.log()
