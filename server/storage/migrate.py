"""Run the packaged alembic migrations programmatically (no alembic.ini needed)."""

from __future__ import annotations

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
    with db.write_engine.begin() as connection:
        lock_for_startup(connection)
        command.upgrade(alembic_config(connection), revision)


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
