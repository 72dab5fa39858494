"""The lab's copy of stored files (model uploads, compiled results, recordings), in chunks, so
that every host of a lab on one PostgreSQL reads what one host stored (``docs/scaling.md``).

Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.create_table(
        "lab_blobs",
        sa.Column("store", sa.String(16), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("store", "name", name="pk_lab_blobs"),
    )
    op.create_table(
        "lab_blob_chunks",
        sa.Column("store", sa.String(16), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("store", "name", "seq", name="pk_lab_blob_chunks"),
    )


def downgrade() -> None:
    op.drop_table("lab_blob_chunks")
    op.drop_table("lab_blobs")
