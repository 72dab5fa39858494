"""Database backends for tests: every DB-using test runs on SQLite, and on PostgreSQL too when
``SPECKLAB_TEST_POSTGRES_URL`` names a server (``.ci/postgres.sh`` starts a throwaway one).

Each PostgreSQL test gets a database of its own, created from that URL and dropped afterwards.
A test that needs the newest schema gets a copy of a database migrated once per session and
backend: migrating takes a second or more, copying a file or a template database milliseconds.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from specklab.schemas.events import DVS_DTYPE, EventKind
from specklab.server.booking import lab
from specklab.server.recordings import RecordingService
from specklab.server.storage import Database, normalize_url, upgrade, utcnow
from specklab.server.storage.tables import RecordingRecord

from .rows import placeholder_row

POSTGRES_ENV = "SPECKLAB_TEST_POSTGRES_URL"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def postgres_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


@contextmanager
def fresh_postgres_database(server_url: str, template: str | None = None) -> Iterator[str]:
    """A new database on the server of ``server_url``, empty or a copy of the database named
    ``template`` (which nobody may be connected to); dropped on exit."""
    name = f"specklab_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalize_url(server_url), isolation_level="AUTOCOMMIT")
    copy_of = f' TEMPLATE "{template}"' if template else ""
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"{copy_of}')
        try:
            yield (
                make_url(normalize_url(server_url))
                .set(database=name)
                .render_as_string(hide_password=False)
            )
        finally:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def _postgres_server() -> str:
    server = postgres_url()
    if server is None:
        pytest.skip(f"no PostgreSQL: set {POSTGRES_ENV} (see .ci/postgres.sh)")
    return server


@contextmanager
def backend_url(backend: str, directory: Path, template: str | None = None) -> Iterator[str]:
    """A URL of a new database in ``directory`` (SQLite) or on the server (PostgreSQL): empty,
    or a copy of ``template`` (a URL from :class:`MigratedTemplates`)."""
    if backend == "sqlite":
        path = directory / "specklab.db"
        if template is not None:
            shutil.copyfile(str(make_url(template).database), path)
        yield f"sqlite:///{path}"
        return
    name = None if template is None else make_url(template).database
    with fresh_postgres_database(_postgres_server(), template=name) as url:
        yield url


class MigratedTemplates:
    """Per backend, a database migrated to the newest schema, made on first use and kept
    for the session; nothing stays connected to it, so that it can be copied."""

    def __init__(self, directory: Path, cleanup: ExitStack) -> None:
        self._directory = directory
        self._cleanup = cleanup
        self._urls: dict[str, str] = {}

    def url(self, backend: str) -> str:
        if backend not in self._urls:
            url = self._cleanup.enter_context(backend_url(backend, self._directory))
            database = Database(url, host_name="test-host")
            try:
                upgrade(database)
            finally:
                database.dispose()
            self._urls[backend] = url
        return self._urls[backend]


@pytest.fixture(scope="session")
def migrated_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigratedTemplates]:
    with ExitStack() as cleanup:
        yield MigratedTemplates(tmp_path_factory.mktemp("template"), cleanup)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database, once per backend."""
    with backend_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def migrated_database_url(
    request: pytest.FixtureRequest, tmp_path: Path, migrated_templates: MigratedTemplates
) -> Iterator[str]:
    """A URL of a database as migrations leave it, once per backend."""
    with backend_url(request.param, tmp_path, migrated_templates.url(request.param)) as url:
        yield url


@pytest.fixture
def db(migrated_database_url: str) -> Iterator[Database]:
    """A migrated database, once per backend."""
    database = Database(migrated_database_url, host_name="test-host")
    yield database
    database.dispose()


def add_devices(
    db: Database, *devices: tuple[str, str], host: str = "bench", now: datetime | None = None
) -> None:
    """Put devices (id, type) in the lab as served by a live ``host``; a device's name is its
    id up to any ``@``."""
    now = now or utcnow()
    with db.write_session() as session:
        lab.check_in(session, name=host, url=f"http://{host}.invalid:8765", now=now)
        lab.sync_devices(
            session,
            host_name=host,
            devices=[
                lab.LocalDevice(device_id, device_id.partition("@")[0], device_type, True)
                for device_id, device_type in devices
            ],
            now=now,
            stale_after=lab.host_stale_after(5.0),
        )
        session.commit()


def stored_recording(store: RecordingService, user_id: int, events: np.ndarray) -> int:
    """A recording of ``events`` owned by ``user_id``, as if recorded: its row and its file."""
    kind = EventKind.DVS if events.dtype == DVS_DTYPE else EventKind.SPIKE
    with store.db.write_session() as session:
        record = placeholder_row(
            RecordingRecord,
            user_id,
            kind=kind.value,
            event_count=len(events),
            size_bytes=events.nbytes,
        )
        session.add(record)
        session.commit()
    np.save(store.npy_path(record.id), events, allow_pickle=False)
    return record.id
