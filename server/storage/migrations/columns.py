"""Column groups several revisions declare the same way.

Revisions are history: a helper here must keep building exactly what the revisions that use it
built when they were written. A new shape gets a new helper rather than a changed one.
"""

from __future__ import annotations

import sqlalchemy as sa

#: Every time is stored aware, in UTC.
TIME = sa.DateTime(timezone=True)
#: SQLite table option for ids that are never handed out twice (see revision 0003).
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


def user_id() -> sa.Column[int]:
    return sa.Column("user_id", sa.Integer(), nullable=False)


def user_foreign_key(
    table: str, column: str = "user_id", ondelete: str = "CASCADE"
) -> sa.ForeignKeyConstraint:
    """``column`` of ``table`` names a user; by default the row goes when its user goes."""
    return sa.ForeignKeyConstraint(
        [column], ["users.id"], name=f"fk_{table}_{column}_users", ondelete=ondelete
    )
