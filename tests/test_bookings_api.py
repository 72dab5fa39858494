"""Bookings through the REST API, on both backends: conflicts, limits, cancel, extend,
preemption with live notification, leases, the audit trail."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from specklab.schemas.accounts import Role
from specklab.schemas.errors import DomainError
from specklab.server.auth.principal import Principal
from specklab.server.booking.notifications import BookingEvents
from specklab.server.booking.service import require_active_booking, sweep_leases
from specklab.server.storage import utcnow

from .db_fixtures import add_devices
from .lab_client import Lab, bearer, running_lab

DEVICE = "speck2fdevkit:0"


def iso(moment: datetime) -> str:
    return moment.isoformat()


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture
def users(lab: Lab) -> dict[str, dict[str, str]]:
    add_devices(lab.db, (DEVICE, "speck2fdevkit"), ("speck2fdevkit:1", "speck2fdevkit"))
    return {name: bearer(lab.add_user(name)[1]) for name in ("alice", "bob")}


def book(lab: Lab, headers: dict[str, str], **body: object) -> dict:
    response = lab.client.post("/v1/bookings", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_two_users_one_device_the_loser_learns_when_it_is_free(
    lab: Lab, users: dict[str, dict[str, str]]
) -> None:
    alice = book(lab, users["alice"], device_id=DEVICE, minutes=30)
    assert (alice["status"], alice["user_name"]) == ("running", "alice")
    response = lab.client.post(
        "/v1/bookings", json={"device_id": DEVICE, "minutes": 20}, headers=users["bob"]
    )
    assert response.status_code == 409
    error = response.json()
    assert error["code"] == "booking_conflict"
    assert when(error["detail"]["next_free"]) == when(alice["ends_at"])
    bob = book(
        lab, users["bob"], device_id=DEVICE, starts_at=error["detail"]["next_free"], minutes=20
    )
    assert bob["status"] == "upcoming"
    # Each sees only their own bookings; the admin sees both.
    mine = lab.client.get("/v1/bookings", headers=users["bob"]).json()
    assert [b["id"] for b in mine] == [bob["id"]]
    everyone = lab.client.get("/v1/bookings", params={"device_id": DEVICE}, headers=lab.admin)
    assert {b["id"] for b in everyone.json()} == {alice["id"], bob["id"]}


def test_a_window_and_the_next_free_slot_of_a_type(
    lab: Lab, users: dict[str, dict[str, str]]
) -> None:
    start = utcnow() + timedelta(hours=2)
    first = book(
        lab,
        users["alice"],
        device_id=DEVICE,
        starts_at=iso(start),
        ends_at=iso(start + timedelta(minutes=45)),
    )
    assert when(first["ends_at"]) - when(first["starts_at"]) == timedelta(minutes=45)
    book(lab, users["alice"], device_id="speck2fdevkit:1", starts_at=iso(start), minutes=30)
    # Both devices are busy from `start`: refused with when the one free soonest (device 1,
    # after 30 min) is free, and that slot when asked for.
    refused = lab.client.post(
        "/v1/bookings",
        json={"device_type": "speck2fdevkit", "starts_at": iso(start), "minutes": 15},
        headers=users["bob"],
    )
    assert (refused.status_code, refused.json()["code"]) == (409, "booking_conflict")
    assert refused.json()["detail"]["device_id"] == "speck2fdevkit:1"
    assert when(refused.json()["detail"]["next_free"]) == start + timedelta(minutes=30)
    picked = book(
        lab,
        users["bob"],
        device_type="speck2fdevkit",
        starts_at=iso(start),
        minutes=15,
        next_free=True,
    )
    assert picked["device_id"] == "speck2fdevkit:1"
    assert when(picked["starts_at"]) == start + timedelta(minutes=30)
    unknown = lab.client.post(
        "/v1/bookings", json={"device_type": "speck2edevkit", "minutes": 5}, headers=users["bob"]
    )
    assert (unknown.status_code, unknown.json()["code"]) == (404, "device_not_found")
    missing = lab.client.post(
        "/v1/bookings", json={"device_id": "nope:0", "minutes": 5}, headers=users["bob"]
    )
    assert (missing.status_code, missing.json()["code"]) == (404, "device_not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"minutes": 5},
        {"device_id": DEVICE, "device_type": "speck2fdevkit", "minutes": 5},
        {"device_id": DEVICE},
        {"device_id": DEVICE, "minutes": 0},
        {"device_id": DEVICE, "minutes": 5, "ends_at": "2030-01-01T00:00:00Z"},
        {"device_id": DEVICE, "minutes": 5, "starts_at": "2030-01-01T00:00:00"},  # naive
    ],
)
def test_malformed_requests_are_refused(
    lab: Lab, users: dict[str, dict[str, str]], body: dict
) -> None:
    response = lab.client.post("/v1/bookings", json=body, headers=users["alice"])
    assert (response.status_code, response.json()["code"]) == (422, "invalid_request")


def test_a_window_in_the_past_is_refused(lab: Lab, users: dict[str, dict[str, str]]) -> None:
    past = utcnow() - timedelta(hours=1)
    response = lab.client.post(
        "/v1/bookings",
        json={"device_id": DEVICE, "starts_at": iso(past), "minutes": 10},
        headers=users["alice"],
    )
    assert (response.status_code, response.json()["code"]) == (422, "invalid_window")


def test_cancel_release_and_extend(lab: Lab, users: dict[str, dict[str, str]]) -> None:
    alice = book(lab, users["alice"], device_id=DEVICE, minutes=30)
    later = when(alice["ends_at"]) + timedelta(minutes=10)
    bob = book(lab, users["bob"], device_id=DEVICE, starts_at=iso(later), minutes=10)

    extended = lab.client.post(
        f"/v1/bookings/{alice['id']}/extend", json={"minutes": 10}, headers=users["alice"]
    )
    assert extended.status_code == 200
    assert when(extended.json()["ends_at"]) == later
    blocked = lab.client.post(
        f"/v1/bookings/{alice['id']}/extend", json={"minutes": 1}, headers=users["alice"]
    )
    assert (blocked.status_code, blocked.json()["code"]) == (409, "booking_conflict")
    assert when(blocked.json()["detail"]["free_until"]) == later

    cancelled = lab.client.delete(f"/v1/bookings/{bob['id']}", headers=users["bob"])
    assert cancelled.json()["status"] == "cancelled"
    released = lab.client.delete(f"/v1/bookings/{alice['id']}", headers=users["alice"])
    assert released.json()["status"] == "released"
    again = lab.client.delete(f"/v1/bookings/{alice['id']}", headers=users["alice"])
    assert (again.status_code, again.json()["code"]) == (409, "booking_over")
    # The device is free at once.
    assert book(lab, users["bob"], device_id=DEVICE, minutes=5)["status"] == "running"


def test_length_and_daily_quota(tmp_path: Path, database_url: str) -> None:
    with running_lab(
        tmp_path, database_url, booking_max_minutes=60, booking_daily_quota_minutes=90
    ) as lab:
        add_devices(lab.db, (DEVICE, "speck2fdevkit"))
        alice = bearer(lab.add_user("alice")[1])
        # Tomorrow noon (UTC), so that the whole day's quota is free.
        noon = (utcnow() + timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
        too_long = lab.client.post(
            "/v1/bookings",
            json={"device_id": DEVICE, "starts_at": iso(noon), "minutes": 61},
            headers=alice,
        )
        assert (too_long.status_code, too_long.json()["code"]) == (422, "booking_too_long")
        book(lab, alice, device_id=DEVICE, starts_at=iso(noon), minutes=60)
        over = lab.client.post(
            "/v1/bookings",
            json={"device_id": DEVICE, "starts_at": iso(noon + timedelta(hours=2)), "minutes": 31},
            headers=alice,
        )
        assert (over.status_code, over.json()["code"]) == (409, "quota_exceeded")
        assert over.json()["detail"] == {
            "day": noon.date().isoformat(),
            "quota_minutes": 90,
            "used_minutes": 60,
        }
        book(lab, alice, device_id=DEVICE, starts_at=iso(noon + timedelta(hours=2)), minutes=30)
        # Admins are not held to the quota.
        book(lab, lab.admin, device_id=DEVICE, starts_at=iso(noon + timedelta(hours=4)), minutes=60)
        book(lab, lab.admin, device_id=DEVICE, starts_at=iso(noon + timedelta(hours=6)), minutes=60)


async def _next_event(events: BookingEvents, device_id: str, trigger) -> object:
    async with events.subscribe(device_id) as subscription:
        await asyncio.to_thread(trigger)
        return await asyncio.wait_for(subscription.get(), timeout=10)


def test_admin_preemption_tells_live_sessions(lab: Lab, users: dict[str, dict[str, str]]) -> None:
    alice = book(lab, users["alice"], device_id=DEVICE, minutes=30)
    refused = lab.client.post(f"/v1/bookings/{alice['id']}/preempt", headers=users["bob"])
    assert (refused.status_code, refused.json()["code"]) == (403, "admin_only")

    def preempt() -> None:
        response = lab.client.post(
            f"/v1/bookings/{alice['id']}/preempt", json={"reason": "demo"}, headers=lab.admin
        )
        assert response.json()["status"] == "preempted"

    event = asyncio.run(_next_event(lab.app.state.booking_events, DEVICE, preempt))
    assert (event.kind, event.booking_id, event.reason) == (
        "preempted",
        alice["id"],
        "preempted by admin: demo",
    )
    entries = lab.client.get("/v1/audit", params={"action": "booking."}, headers=lab.admin).json()
    assert [(e["action"], e["actor_name"]) for e in entries][:2] == [
        ("booking.preempt", "admin"),
        ("booking.create", "alice"),
    ]
    assert entries[0]["detail"] == {"device_id": DEVICE, "reason": "demo"}


def test_heartbeats_and_the_active_booking_check(
    lab: Lab, users: dict[str, dict[str, str]]
) -> None:
    upcoming = book(
        lab,
        users["alice"],
        device_id=DEVICE,
        starts_at=iso(utcnow() + timedelta(hours=1)),
        minutes=5,
    )
    early = lab.client.post(f"/v1/bookings/{upcoming['id']}/heartbeat", headers=users["alice"])
    assert (early.status_code, early.json()["code"]) == (409, "booking_not_running")

    running = book(lab, users["alice"], device_id=DEVICE, minutes=10)
    lease = lab.client.post(f"/v1/bookings/{running['id']}/heartbeat", headers=users["alice"])
    assert lease.status_code == 200
    assert when(lease.json()["expires_at"]) > when(lease.json()["renewed_at"])
    other = lab.client.post(f"/v1/bookings/{running['id']}/heartbeat", headers=users["bob"])
    assert other.status_code == 404

    alice_id = lab.client.get("/v1/users/me", headers=users["alice"]).json()["id"]
    bob_id = lab.client.get("/v1/users/me", headers=users["bob"]).json()["id"]
    with lab.db.session() as session:
        held = require_active_booking(session, Principal(alice_id, "alice", Role.USER), DEVICE)
        assert held.id == running["id"]
        cases = [
            (Principal(bob_id, "bob", Role.USER), DEVICE, 409, "device_booked"),
            (Principal(bob_id, "bob", Role.OBSERVER), DEVICE, 403, "read_only"),
            (Principal(alice_id, "alice", Role.USER), "speck2fdevkit:1", 409, "not_booked"),
        ]
        for principal, device, status, code in cases:
            with pytest.raises(DomainError) as refused:
                require_active_booking(session, principal, device)
            assert (refused.value.status, refused.value.body.code) == (status, code)
        assert refused.value.body.detail["next_free"]


@pytest.fixture
def fast_leases(tmp_path: Path, database_url: str) -> Iterator[Lab]:
    with running_lab(
        tmp_path,
        database_url,
        booking_idle_s=1.5,
        sweep_interval_s=0.1,
    ) as lab:
        add_devices(lab.db, (DEVICE, "speck2fdevkit"))
        yield lab


def _wait_status(
    lab: Lab, headers: dict[str, str], booking_id: int, status: str, timeout: float = 10
) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if lab.client.get(f"/v1/bookings/{booking_id}", headers=headers).json()["status"] == status:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"booking {booking_id} not {status} after {timeout}s")


def test_an_abandoned_lease_frees_the_device(fast_leases: Lab) -> None:
    lab = fast_leases
    alice, bob = (bearer(lab.add_user(name)[1]) for name in ("alice", "bob"))
    booking = book(lab, alice, device_id=DEVICE, minutes=30)

    def beat_then_leave() -> None:
        # Heartbeats keep the lease for longer than its timeout...
        for _ in range(25):
            response = lab.client.post(f"/v1/bookings/{booking['id']}/heartbeat", headers=alice)
            assert response.status_code == 200, response.text
            time.sleep(0.1)

    event = asyncio.run(
        _next_event(
            lab.app.state.booking_events,
            DEVICE,
            lambda: (beat_then_leave(), _wait_status(lab, alice, booking["id"], "expired")),
        )
    )
    # ... and the silence after them ends it: the device is free, the session was told.
    assert (event.kind, event.booking_id, event.reason) == (
        "ended",
        booking["id"],
        "idle for 0.025 minutes",
    )
    assert book(lab, bob, device_id=DEVICE, minutes=5)["status"] == "running"
    expiry = lab.client.get(
        "/v1/audit", params={"action": "booking.expire"}, headers=lab.admin
    ).json()
    assert expiry[0]["actor_name"] == "specklab"
    assert expiry[0]["detail"] == {"device_id": DEVICE, "reason": "idle for 0.025 minutes"}


def test_a_booking_lives_until_its_holder_leaves_it_unused_for_the_idle_time(
    lab: Lab, users: dict[str, dict[str, str]]
) -> None:
    booking = book(lab, users["alice"], device_id=DEVICE, minutes=120)
    start = when(booking["starts_at"])
    policy, events = lab.app.state.booking_policy, lab.app.state.booking_events
    assert policy.idle == timedelta(minutes=30)  # the default: well above a coffee break
    alice_id = lab.client.get("/v1/users/me", headers=users["alice"]).json()["id"]
    alice = Principal(alice_id, "alice", Role.USER)

    def sweep(minutes: float) -> list[int]:
        with lab.db.write_session() as session:
            ended = sweep_leases(
                session, policy=policy, events=events, now=start + timedelta(minutes=minutes)
            )
            session.commit()
            return [b.id for b in ended]

    # A 10-minute pause and more: never used, it lasts 30 minutes from its start.
    assert sweep(29.9) == []
    # Any use (a deploy or stream asks for the booking) restarts the idle time.
    with lab.db.write_session() as session:
        require_active_booking(session, alice, DEVICE, now=start + timedelta(minutes=25))
        session.commit()
    assert sweep(54.9) == []
    shown = lab.client.get(f"/v1/bookings/{booking['id']}", headers=users["alice"]).json()
    assert when(shown["lease_expires_at"]) == start + timedelta(minutes=55)
    assert sweep(55) == [booking["id"]]

    over = lab.client.get(f"/v1/bookings/{booking['id']}", headers=users["alice"]).json()
    assert (over["status"], over["end_reason"]) == ("expired", "idle for 30 minutes")
    with lab.db.session() as session, pytest.raises(DomainError) as refused:
        require_active_booking(session, alice, DEVICE, now=start + timedelta(minutes=56))
    body = refused.value.body
    assert (body.code, body.detail["end_reason"]) == ("not_booked", "idle for 30 minutes")
    assert f"booking {booking['id']}" in body.message and "idle for 30 minutes" in body.message
    assert "POST /v1/bookings" not in body.message


def test_every_end_of_a_booking_says_why(lab: Lab, users: dict[str, dict[str, str]]) -> None:
    released = book(lab, users["alice"], device_id=DEVICE, minutes=10)
    preempted = book(lab, users["bob"], device_id="speck2fdevkit:1", minutes=10)
    lab.client.delete(f"/v1/bookings/{released['id']}", headers=users["alice"])
    lab.client.post(
        f"/v1/bookings/{preempted['id']}/preempt", json={"reason": "maintenance"}, headers=lab.admin
    )
    reasons = {
        b["id"]: b["end_reason"] for b in lab.client.get("/v1/bookings", headers=lab.admin).json()
    }
    assert reasons == {
        released["id"]: "released by its holder",
        preempted["id"]: "preempted by admin: maintenance",
    }
    again = lab.client.post(f"/v1/bookings/{preempted['id']}/heartbeat", headers=users["bob"])
    assert again.status_code == 409
    assert "preempted by admin: maintenance" in again.json()["message"]
    extend = lab.client.post(
        f"/v1/bookings/{released['id']}/extend", json={"minutes": 5}, headers=users["alice"]
    )
    assert extend.json()["detail"]["end_reason"] == "released by its holder"


def test_huge_and_far_away_windows_are_refused_with_a_4xx(
    lab: Lab, users: dict[str, dict[str, str]]
) -> None:
    year_9999 = "9999-12-31T23:00:00+00:00"
    for body, code in [
        ({"minutes": 10**15}, "booking_too_long"),
        ({"minutes": 2**64}, "booking_too_long"),
        ({"starts_at": year_9999, "minutes": 30}, "too_far_ahead"),
        ({"starts_at": year_9999, "ends_at": "9999-12-31T23:59:59+00:00"}, "too_far_ahead"),
        ({"ends_at": "9999-12-31T23:59:59+00:00"}, "booking_too_long"),
    ]:
        response = lab.client.post(
            "/v1/bookings", json={"device_id": DEVICE, **body}, headers=users["alice"]
        )
        assert (response.status_code, response.json()["code"]) == (422, code), body
    booking = book(lab, users["alice"], device_id=DEVICE, minutes=30)
    for body in ({"minutes": 10**15}, {"ends_at": "9999-12-31T23:59:59+00:00"}):
        response = lab.client.post(
            f"/v1/bookings/{booking['id']}/extend", json=body, headers=users["alice"]
        )
        assert (response.status_code, response.json()["code"]) == (422, "booking_too_long")


def test_ids_out_of_range_are_a_422_not_a_500(lab: Lab) -> None:
    routes = [
        ("GET", "/v1/bookings/{n}"),
        ("DELETE", "/v1/bookings/{n}"),
        ("POST", "/v1/bookings/{n}/heartbeat"),
        ("GET", "/v1/bookings?user_id={n}"),
        ("GET", "/v1/tokens?user_id={n}"),
        ("DELETE", "/v1/tokens/{n}"),
        ("GET", "/v1/audit?actor_id={n}"),
        ("GET", "/v1/audit?before_id={n}"),
        ("GET", "/v1/recordings/{n}"),
        ("DELETE", "/v1/recordings/{n}"),
    ]
    for method, path in routes:
        for number in (2**31, 2**63, 2**64, 10**30, 0, -1):
            response = lab.client.request(method, path.format(n=number), headers=lab.admin)
            assert response.status_code == 422, (method, path, number, response.text)
            assert response.json()["code"] == "invalid_request"


def test_numbers_no_route_bounds_are_still_a_4xx_with_an_error_body(lab: Lab) -> None:
    """The safety net of ``errors``: an id the database cannot hold, in a body this time."""
    for user_id in (2**31, 2**63, 2**64):
        response = lab.client.post(
            "/v1/tokens", json={"name": "t", "user_id": user_id}, headers=lab.admin
        )
        assert response.status_code in (404, 422), response.text
        assert set(response.json()) == {"code", "message", "detail"}


def test_a_booking_waiting_for_a_type_starts_when_a_device_of_it_frees(
    lab: Lab, users: dict[str, dict[str, str]]
) -> None:
    users.update({name: bearer(lab.add_user(name)[1]) for name in ("carol", "dave")})
    holders = [
        book(lab, users["alice"], device_id=device, minutes=60)
        for device in (DEVICE, "speck2fdevkit:1")
    ]
    fixed = book(lab, users["carol"], device_id=DEVICE, starts_at=holders[0]["ends_at"], minutes=10)

    def wait_for_one(name: str) -> dict:
        waiting = book(lab, users[name], device_type="speck2fdevkit", minutes=15, next_free=True)
        assert (waiting["status"], waiting["waits_for_type"]) == ("upcoming", "speck2fdevkit")
        return waiting

    def shown(booking: dict, name: str) -> dict:
        return lab.client.get(f"/v1/bookings/{booking['id']}", headers=users[name]).json()

    # Its holder releases device 1: bob's booking moves there and runs from now, as long.
    bob = wait_for_one("bob")
    released = lab.client.delete(f"/v1/bookings/{holders[1]['id']}", headers=users["alice"])
    assert released.status_code == 200, released.text
    started = shown(bob, "bob")
    assert (started["status"], started["device_id"]) == ("running", "speck2fdevkit:1")
    assert when(started["ends_at"]) - when(started["starts_at"]) == timedelta(minutes=15)
    assert started["waits_for_type"] is None
    # carol's booking of a fixed time does not move; dave's waiting one does, on a preemption.
    dave = wait_for_one("dave")
    preempted = lab.client.post(
        f"/v1/bookings/{holders[0]['id']}/preempt", json={"reason": "x"}, headers=lab.admin
    )
    assert preempted.status_code == 200, preempted.text
    assert (shown(dave, "dave")["status"], shown(dave, "dave")["device_id"]) == ("running", DEVICE)
    assert shown(fixed, "carol")["starts_at"] == fixed["starts_at"]
    moves = lab.client.get(
        "/v1/audit", params={"action": "booking.start_early"}, headers=lab.admin
    ).json()
    assert {entry["target"] for entry in moves} == {f"booking:{bob['id']}", f"booking:{dave['id']}"}


def test_a_waiting_booking_starts_when_the_holder_idles_out(
    lab: Lab, users: dict[str, dict[str, str]]
) -> None:
    holders = [
        book(lab, users["alice"], device_id=device, minutes=120)
        for device in (DEVICE, "speck2fdevkit:1")
    ]
    waiting = book(lab, users["bob"], device_type="speck2fdevkit", minutes=30, next_free=True)
    assert when(waiting["starts_at"]) == when(holders[0]["ends_at"])
    policy, events = lab.app.state.booking_policy, lab.app.state.booking_events
    idle_out = when(holders[0]["starts_at"]) + policy.idle + timedelta(seconds=1)
    with lab.db.write_session() as session:
        assert len(sweep_leases(session, policy=policy, events=events, now=idle_out)) == 2
        session.commit()
    moved = lab.client.get(f"/v1/bookings/{waiting['id']}", headers=users["bob"]).json()
    assert when(moved["starts_at"]) == idle_out
    assert when(moved["ends_at"]) == idle_out + timedelta(minutes=30)
