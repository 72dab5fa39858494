"""API tokens: everyone manages their own; admins may name another user."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from specklab.schemas.accounts import TokenCreate, TokenCreated, TokenPublic
from specklab.schemas.errors import DomainError

from ..auth import accounts
from ..auth.ownership import get_owned
from ..auth.principal import Principal
from ..storage.tables import ApiToken
from .deps import CurrentUser, RowId, SessionDep, WriterUser

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])


def _target_user_id(user: Principal, user_id: int | None) -> int:
    if user_id is None or user_id == user.id:
        return user.id
    if not user.is_admin:
        raise DomainError(403, "admin_only", "only admins manage other users' tokens")
    return user_id


@router.post("", response_model=TokenCreated, status_code=201)
def create_token(body: TokenCreate, session: SessionDep, user: WriterUser) -> TokenCreated:
    owner = accounts.get_user(session, user_id=_target_user_id(user, body.user_id))
    lifetime = timedelta(days=body.expires_in_days) if body.expires_in_days else None
    token, secret = accounts.issue_token(
        session, user=owner, name=body.name, expires_in=lifetime, actor=user
    )
    session.commit()
    return TokenCreated(**accounts.token_public(token).model_dump(), token=secret)


@router.get("", response_model=list[TokenPublic])
def list_tokens(
    session: SessionDep, user: CurrentUser, user_id: RowId | None = None
) -> list[TokenPublic]:
    """Your tokens; an admin may ask for another user's (``user_id``)."""
    tokens = accounts.list_tokens(session, user_id=_target_user_id(user, user_id))
    return [accounts.token_public(token) for token in tokens]


@router.delete("/{token_id}", response_model=TokenPublic)
def revoke_token(token_id: RowId, session: SessionDep, user: WriterUser) -> TokenPublic:
    token = get_owned(session, ApiToken, token_id, user, what="token")
    accounts.revoke_token(session, token=token, actor=user)
    session.commit()
    return accounts.token_public(token)
