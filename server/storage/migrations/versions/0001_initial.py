"""Users, API tokens, bookings (no overlaps, enforced by the database), hosts, devices, audit.

Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from specklab.server.storage.migrations.columns import TIME, user_foreign_key, user_id

revision = "0001"
down_revision = None

_OVERLAP = """
    SELECT RAISE(ABORT, 'booking_overlap') WHERE EXISTS (
        SELECT 1 FROM bookings AS other
        WHERE other.device_id = NEW.device_id AND other.state = 'active' {same}
          AND other.starts_at < NEW.ends_at AND NEW.starts_at < other.ends_at
    );
"""


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        user_id(),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("expires_at", TIME, nullable=True),
        sa.Column("revoked_at", TIME, nullable=True),
        sa.Column("last_used_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        user_foreign_key("api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])
    op.create_table(
        "bookings",
        sa.Column("id", sa.Integer(), nullable=False),
        user_id(),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("starts_at", TIME, nullable=False),
        sa.Column("ends_at", TIME, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("ended_at", TIME, nullable=True),
        sa.Column("lease_renewed_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_bookings"),
        user_foreign_key("bookings"),
        sa.CheckConstraint("ends_at > starts_at", name="ck_bookings_window"),
        sa.CheckConstraint(
            "state IN ('active', 'cancelled', 'released', 'preempted', 'expired')",
            name="ck_bookings_state",
        ),
    )
    op.create_index("ix_bookings_user_id", "bookings", ["user_id"])
    op.create_index("ix_bookings_device_id_starts_at", "bookings", ["device_id", "starts_at"])
    if op.get_bind().dialect.name == "postgresql":
        # btree_gist lets one GiST index combine equality on the device with range overlap.
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        op.execute(
            "ALTER TABLE bookings ADD CONSTRAINT ex_bookings_no_overlap EXCLUDE USING gist "
            "(device_id WITH =, tstzrange(starts_at, ends_at, '[)') WITH &&) "
            "WHERE (state = 'active')"
        )
    else:
        create_sqlite_overlap_triggers()
    op.create_table(
        "hosts",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("url", sa.String(512), nullable=False),
        sa.Column("last_seen_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_hosts"),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("device_type", sa.String(64), nullable=False),
        sa.Column("host_name", sa.String(128), nullable=False),
        sa.Column("present", sa.Boolean(), nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
        sa.ForeignKeyConstraint(["host_name"], ["hosts.name"], name="fk_devices_host_name_hosts"),
    )
    op.create_index("ix_devices_host_name", "devices", ["host_name"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor_name", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("host_name", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
        user_foreign_key("audit_log", "actor_id", ondelete="SET NULL"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_actor_id", "audit_log", ["actor_id"])
    op.create_index("ix_audit_log_action", "audit_log", ["action"])


def create_sqlite_overlap_triggers() -> None:
    """SQLite's no-overlap rule (also used by later migrations that rebuild ``bookings``)."""
    op.execute(
        "CREATE TRIGGER bookings_no_overlap_insert BEFORE INSERT ON bookings "
        f"WHEN NEW.state = 'active' BEGIN {_OVERLAP.format(same='')} END"
    )
    op.execute(
        "CREATE TRIGGER bookings_no_overlap_update "
        "BEFORE UPDATE OF device_id, starts_at, ends_at, state ON bookings "
        "WHEN NEW.state = 'active' BEGIN "
        f"{_OVERLAP.format(same='AND other.id != NEW.id')} END"
    )


def downgrade() -> None:
    for table in ("audit_log", "devices", "hosts", "bookings", "api_tokens", "users"):
        op.drop_table(table)
