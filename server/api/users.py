"""Users: admins create and list them; everyone reads themselves."""

from __future__ import annotations

from fastapi import APIRouter

from specklab.schemas.accounts import UserCreate, UserPublic

from ..auth import accounts
from .deps import AdminUser, CurrentUser, SessionDep

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
