"""The test fixtures' shortcuts give what the long way gives: a database copied from the
session's migrated one is a database of its own at the newest schema, and an in-process lab
reuses the OpenAPI schema of the same routes instead of building it again."""

from __future__ import annotations

import json
from pathlib import Path

import fastapi.applications
import pytest
from sqlalchemy import func, select

from specklab.server.app import create_app
from specklab.server.storage import Database
from specklab.server.storage.migrate import current_revision, head_revision
from specklab.server.storage.tables import User

from .db_fixtures import MigratedTemplates, backend_url
from .lab_client import Lab, running_lab


def _users(url: str) -> int:
    database = Database(url)
    try:
        with database.engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(User)).scalar_one()
    finally:
        database.dispose()


def test_copies_of_the_migrated_database_are_databases_of_their_own(
    request: pytest.FixtureRequest,
    migrated_database_url: str,
    migrated_templates: MigratedTemplates,
    tmp_path: Path,
) -> None:
    backend = request.node.callspec.params["migrated_database_url"]
    database = Database(migrated_database_url)
    try:
        assert current_revision(database) == head_revision()
        with database.write_session() as session:
            session.add(User(name="only-here", role="user"))
            session.commit()
    finally:
        database.dispose()
    assert _users(migrated_database_url) == 1

    other_directory = tmp_path / "other"
    other_directory.mkdir()
    template = migrated_templates.url(backend)
    with backend_url(backend, other_directory, template) as other:
        assert _users(other) == 0
    assert _users(template) == 0


def test_a_lab_serves_the_schema_its_routes_make_and_the_next_lab_builds_none(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = create_app(lab.app.state.settings).openapi()
    assert lab.client.get("/openapi.json").json() == json.loads(json.dumps(built))

    builds: list[object] = []
    build = fastapi.applications.get_openapi

    def counted(**kwargs: object) -> dict:
        builds.append(kwargs)
        return build(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fastapi.applications, "get_openapi", counted)
    with running_lab(tmp_path / "next", f"sqlite:///{tmp_path / 'next.db'}") as next_lab:
        assert next_lab.client.get("/openapi.json").json() == json.loads(json.dumps(built))
    assert builds == []
