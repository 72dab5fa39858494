"""Devices keep their host's short name next to their lab-wide id.

Ids used to be the short names (``virtual-speck2fdevkit:0``), unique per host only. Virtual
devkits' ids gain their host (``virtual-speck2fdevkit:0@host``), in the devices table and in the
bookings and recordings that name them; real devices' ids come from their serial number, which
only their daemon knows: their rows are replaced when it next checks in.

Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"

_NEW_ID = "devices.id || '@' || lower(devices.host_name)"


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("name", sa.String(128), nullable=True))
    op.execute("UPDATE devices SET name = id")
    for table in ("bookings", "recordings"):
        op.execute(
            f"UPDATE {table} SET device_id = (SELECT {_NEW_ID} FROM devices "
            f"WHERE devices.id = {table}.device_id) "
            f"WHERE device_id LIKE 'virtual-%' AND EXISTS "
            f"(SELECT 1 FROM devices WHERE devices.id = {table}.device_id)"
        )
    op.execute(f"UPDATE devices SET id = {_NEW_ID} WHERE id LIKE 'virtual-%'")
    with op.batch_alter_table("devices") as batch:
        batch.alter_column("name", existing_type=sa.String(128), nullable=False)
        batch.create_index("ix_devices_name", ["name"])


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_index("ix_devices_name")
        batch.drop_column("name")
