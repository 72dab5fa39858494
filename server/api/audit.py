"""The audit log, for admins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from specklab.schemas.audit import AuditEntryPublic

from ..storage.tables import AuditEntry
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
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if action is not None:
        query = query.where(
            AuditEntry.action.startswith(action)
            if action.endswith(".")
            else AuditEntry.action == action
        )
    if actor_id is not None:
        query = query.where(AuditEntry.actor_id == actor_id)
    if target is not None:
        query = query.where(AuditEntry.target == target)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    return [
        AuditEntryPublic.model_validate(entry, from_attributes=True)
        for entry in session.scalars(query)
    ]
