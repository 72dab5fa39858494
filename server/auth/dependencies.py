"""FastAPI dependencies for identity and database sessions (aliases in ``api/deps.py``).

The token comes from ``Authorization: Bearer <token>``, or from a ``token`` query parameter for
clients that cannot set headers (browsers' WebSocket API). ``require_user`` is applied to every
router except the public meta router when the app includes them, so new routes need a token
without asking; on a WebSocket a refusal is an HTTP 401/403 answer to the handshake.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import nullcontext
from typing import Annotated

import anyio
from fastapi import Depends
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from specklab.schemas.errors import DomainError

from ..storage import Database
from .accounts import Authenticator
from .principal import Principal

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_write(conn: HTTPConnection) -> bool:
    """An HTTP request that may change something. WebSockets are not: what they may do is
    decided by the booking they need (``require_active_booking``)."""
    return conn.scope["type"] == "http" and conn.scope["method"] not in SAFE_METHODS


def bearer_token(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization")
    if header is None:
        return conn.query_params.get("token") or None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise DomainError(
            401,
            "unauthorized",
            "the Authorization header must be 'Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


def get_db(conn: HTTPConnection) -> Database:
    return conn.app.state.db


#: Requests that may write, in flight at once: each may wait on a lock (SQLite's write lock, a
#: row lock) while holding a request thread, and the request holding the lock may need a free
#: thread to finish (serializing its response); this bound keeps threads free for it.
MAX_WRITE_REQUESTS = 16


class SessionLimits:
    """Per app (anyio limiters belong to one event loop): made in the lifespan."""

    def __init__(self) -> None:
        self.writers = anyio.CapacityLimiter(MAX_WRITE_REQUESTS)
        # Closing never waits for a request thread (see MAX_WRITE_REQUESTS).
        self.closers = anyio.CapacityLimiter(8)


async def get_session(conn: HTTPConnection) -> AsyncIterator[Session]:
    """One session per request; a request that may write holds SQLite's write lock from its
    first statement to its commit (see ``storage.db``)."""
    db: Database = conn.app.state.db
    limits: SessionLimits = conn.app.state.session_limits
    write = is_write(conn)
    async with limits.writers if write else nullcontext():
        session = db.write_session() if write else db.session()
        try:
            yield session
        finally:
            await anyio.to_thread.run_sync(session.close, limiter=limits.closers)


def require_user(conn: HTTPConnection) -> Principal:
    """The caller; 401 without a valid token, 403 for an observer's write."""
    authenticator: Authenticator = conn.app.state.auth
    user = authenticator.authenticate(bearer_token(conn))
    if is_write(conn) and not user.can_write:
        raise DomainError(403, "read_only", f"{user.name} is an observer: observers can only read")
    return user


async def require_writer(user: Annotated[Principal, Depends(require_user)]) -> Principal:
    if not user.can_write:
        raise DomainError(403, "read_only", f"{user.name} is an observer: observers can only read")
    return user


async def require_admin(user: Annotated[Principal, Depends(require_user)]) -> Principal:
    if not user.is_admin:
        raise DomainError(403, "admin_only", "this needs an admin")
    return user
