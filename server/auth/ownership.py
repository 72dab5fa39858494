"""Users see and manage only what they own; admins see everything.

Anything a user owns has a ``user_id`` column. Someone else's row answers 404, exactly as a
missing one does, so ids do not reveal what exists.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from specklab.schemas.errors import DomainError

from .principal import Principal


class Owned(Protocol):
    user_id: Any


T = TypeVar("T", bound=Owned)
S = TypeVar("S", bound=Select[Any])


def visible_to(query: S, owner_column: InstrumentedAttribute[int], user: Principal) -> S:
    """``query`` limited to ``user``'s rows, unless ``user`` is an admin."""
    return query if user.is_admin else query.where(owner_column == user.id)


def get_owned(session: Session, model: type[T], row_id: int, user: Principal, *, what: str) -> T:
    """The row ``row_id`` of ``model`` if ``user`` owns it or is an admin; 404 otherwise."""
    row = session.get(model, row_id)
    if row is None or not (user.is_admin or row.user_id == user.id):
        raise DomainError(404, f"{what}_not_found", f"no {what} {row_id}")
    return row
