"""Job chunks name the booked device that runs them (none: the evaluation workers).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_chunks") as batch:
        batch.add_column(sa.Column("device", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_chunks") as batch:
        batch.drop_column("device")
