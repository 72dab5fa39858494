"""Run the packaged alembic migrations programmatically (no alembic.ini needed)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from .db import Database

MIGRATIONS = Path(__file__).with_name("migrations")
#: Key of the PostgreSQL advisory lock that lets one daemon of a lab set the database up at a
#: time (several daemons may start at once against one database).
STARTUP_LOCK_KEY = 0x5EC41AB


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def lock_for_startup(connection: Connection) -> None:
    """Serialize start-up work across daemons sharing a PostgreSQL database (until commit).

    SQLite needs nothing: a write transaction already holds the database's only write lock.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": STARTUP_LOCK_KEY})


def upgrade(db: Database, revision: str = "head") -> None:
    with (
        db.write_engine.connect() as connection,
        _foreign_keys_off(connection),
        connection.begin(),
    ):
        lock_for_startup(connection)
        command.upgrade(alembic_config(connection), revision)
        _check_foreign_keys(connection)


@contextmanager
def _foreign_keys_off(connection: Connection) -> Iterator[None]:
    """On SQLite, foreign keys off while migrating: a migration that rebuilds a table drops
    the old one, and with foreign keys on that would delete (cascade) its children's rows.

    The pragma is a no-op inside a transaction, so it goes to the driver's connection before
    SQLAlchemy begins one.
    """
    if connection.dialect.name != "sqlite":
        yield
        return
    raw = connection.connection.driver_connection
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


def _check_foreign_keys(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"a migration broke foreign keys: {broken[:5]}")


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
