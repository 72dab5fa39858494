"""Calls that name their device in a JSON body (recordings) are routed by it: a device of a host
that is down is refused as offline, and a body the router cannot read reaches the endpoint,
which answers it (never a 500). The router resolves a call as the user the endpoint will judge.
Forwarding itself runs across real hosts in test_lab_hosts.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.exc import OperationalError

from specklab.server import forwarding
from specklab.server.forwarding import _caller
from specklab.server.storage import utcnow
from specklab.server.storage.tables import RecordingRecord

from .db_fixtures import add_devices
from .lab_client import Lab, bearer
from .rows import placeholder_row

GONE = "virtual-speck2fdevkit:0@host-gone"


@pytest.fixture
def alice(lab: Lab) -> dict[str, str]:
    return bearer(lab.add_user("alice")[1])


def test_a_recording_of_a_device_whose_host_is_down_is_refused_as_offline(lab: Lab) -> None:
    alice_id, token = lab.add_user("alice")
    add_devices(
        lab.db, (GONE, "speck2fdevkit"), host="host-gone", now=utcnow() - timedelta(hours=1)
    )
    with lab.db.write_session() as session:
        recording = placeholder_row(RecordingRecord, alice_id)
        session.add(recording)
        session.commit()
    for path in ("/v1/recordings", f"/v1/recordings/{recording.id}/replay"):
        body = {"device_id": GONE, "duration_s": 1}
        response = lab.client.post(path, json=body, headers=bearer(token))
        assert (response.status_code, response.json()["code"]) == (409, "device_offline"), path


@pytest.fixture
def bobs_recording_on_a_gone_host(lab: Lab) -> int:
    owner_id, _ = lab.add_user("bob")
    add_devices(lab.db, (GONE, "speck2fdevkit"), host="host-gone")
    with lab.db.write_session() as session:
        recording = placeholder_row(RecordingRecord, owner_id)
        session.add(recording)
        session.commit()
        return recording.id


def test_a_replay_of_a_recording_the_caller_cannot_see_is_not_found_not_forwarded(
    lab: Lab, alice: dict[str, str], bobs_recording_on_a_gone_host: int
) -> None:
    """Whatever the device's host, the router never forwards a replay of another user's (or
    no) recording: it is answered here as the endpoint answers it."""
    bobs = bobs_recording_on_a_gone_host
    for recording in (bobs, bobs + 1000, "not-a-number"):
        response = lab.client.post(
            f"/v1/recordings/{recording}/replay", json={"device_id": GONE}, headers=alice
        )
        assert response.status_code in (404, 422), response.text
        assert response.json()["code"] != "device_offline"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"device_id": 5, "duration_s": 1}',
        b'{"duration_s": 1}',
        b'{"device_id": "x", "name": "' + b"n" * 100_000 + b'", "duration_s": 1}',
    ],
    ids=["not-json", "a-list", "id-not-a-string", "no-id", "too-large-to-route"],
)
def test_a_body_the_router_cannot_read_reaches_the_endpoint(
    lab: Lab, alice: dict[str, str], body: bytes
) -> None:
    headers = {**alice, "content-type": "application/json"}
    response = lab.client.post("/v1/recordings", content=body, headers=headers)
    assert response.status_code == 422, response.text


def test_the_router_takes_the_token_the_endpoint_takes(lab: Lab) -> None:
    alice_id, alice = lab.add_user("alice")
    mallory_id, mallory = lab.add_user("mallory")
    headers = [
        (b"authorization", f"Bearer {mallory}".encode()),
        (b"sec-websocket-protocol", f"specklab.live, bearer.{alice}".encode()),
    ]
    # Only the live view reads a token from its subprotocols; everything else, the header.
    for kind, path, user_id in (
        ("http", f"/v1/devices/{GONE}/deployment", mallory_id),
        ("websocket", f"/v1/devices/{GONE}/stream", mallory_id),
        ("websocket", f"/v1/devices/{GONE}/live", alice_id),
    ):
        scope = {"type": kind, "path": path, "headers": headers, "query_string": b""}
        caller = _caller(lab.app.state, scope)
        assert caller is not None and caller.id == user_id, path


def test_a_replay_whose_visibility_lookup_fails_is_answered_by_the_endpoint(
    lab: Lab,
    alice: dict[str, str],
    bobs_recording_on_a_gone_host: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A database error in the router's own lookup is not a 500: the call goes on to the
    endpoint, which makes its own checks (here: not alice's recording, 404)."""

    def failing_lookup(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT", {}, Exception("connection lost"))

    monkeypatch.setattr(forwarding, "get_owned", failing_lookup)
    response = lab.client.post(
        f"/v1/recordings/{bobs_recording_on_a_gone_host}/replay",
        json={"device_id": GONE},
        headers=alice,
    )
    answer = (response.status_code, response.json()["code"])
    assert answer == (404, "recording_not_found"), response.text
