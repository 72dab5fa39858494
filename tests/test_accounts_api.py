"""Users and API tokens through the REST API and the ``specklab admin`` CLI."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from specklab.client.cli import main

from .db_fixtures import add_devices
from .lab_client import Lab, bearer


def test_users_are_made_by_admins(lab: Lab) -> None:
    me = lab.client.get("/v1/users/me", headers=lab.admin).json()
    assert (me["name"], me["role"]) == ("admin", "admin")
    _, alice = lab.add_user("alice")
    assert lab.client.get("/v1/users/me", headers=bearer(alice)).json()["role"] == "user"
    twice = lab.client.post("/v1/users", json={"name": "alice"}, headers=lab.admin)
    assert (twice.status_code, twice.json()["code"]) == (409, "user_exists")
    bad = lab.client.post(
        "/v1/users", json={"name": "no spaces", "role": "user"}, headers=lab.admin
    )
    assert bad.status_code == 422
    names = [u["name"] for u in lab.client.get("/v1/users", headers=lab.admin).json()]
    assert names == ["admin", "alice"]


def test_tokens_are_shown_once_listed_and_revoked(lab: Lab) -> None:
    alice_id, alice = lab.add_user("alice")
    created = lab.client.post(
        "/v1/tokens", json={"name": "laptop", "expires_in_days": None}, headers=bearer(alice)
    )
    assert created.status_code == 201
    token = created.json()
    assert token["token"].startswith("spk_") and token["prefix"] == token["token"][:12]
    assert (token["user_id"], token["expires_at"]) == (alice_id, None)
    listed = lab.client.get("/v1/tokens", headers=bearer(alice)).json()
    assert [t["name"] for t in listed] == ["test", "laptop"]
    assert all("token" not in t for t in listed)
    assert token["token"] not in httpx.Response(200, json=listed).text

    new = bearer(token["token"])
    assert lab.client.get("/v1/users/me", headers=new).status_code == 200
    revoked = lab.client.delete(f"/v1/tokens/{token['id']}", headers=bearer(alice))
    assert revoked.json()["revoked_at"] is not None
    refused = lab.client.get("/v1/users/me", headers=new)
    assert (refused.status_code, refused.json()["code"]) == (401, "token_revoked")
    # A token given as a query parameter works like the header (for WebSocket clients).
    assert lab.client.get("/v1/users/me", params={"token": alice}).status_code == 200


def test_admins_manage_other_users_tokens_and_users_do_not(lab: Lab) -> None:
    alice_id, alice = lab.add_user("alice")
    bob_id, _ = lab.add_user("bob")
    for_bob = lab.client.post(
        "/v1/tokens", json={"name": "ci", "user_id": bob_id}, headers=lab.admin
    )
    assert for_bob.json()["user_id"] == bob_id
    listed = lab.client.get("/v1/tokens", params={"user_id": bob_id}, headers=lab.admin).json()
    assert {t["name"] for t in listed} == {"test", "ci"}
    for method, path, body in [
        ("POST", "/v1/tokens", {"name": "x", "user_id": bob_id}),
        ("GET", f"/v1/tokens?user_id={bob_id}", None),
    ]:
        response = lab.client.request(method, path, json=body, headers=bearer(alice))
        assert (response.status_code, response.json()["code"]) == (403, "admin_only")
    assert (
        lab.client.delete(f"/v1/tokens/{for_bob.json()['id']}", headers=bearer(alice)).status_code
        == 404
    )
    missing = lab.client.post("/v1/tokens", json={"name": "x", "user_id": 999}, headers=lab.admin)
    assert missing.status_code == 404
    assert alice_id != bob_id


def test_admins_change_roles_and_delete_users_but_keep_an_admin(lab: Lab) -> None:
    add_devices(lab.db, ("speck2fdevkit:0", "speck2fdevkit"))
    _, alice = lab.add_user("alice")
    _, bob = lab.add_user("bob")
    refused = lab.client.patch("/v1/users/alice", json={"role": "admin"}, headers=bearer(bob))
    assert (refused.status_code, refused.json()["code"]) == (403, "admin_only")
    assert lab.client.delete("/v1/users/alice", headers=bearer(bob)).status_code == 403
    # The last admin can be neither demoted nor deleted.
    for response in (
        lab.client.patch("/v1/users/admin", json={"role": "user"}, headers=lab.admin),
        lab.client.delete("/v1/users/admin", headers=lab.admin),
    ):
        assert (response.status_code, response.json()["code"]) == (409, "last_admin")
    promoted = lab.client.patch("/v1/users/alice", json={"role": "admin"}, headers=lab.admin)
    assert (promoted.status_code, promoted.json()["role"]) == (200, "admin")
    assert lab.client.get("/v1/users", headers=bearer(alice)).status_code == 200
    demoted = lab.client.patch("/v1/users/admin", json={"role": "observer"}, headers=bearer(alice))
    assert demoted.json()["role"] == "observer"
    assert lab.client.get("/v1/users", headers=lab.admin).status_code == 403
    for bad in ({"role": "root"}, {"role": "user", "name": "x"}, {}):
        assert lab.client.patch("/v1/users/bob", json=bad, headers=bearer(alice)).status_code == 422
    missing = lab.client.delete("/v1/users/nobody", headers=bearer(alice))
    assert (missing.status_code, missing.json()["code"]) == (404, "user_not_found")

    # Deleting bob ends his running booking (told as a preemption), then he is gone.
    booked = lab.client.post(
        "/v1/bookings", json={"device_id": "speck2fdevkit:0", "minutes": 10}, headers=bearer(bob)
    )
    assert booked.status_code == 201, booked.text
    assert lab.client.delete("/v1/users/bob", headers=bearer(alice)).status_code == 204
    assert lab.client.get("/v1/users/me", headers=bearer(bob)).status_code == 401
    users = lab.client.get("/v1/users", headers=bearer(alice)).json()
    assert [u["name"] for u in users] == ["admin", "alice"]
    assert lab.client.get("/v1/bookings", headers=bearer(alice)).json() == []
    device = lab.client.get("/v1/devices/speck2fdevkit:0", headers=bearer(alice))
    assert device.json()["booking"] is None
    audit = lab.client.get("/v1/audit", headers=bearer(alice)).json()
    actions = [(e["action"], e["target"]) for e in audit]
    assert ("user.delete", "user:bob") in actions and (
        "booking.preempt",
        f"booking:{booked.json()['id']}",
    ) in actions
    assert ("user.role", "user:admin") in actions and ("user.role", "user:alice") in actions


def test_observers_read_but_do_not_write(lab: Lab) -> None:
    _, olga = lab.add_user("olga", role="observer")
    assert lab.client.get("/v1/bookings", headers=bearer(olga)).status_code == 200
    assert lab.client.get("/v1/tokens", headers=bearer(olga)).status_code == 200
    refused = lab.client.post("/v1/tokens", json={"name": "x"}, headers=bearer(olga))
    assert (refused.status_code, refused.json()["code"]) == (403, "read_only")


def test_admin_cli_works_on_the_data_dir_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    where = ["--data-dir", str(tmp_path), "--database-url", database_url]
    assert main(["admin", *where, "create-user", "carol", "--role", "observer"]) == 0
    assert capsys.readouterr().out == "created user carol (observer)\n"
    assert main(["admin", *where, "create-token", "carol", "--name", "laptop"]) == 0
    out = capsys.readouterr()
    secret = out.out.strip()
    assert secret.startswith("spk_") and "shown once" in out.err
    assert main(["admin", *where, "list-tokens", "carol"]) == 0
    listing = capsys.readouterr().out
    assert "laptop" in listing and secret not in listing and secret[:12] in listing
    assert main(["admin", *where, "list-users"]) == 0
    assert "carol\tobserver" in capsys.readouterr().out
    assert main(["admin", *where, "revoke-token", "1"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["admin", *where, "create-user", "carol"]) == 1
    assert "exists already" in capsys.readouterr().err
    assert main(["admin", *where, "create-token", "nobody"]) == 1
    assert "no user 'nobody'" in capsys.readouterr().err
