"""Ids are never handed out twice: SQLite tables get AUTOINCREMENT.

Without it SQLite gives a new row the largest id + 1, so deleting the newest recording (or
booking, token, user, model) lets the next row take its id, and anything still naming the old
id (a file, a client's link, an export in flight) would reach the new row. PostgreSQL's
sequences never go back, so it needs nothing.

The tables are rebuilt (SQLite cannot add AUTOINCREMENT in place); ``storage.migrate`` turns
foreign keys off around migrations so dropping a parent table does not cascade into its
children. The rebuild drops the bookings triggers, which are created again.

Create Date: 2026-12-03
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0003"
down_revision = "0002"

#: Parents before children (the order matters only for readers: foreign keys are off).
TABLES = ("users", "api_tokens", "bookings", "audit_log", "models", "recordings")


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(
            table,
            recreate="always",
            table_kwargs={"sqlite_autoincrement": autoincrement},
        ):
            pass
    # The module name starts with a digit: it cannot be imported with a plain statement.
    initial = importlib.import_module("specklab.server.storage.migrations.versions.0001_initial")
    initial.create_sqlite_overlap_triggers()


def upgrade() -> None:
    _rebuild(autoincrement=True)


def downgrade() -> None:
    _rebuild(autoincrement=False)
