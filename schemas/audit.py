"""The audit log as the REST API shows it to admins."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class AuditEntryPublic(BaseModel):
    id: int
    at: datetime
    #: ``None`` for the daemon itself (lease expiry, start-up).
    actor_id: int | None
    actor_name: str
    #: ``<resource>.<verb>``, e.g. ``booking.create``, ``device.deploy``.
    action: str
    target: str
    detail: dict[str, Any] | None
    host_name: str
