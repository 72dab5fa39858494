"""Bookings of a type that waited for a free device remember the type, so that the first device
of it to free early takes them at once.

Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.add_column("bookings", sa.Column("waits_for_type", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("bookings", "waits_for_type")
