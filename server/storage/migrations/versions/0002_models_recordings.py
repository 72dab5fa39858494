"""Uploaded models and recordings, both owned by users.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def _owner() -> sa.Column:
    return sa.Column("user_id", sa.Integer(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        _owner(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("options_key", sa.String(64), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_models_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_models_user_id", "models", ["user_id"])
    op.create_index("ix_models_sha256", "models", ["sha256"])
    op.create_table(
        "recordings",
        sa.Column("id", sa.Integer(), nullable=False),
        _owner(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_recordings"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_recordings_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_recordings_user_id", "recordings", ["user_id"])


def downgrade() -> None:
    op.drop_table("recordings")
    op.drop_table("models")
