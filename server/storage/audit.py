"""The audit log: who booked, used, released or preempted what, and when."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from .tables import AuditEntry

#: Actor name of entries the daemon writes by itself (lease expiry, first start, the CLI).
SYSTEM_ACTOR = "specklab"


class Actor(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def name(self) -> str: ...


def audit(
    session: Session,
    actor: Actor | None,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Add an entry to ``session``: it is written with the caller's commit, or not at all.

    ``action`` is ``<resource>.<verb>`` (``booking.create``, ``device.deploy``); ``target`` names
    the thing acted on (``booking:12``, ``device:speck2fdevkit:0``, ``user:alice``).
    """
    entry = AuditEntry(
        actor_id=actor.id if actor else None,
        actor_name=actor.name if actor else SYSTEM_ACTOR,
        action=action,
        target=target,
        detail=detail,
        host_name=session.info.get("host_name", ""),
    )
    session.add(entry)
    return entry


def audit_entries(
    session: Session,
    *,
    action: str | None = None,
    actor_id: int | None = None,
    target: str | None = None,
    since: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> Sequence[AuditEntry]:
    """Entries newest first, each filter applied when given; ``action`` matches exactly, or by
    prefix when it ends with ``.`` (``booking.`` for every booking action)."""
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
    return session.scalars(query).all()
