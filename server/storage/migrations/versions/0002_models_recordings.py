"""Uploaded models and recordings, both owned by users.

Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from specklab.server.storage.migrations.columns import TIME, user_foreign_key, user_id

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        user_id(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("options_key", sa.String(64), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        user_foreign_key("models"),
    )
    op.create_index("ix_models_user_id", "models", ["user_id"])
    op.create_index("ix_models_sha256", "models", ["sha256"])
    op.create_table(
        "recordings",
        sa.Column("id", sa.Integer(), nullable=False),
        user_id(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_recordings"),
        user_foreign_key("recordings"),
    )
    op.create_index("ix_recordings_user_id", "recordings", ["user_id"])


def downgrade() -> None:
    op.drop_table("recordings")
    op.drop_table("models")
