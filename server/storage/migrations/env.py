"""Alembic environment: always online, on the connection ``storage.migrate`` hands over."""

from __future__ import annotations

from alembic import context

from specklab.server.storage.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with specklab.server.storage.upgrade(), not alembic's CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
