"""The audit log: who booked, used, released or preempted what, and when."""

from __future__ import annotations

from typing import Any, Protocol

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
