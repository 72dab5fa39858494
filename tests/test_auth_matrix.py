"""Every route the app registers, against every kind of caller: 401 for missing, malformed,
unknown, expired and revoked tokens, 403 for observers writing and non-admins on admin routes,
404 for other users' resources, and never a 500. Routes are read from ``app.routes``, so routes
added later are covered without touching this file (new path parameters must be named below).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI, WebSocket
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute
from sqlalchemy import update
from starlette.routing import BaseRoute
from starlette.testclient import WebSocketDenialResponse

from specklab.schemas.accounts import Role
from specklab.server import app as app_module
from specklab.server.api import meta
from specklab.server.api.deps import CurrentUser
from specklab.server.auth.dependencies import require_admin
from specklab.server.auth.principal import Principal
from specklab.server.storage import utcnow
from specklab.server.storage.tables import (
    ApiToken,
    DatasetRecord,
    JobRecord,
    ModelRecord,
    RecordingRecord,
)

from .db_fixtures import BACKENDS, add_devices, backend_url
from .lab_client import ADMIN_TOKEN, Lab, bearer, running_lab
from .rows import placeholder_row

DOCS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
#: The dashboard's static pages (docs/dashboard.md): what they show comes from the API.
DASHBOARD = {"/", "/dashboard"}
PUBLIC = {route.path for route in [*meta.router.routes, *meta.metrics_router.routes]}
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
#: Path parameters that name something shared by the lab (a device, an account admins manage,
#: a part of what another parameter names) rather than owned by a user, and the value the
#: calls give them.
SHARED_PARAMETERS = {"device_id": "speck2fdevkit:0", "layer": "0", "name": "alice"}
#: Bodies that pass validation, for routes on owned resources whose body has required fields
#: (an invalid body answers 422 before ownership is looked at).
VALID_BODIES: dict[str, dict[str, object]] = {
    "/v1/bookings/{booking_id}/extend": {"minutes": 5},
    "/v1/recordings/{recording_id}/replay": {"device_id": "speck2fdevkit:0"},
}


def _alice_booking(lab: Lab, alice: dict[str, str]) -> str:
    add_devices(lab.db, ("speck2fdevkit:0", "speck2fdevkit"))
    body = {"device_id": "speck2fdevkit:0", "minutes": 30}
    response = lab.client.post("/v1/bookings", json=body, headers=alice)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _alice_token(lab: Lab, alice: dict[str, str]) -> str:
    return str(lab.client.get("/v1/tokens", headers=alice).json()[0]["id"])


def _alice_row(table: type, **columns: object) -> Callable[[Lab, dict[str, str]], str]:
    """A maker that writes alice's row straight into the database: ownership is all the
    matrix looks at, so no compile or recording needs to run."""

    def make(lab: Lab, alice: dict[str, str]) -> str:
        user_id = lab.client.get("/v1/users/me", headers=alice).json()["id"]
        with lab.db.write_session() as session:
            row = placeholder_row(table, user_id, **columns)
            session.add(row)
            session.commit()
            return str(row.id)

    return make


_alice_model = _alice_row(ModelRecord, options={"input_shape": [1, 28, 28]}, format="torchscript")
_alice_recording = _alice_row(RecordingRecord, device_id="speck2fdevkit:0")
_alice_dataset = _alice_row(DatasetRecord)
_alice_job = _alice_row(JobRecord)


def _alice_upload_in_flight(lab: Lab, alice: dict[str, str]) -> str:
    """An upload of alice's waiting to be compiled, as its X-Compile-Id registers it."""
    me = lab.client.get("/v1/users/me", headers=alice).json()
    lab.app.state.models.track(Principal(me["id"], me["name"], Role(me["role"])), "alice-upload")
    return "alice-upload"


#: Path parameter -> how to make something of that kind that alice owns (returns its id). A
#: router with a new kind of owned resource adds its maker here.
OWNED: dict[str, Callable[[Lab, dict[str, str]], str]] = {
    "booking_id": _alice_booking,
    "token_id": _alice_token,
    "model_id": _alice_model,
    "recording_id": _alice_recording,
    "compile_id": _alice_upload_in_flight,
    "dataset_id": _alice_dataset,
    "job_id": _alice_job,
}


@dataclass
class Callers:
    alice: str
    bob: str
    observer: str
    expired: str
    revoked: str
    #: Path parameter -> an id of something alice owns.
    owned: dict[str, str]


@pytest.fixture(scope="module", params=BACKENDS)
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One lab per backend for the whole module: the calls below change nothing."""
    directory = tmp_path_factory.mktemp("matrix")
    with backend_url(request.param, directory) as url, running_lab(directory / "data", url) as lab:
        yield lab


@pytest.fixture(scope="module")
def callers(lab: Lab) -> Callers:
    _, alice = lab.add_user("alice")
    _, bob = lab.add_user("bob")
    _, observer = lab.add_user("olga", role="observer")
    _, expired = lab.add_user("eve")
    _, revoked = lab.add_user("rita")
    with lab.db.write_session() as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.token_hash == _hash(expired))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    token_id = next(t["id"] for t in lab.client.get("/v1/tokens", headers=bearer(revoked)).json())
    assert lab.client.delete(f"/v1/tokens/{token_id}", headers=bearer(revoked)).status_code == 200
    owned = {name: make(lab, bearer(alice)) for name, make in OWNED.items()}
    return Callers(alice, bob, observer, expired, revoked, owned)


def _hash(token: str) -> str:
    from specklab.server.auth.tokens import hash_token

    return hash_token(token)


def _needs_admin(dependant: Dependant) -> bool:
    return any(d.call is require_admin or _needs_admin(d) for d in dependant.dependencies)


def _flatten(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    """(prefix, route) of every route, inside included routers too (recent FastAPI keeps an
    included router as one entry of ``app.routes``)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is None:
            yield prefix, route
        else:
            yield from _flatten(included.routes, prefix + route.include_context.prefix)


def _routes(app: FastAPI) -> Iterator[tuple[str, str, APIRoute | APIWebSocketRoute]]:
    for prefix, route in _flatten(app.routes):
        if isinstance(route, APIRoute) and prefix + route.path not in PUBLIC:
            for method in sorted(route.methods):
                yield method, prefix + route.path_format, route
        elif isinstance(route, APIWebSocketRoute):
            yield "WEBSOCKET", prefix + route.path_format, route


def _fill(path: str, owned: dict[str, str]) -> str:
    values = {**SHARED_PARAMETERS, **owned}
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: values[m[1]], path)


def _call(lab: Lab, method: str, path: str, headers: dict[str, str], template: str = "") -> int:
    if method == "WEBSOCKET":
        try:
            with lab.client.websocket_connect(path, headers=headers):
                return 101
        except WebSocketDenialResponse as denial:
            return denial.status_code
    body = VALID_BODIES.get(template, {}) if method in WRITES else None
    response: httpx.Response = lab.client.request(method, path, headers=headers, json=body)
    assert response.status_code != 500, f"{method} {path}: {response.text}"
    if response.status_code in (401, 403, 404):
        assert set(response.json()) == {"code", "message", "detail"}
    if response.status_code == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    return response.status_code


def test_only_meta_and_docs_are_public(lab: Lab) -> None:
    others = {
        prefix + getattr(route, "path", "")
        for prefix, route in _flatten(lab.app.routes)
        if not isinstance(route, APIRoute | APIWebSocketRoute)
    }
    public = DOCS | DASHBOARD
    assert others <= public, f"routes outside the API routers bypass auth: {others - public}"
    assert {"/v1/health", "/v1/health/live", "/v1/version", "/metrics"} == PUBLIC
    for path in PUBLIC | {"/docs", "/openapi.json"}:
        assert lab.client.get(path).status_code == 200


BAD_HEADERS: list[Callable[[Callers], dict[str, str]]] = [
    lambda c: {},
    lambda c: bearer("spk_not-a-token"),
    lambda c: {"Authorization": f"Basic {c.alice}"},
    lambda c: {"Authorization": "Bearer "},
    lambda c: bearer(c.expired),
    lambda c: bearer(c.revoked),
]


def test_every_route_refuses_bad_tokens(lab: Lab, callers: Callers) -> None:
    routes = list(_routes(lab.app))
    assert len(routes) >= 12
    for method, path, _ in routes:
        for headers in BAD_HEADERS:
            status = _call(lab, method, _fill(path, callers.owned), headers(callers))
            assert status == 401, f"{method} {path} with {headers(callers)} -> {status}"


def test_every_write_refuses_observers(lab: Lab, callers: Callers) -> None:
    for method, path, route in _routes(lab.app):
        status = _call(lab, method, _fill(path, callers.owned), bearer(callers.observer))
        if method in WRITES or _needs_admin(route.dependant):
            assert status == 403, f"observer {method} {path} -> {status}"
        else:
            assert status not in (401, 403), f"observer {method} {path} -> {status}"


def test_admin_routes_refuse_users(lab: Lab, callers: Callers) -> None:
    admin_routes = [(m, p) for m, p, r in _routes(lab.app) if _needs_admin(r.dependant)]
    assert ("GET", "/v1/audit") in admin_routes and ("POST", "/v1/users") in admin_routes
    for method, path in admin_routes:
        assert _call(lab, method, _fill(path, callers.owned), bearer(callers.bob)) == 403


def test_path_parameters_are_all_known(lab: Lab, callers: Callers) -> None:
    for _, path, _ in _routes(lab.app):
        for name in re.findall(r"\{(\w+)", path):
            assert name in callers.owned or name in SHARED_PARAMETERS, (
                f"{path}: add a maker of an owned {{{name}}} to OWNED in "
                "tests/test_auth_matrix.py (or list it in SHARED_PARAMETERS)"
            )


def test_other_users_resources_are_not_found(lab: Lab, callers: Callers) -> None:
    checked = 0
    for method, path, route in _routes(lab.app):
        if not any(f"{{{name}}}" in path for name in callers.owned):
            continue
        status = _call(lab, method, _fill(path, callers.owned), bearer(callers.bob), path)
        expected = 403 if _needs_admin(route.dependant) else 404
        assert status == expected, f"bob {method} {path} -> {status}"
        checked += 1
    assert checked >= 6
    # ... while alice reaches them (a 404 above is about ownership, not a wrong path).
    booking = callers.owned["booking_id"]
    assert (
        lab.client.get(f"/v1/bookings/{booking}", headers=bearer(callers.alice)).status_code == 200
    )


#: Owned resources an observer watches (the lab's activity); every other owned resource of
#: someone else answers an observer 404, as it answers any user.
WATCHED = {"booking_id"}


def test_observers_watch_the_lab_but_see_nobody_elses_things(lab: Lab, callers: Callers) -> None:
    observer = bearer(callers.observer)
    checked = set()
    for method, path, route in _routes(lab.app):
        names = set(re.findall(r"\{(\w+)", path)) & set(callers.owned)
        if method != "GET" or not names or _needs_admin(route.dependant):
            continue
        status = _call(lab, method, _fill(path, callers.owned), observer, path)
        expected = 200 if names <= WATCHED else 404
        assert status == expected, f"observer {method} {path} -> {status}"
        checked |= names
    assert checked >= {"booking_id", "model_id", "recording_id"}
    booking = int(callers.owned["booking_id"])
    listed = lab.client.get("/v1/bookings", headers=observer).json()
    assert booking in [b["id"] for b in listed]
    # ... while a user sees their own bookings only.
    assert booking not in [
        b["id"] for b in lab.client.get("/v1/bookings", headers=bearer(callers.bob)).json()
    ]


def test_routes_added_later_are_protected_too(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:

    probe = APIRouter(prefix="/v1/probe")

    @probe.get("/thing")
    def thing() -> dict[str, str]:
        return {"ok": "yes"}

    @probe.websocket("/stream")
    async def stream(websocket: WebSocket, user: CurrentUser) -> None:
        await websocket.accept()
        await websocket.send_text(f"hello {user.name}")
        await websocket.close()

    monkeypatch.setattr(app_module, "ROUTERS", [*app_module.ROUTERS, probe])
    with running_lab(tmp_path / "data", database_url) as lab:
        assert lab.client.get("/v1/probe/thing").status_code == 401
        assert lab.client.get("/v1/probe/thing", headers=lab.admin).json() == {"ok": "yes"}
        with (
            pytest.raises(WebSocketDenialResponse) as denied,
            lab.client.websocket_connect("/v1/probe/stream"),
        ):
            pass
        assert denied.value.status_code == 401
        assert denied.value.json()["code"] == "unauthorized"
        # The header, or a ``token`` query parameter where a client cannot set headers.
        for connect in (
            lambda: lab.client.websocket_connect("/v1/probe/stream", headers=lab.admin),
            lambda: lab.client.websocket_connect(f"/v1/probe/stream?token={ADMIN_TOKEN}"),
        ):
            with connect() as websocket:
                assert websocket.receive_text() == "hello admin"
