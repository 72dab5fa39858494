"""Per-user quotas on stored uploads (models, datasets): the same bytes held twice count once."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from specklab.schemas.errors import DomainError

from ..storage.tables import DatasetRecord, ModelRecord
from .principal import Principal

#: The tables of uploads a quota counts (each row: an owner, a digest and a size).
Uploads = type[ModelRecord] | type[DatasetRecord]


def stored_bytes(session: Session, table: Uploads, user_id: int) -> int:
    """Bytes of uploads the user's rows of ``table`` hold (the same upload counted once)."""
    distinct = (
        select(table.sha256, table.size_bytes).where(table.user_id == user_id).distinct().subquery()
    )
    return int(session.scalar(select(func.coalesce(func.sum(distinct.c.size_bytes), 0))) or 0)


def check_quota(
    session: Session, table: Uploads, user: Principal, digest: str, size: int, quota: int
) -> None:
    """DomainError 413 when an upload of ``size`` bytes would take the user past ``quota``."""
    held = session.scalar(select(table.id).where(table.user_id == user.id, table.sha256 == digest))
    if held is not None:  # the same bytes again cost nothing
        return
    used = stored_bytes(session, table, user.id)
    if used + size > quota:
        what = table.__tablename__
        raise DomainError(
            413,
            "quota_exceeded",
            f"{user.name}'s {what} hold {used} bytes of a quota of {quota}; this upload, "
            f"{size} bytes as stored, does not fit (delete {what} to make room)",
            detail={"quota_bytes": quota, "used_bytes": used, "upload_bytes": size},
        )
