"""Users and API tokens in the database: keyword-only functions that take the session.

Functions that change something add an audit entry and leave the commit to the caller, so the
change and its record land together (or not at all).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from specklab.schemas.accounts import Role, TokenPublic, UserPublic
from specklab.schemas.errors import DomainError

from ..storage import Database, utcnow
from ..storage.audit import audit
from ..storage.public import public
from ..storage.tables import ApiToken, User
from .principal import Principal
from .tokens import display_prefix, hash_token, new_token

#: ``last_used_at`` is written at most this often per token and process (it costs a write).
TOUCH_INTERVAL_S = 60.0


def user_public(user: User) -> UserPublic:
    return public(UserPublic, user)


def token_public(token: ApiToken) -> TokenPublic:
    return public(TokenPublic, token)


def create_user(session: Session, *, name: str, role: Role, actor: Principal | None) -> User:
    user = User(name=name, role=role.value)
    try:
        with session.begin_nested():
            session.add(user)
    except IntegrityError:
        raise DomainError(409, "user_exists", f"a user named {name!r} exists already") from None
    audit(session, actor, "user.create", f"user:{name}", {"role": role.value})
    return user


def _keep_an_admin(session: Session, user: User, doing: str) -> None:
    """409 when ``doing`` would leave the lab without an admin."""
    if user.role != Role.ADMIN:
        return
    # The admins' rows locked: two admins demoting each other at once cannot both pass.
    admins = session.scalars(select(User.id).where(User.role == Role.ADMIN).with_for_update())
    if len(admins.all()) <= 1:
        raise DomainError(
            409, "last_admin", f"{user.name} is the last admin: make another admin before {doing}"
        )


def change_role(session: Session, *, user: User, role: Role, actor: Principal) -> User:
    if role != user.role:
        if role != Role.ADMIN:
            _keep_an_admin(session, user, f"making {user.name} {role.value}")
        audit(session, actor, "user.role", f"user:{user.name}", {"from": user.role, "to": role})
        user.role = role.value
    return user


def delete_user(session: Session, *, user: User, actor: Principal) -> None:
    """Delete ``user`` with their tokens, bookings, models and recordings (rows; the caller
    removes their files). End their bookings first (``booking.service.end_bookings_of``)."""
    _keep_an_admin(session, user, f"deleting {user.name}")
    audit(session, actor, "user.delete", f"user:{user.name}", {"role": user.role})
    session.delete(user)


def list_users(session: Session) -> Sequence[User]:
    return session.scalars(select(User).order_by(User.id)).all()


def get_user(session: Session, *, user_id: int | None = None, name: str | None = None) -> User:
    """By id or name; 404 ``user_not_found`` when there is none."""
    query = select(User).where(User.id == user_id if name is None else User.name == name)
    user = session.scalars(query).one_or_none()
    if user is None:
        raise DomainError(404, "user_not_found", f"no user {name or user_id!r}")
    return user


def issue_token(
    session: Session,
    *,
    user: User,
    name: str,
    expires_in: timedelta | None,
    actor: Principal | None,
    secret: str | None = None,
) -> tuple[ApiToken, str]:
    """Create a token for ``user``; returns it with its secret, which is never stored."""
    secret = secret or new_token()
    token = ApiToken(
        user=user,
        name=name,
        token_hash=hash_token(secret),
        prefix=display_prefix(secret),
        expires_at=utcnow() + expires_in if expires_in else None,
    )
    try:
        with session.begin_nested():
            session.add(token)
    except IntegrityError:  # only a caller-chosen secret can collide
        raise DomainError(409, "token_exists", "this token secret is in use already") from None
    audit(session, actor, "token.create", f"token:{token.id}", {"user": user.name, "name": name})
    return token, secret


def list_tokens(session: Session, *, user_id: int | None) -> Sequence[ApiToken]:
    """Tokens of one user, or of everyone with ``None``."""
    query = select(ApiToken).order_by(ApiToken.id)
    if user_id is not None:
        query = query.where(ApiToken.user_id == user_id)
    return session.scalars(query).all()


def revoke_token(session: Session, *, token: ApiToken, actor: Principal | None) -> ApiToken:
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        audit(session, actor, "token.revoke", f"token:{token.id}", {"user": token.user.name})
    return token


def _unauthorized(code: str, message: str) -> DomainError:
    return DomainError(401, code, message, headers={"WWW-Authenticate": "Bearer"})


def _valid(token: ApiToken | None, now: datetime) -> ApiToken:
    if token is None:
        raise _unauthorized("invalid_token", "the API token is not valid")
    if token.revoked_at is not None:
        raise _unauthorized("token_revoked", f"the API token {token.prefix}... was revoked")
    if token.expires_at is not None and token.expires_at <= now:
        raise _unauthorized("token_expired", f"the API token {token.prefix}... has expired")
    return token


class Authenticator:
    """Turns a bearer token into a :class:`Principal` with its own short sessions, so it is as
    usable from a WebSocket handler as from a request dependency."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._touched: dict[int, float] = {}
        self._lock = threading.Lock()

    def authenticate(self, secret: str | None, *, now: datetime | None = None) -> Principal:
        """The token's user; 401 (``WWW-Authenticate: Bearer``) for a missing, unknown,
        expired or revoked token."""
        if not secret:
            raise _unauthorized(
                "unauthorized", "an API token is required: send 'Authorization: Bearer <token>'"
            )
        now = now or utcnow()
        with self._db.session() as session:
            token = session.scalars(
                select(ApiToken).where(ApiToken.token_hash == hash_token(secret))
            ).one_or_none()
        token = _valid(token, now)
        self._touch(token.id, now)
        return Principal(
            id=token.user.id, name=token.user.name, role=Role(token.user.role), token_id=token.id
        )

    def revalidate(self, principal: Principal, *, now: datetime | None = None) -> None:
        """Check again that the token ``principal`` came with is valid (long-lived
        connections); the same 401s as :meth:`authenticate`."""
        if principal.token_id is None:
            return
        with self._db.session() as session:
            token = session.get(ApiToken, principal.token_id)
        _valid(token, now or utcnow())

    def _touch(self, token_id: int, now: datetime) -> None:
        with self._lock:
            last = self._touched.get(token_id, -TOUCH_INTERVAL_S)
            if time.monotonic() - last < TOUCH_INTERVAL_S:
                return
            self._touched[token_id] = time.monotonic()
        with self._db.write_session() as session:
            session.execute(
                update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now)
            )
            session.commit()
