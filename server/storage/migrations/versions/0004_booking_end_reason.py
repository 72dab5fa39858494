"""Bookings keep why they ended early, in words for their holder.

Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.add_column("bookings", sa.Column("end_reason", sa.String(300), nullable=True))


def downgrade() -> None:
    op.drop_column("bookings", "end_reason")
