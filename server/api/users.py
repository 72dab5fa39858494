"""Users: admins create, list, change and delete them; everyone reads themselves."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from specklab.schemas.accounts import UserCreate, UserName, UserPublic, UserUpdate

from ..auth import accounts
from ..booking.service import end_bookings_of
from ..storage.tables import RecordingRecord
from .deps import AdminUser, CurrentUser, EventsDep, RecordingsDep, SessionDep

router = APIRouter(prefix="/v1/users", tags=["users"])


@router.post("", response_model=UserPublic, status_code=201)
def create_user(body: UserCreate, session: SessionDep, admin: AdminUser) -> UserPublic:
    user = accounts.create_user(session, name=body.name, role=body.role, actor=admin)
    session.commit()
    return accounts.user_public(user)


@router.get("", response_model=list[UserPublic])
def list_users(session: SessionDep, admin: AdminUser) -> list[UserPublic]:
    return [accounts.user_public(user) for user in accounts.list_users(session)]


@router.get("/me", response_model=UserPublic)
def me(session: SessionDep, user: CurrentUser) -> UserPublic:
    return accounts.user_public(accounts.get_user(session, user_id=user.id))


@router.patch("/{name}", response_model=UserPublic)
def update_user(
    name: UserName, body: UserUpdate, session: SessionDep, admin: AdminUser
) -> UserPublic:
    """Change a user's role; 409 ``last_admin`` for the lab's last admin."""
    user = accounts.get_user(session, name=name)
    accounts.change_role(session, user=user, role=body.role, actor=admin)
    session.commit()
    return accounts.user_public(user)


@router.delete("/{name}", status_code=204)
def delete_user(
    name: UserName,
    session: SessionDep,
    admin: AdminUser,
    events: EventsDep,
    recordings: RecordingsDep,
) -> None:
    """Delete a user and everything they own: their bookings end first (running ones as
    preempted, so their streams are told), then tokens, models and recordings go. 409
    ``last_admin`` for the lab's last admin."""
    user = accounts.get_user(session, name=name)
    recorded = session.scalars(select(RecordingRecord.id).where(RecordingRecord.user_id == user.id))
    recording_ids = list(recorded)
    end_bookings_of(
        session, user_id=user.id, actor=admin, events=events, reason=f"{name}'s account was deleted"
    )
    accounts.delete_user(session, user=user, actor=admin)
    session.commit()
    for recording_id in recording_ids:
        recordings.npy_path(recording_id).unlink(missing_ok=True)
        recordings.aedat4_path(recording_id).unlink(missing_ok=True)
