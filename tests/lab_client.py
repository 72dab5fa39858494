"""An in-process daemon (the ASGI app with its lifespan) on a test database, with helpers to
make users and tokens through the API."""

from __future__ import annotations

import copy
import json
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from specklab.server.app import create_app
from specklab.server.settings import Settings
from specklab.server.storage import Database

ADMIN_TOKEN = "spk_test-admin-token-0123456789"

#: The OpenAPI schema by route set. An app builds it in its lifespan, in most of the second of
#: CPU an in-process lab takes to start, and the same routes give the same schema.
_openapi_schemas: dict[Hashable, dict[str, Any]] = {}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Lab:
    app: FastAPI
    client: TestClient

    @property
    def db(self) -> Database:
        return self.app.state.db

    @property
    def admin(self) -> dict[str, str]:
        return bearer(ADMIN_TOKEN)

    def add_user(self, name: str, role: str = "user") -> tuple[int, str]:
        """A new user and a token of theirs: (user id, token)."""
        response = self.client.post(
            "/v1/users", json={"name": name, "role": role}, headers=self.admin
        )
        assert response.status_code == 201, response.text
        user_id = response.json()["id"]
        response = self.client.post(
            "/v1/tokens", json={"name": "test", "user_id": user_id}, headers=self.admin
        )
        assert response.status_code == 201, response.text
        return user_id, response.json()["token"]

    def deploy(
        self, token: str, device: str, model: bytes, input_shape: list[int], name: str
    ) -> None:
        """Upload ``model`` (TorchScript, file ``name``) as the token's user and deploy it on
        ``device`` (booked by them), every layer monitored."""
        uploaded = self.client.post(
            "/v1/models",
            files={"file": (name, model)},
            data={"options": json.dumps({"input_shape": input_shape})},
            headers=bearer(token),
        )
        assert uploaded.status_code == 201, uploaded.text
        deployed = self.client.post(
            f"/v1/devices/{device}/deployment",
            json={"model_id": uploaded.json()["id"], "monitor_layers": "all"},
            headers=bearer(token),
        )
        assert deployed.status_code == 201, deployed.text


@contextmanager
def running_lab(data_dir: Path, database_url: str, **settings: Any) -> Iterator[Lab]:
    options: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "admin_token": ADMIN_TOKEN,
        "host_name": "test-host",
        "public_url": "http://test-host:8765",
        # The tests put their devices in the lab themselves (``db_fixtures.add_devices``).
        "virtual": [],
        **settings,
    }
    app = create_app(Settings(**options))
    routes = _route_set(app)
    if routes in _openapi_schemas:
        # FastAPI's documented way to supply a schema; a copy each, as a test may change its.
        schema = copy.deepcopy(_openapi_schemas[routes])
        app.openapi = lambda: schema  # type: ignore[method-assign]
    with TestClient(app) as client:
        _openapi_schemas.setdefault(routes, app.openapi())
        yield Lab(app, client)


def _route_set(app: FastAPI) -> Hashable:
    return frozenset(
        (type(route).__name__, route.path, frozenset(getattr(route, "methods", None) or ()))
        for route in app.routes
        if hasattr(route, "path")
    )


@pytest.fixture
def lab(tmp_path: Path, migrated_database_url: str) -> Iterator[Lab]:
    with running_lab(tmp_path / "data", migrated_database_url) as running:
        yield running
