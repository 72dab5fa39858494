"""The audit log, for admins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from specklab.schemas.audit import AuditEntryPublic

from ..storage.audit import audit_entries
from .deps import AdminUser, RowId, SessionDep

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", response_model=list[AuditEntryPublic])
def list_audit(
    session: SessionDep,
    admin: AdminUser,
    action: str | None = None,
    actor_id: RowId | None = None,
    target: str | None = None,
    since: datetime | None = None,
    before_id: Annotated[RowId | None, Query(description="page back from this entry")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEntryPublic]:
    """Newest first. ``action`` matches exactly or by prefix with a trailing ``.``
    (``booking.`` for every booking action)."""
    entries = audit_entries(
        session,
        action=action,
        actor_id=actor_id,
        target=target,
        since=since,
        before_id=before_id,
        limit=limit,
    )
    return [AuditEntryPublic.model_validate(entry, from_attributes=True) for entry in entries]
