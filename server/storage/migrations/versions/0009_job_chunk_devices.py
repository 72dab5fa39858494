"""Job chunks name the booked device that runs them (none: the evaluation workers);
datasets keep their longest sample's span and largest sample's event count (0 for the
datasets stored before: their jobs are not held to the per-sample limits at submit).

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
    with op.batch_alter_table("datasets") as batch:
        for name in ("longest_sample_us", "largest_sample_events"):
            batch.add_column(sa.Column(name, sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("largest_sample_events")
        batch.drop_column("longest_sample_us")
    with op.batch_alter_table("job_chunks") as batch:
        batch.drop_column("device")
