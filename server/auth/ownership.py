"""Users see and manage only what they own; admins see everything; observers also see the
lab's activity (``lab_activity``: bookings), but nobody else's tokens, models or recordings.

Anything a user owns has a ``user_id`` column. Someone else's row answers 404, exactly as a
missing one does, so ids do not reveal what exists.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from specklab.schemas.errors import DomainError

from ..storage.tables import User
from .principal import Principal


class Owned(Protocol):
    id: Any
    user_id: Any


T = TypeVar("T", bound=Owned)
S = TypeVar("S", bound=Select[Any])


def _sees_all(user: Principal, lab_activity: bool) -> bool:
    return user.watches_lab if lab_activity else user.is_admin


def visible_to(
    query: S,
    owner_column: InstrumentedAttribute[int],
    user: Principal,
    *,
    lab_activity: bool = False,
) -> S:
    """``query`` limited to ``user``'s rows, unless ``user`` is an admin (or, for
    ``lab_activity``, an observer)."""
    if _sees_all(user, lab_activity):
        return query
    return query.where(owner_column == user.id)


def visible_rows(session: Session, model: type[T], user: Principal) -> list[tuple[T, str]]:
    """The rows of ``model`` that ``user`` sees (see :func:`visible_to`), oldest first, each
    with its owner's name."""
    query = select(model, User.name).join(User, model.user_id == User.id).order_by(model.id)
    if not _sees_all(user, lab_activity=False):
        query = query.where(model.user_id == user.id)
    return [(row, owner) for row, owner in session.execute(query)]


def get_owned(
    session: Session,
    model: type[T],
    row_id: int,
    user: Principal,
    *,
    what: str,
    lab_activity: bool = False,
) -> T:
    """The row ``row_id`` of ``model`` if ``user`` owns it or is an admin (or, for
    ``lab_activity``, an observer); 404 otherwise."""
    row = session.get(model, row_id)
    if row is None or not (_sees_all(user, lab_activity) or row.user_id == user.id):
        raise DomainError(404, f"{what}_not_found", f"no {what} {row_id}")
    return row
