"""First start: the lab's first admin, so someone holds a token."""

from __future__ import annotations

import logging
import sys

from sqlalchemy import func, select

from specklab.schemas.accounts import Role

from ..settings import Settings
from ..storage import Database
from ..storage.migrate import lock_for_startup
from ..storage.tables import User
from .accounts import create_user, issue_token

log = logging.getLogger("specklab.auth")

ADMIN_NAME = "admin"


def ensure_admin(db: Database, settings: Settings) -> str | None:
    """Create user ``admin`` and a token for it when the database has no user yet.

    The token is ``settings.admin_token`` when set, else a new one, which is returned so the
    caller can show it: it is logged and printed to stderr once, and never again.
    """
    with db.write_session() as session:
        # Daemons of one lab may start together: one creates the admin, the others see it.
        lock_for_startup(session.connection())
        if session.scalar(select(func.count()).select_from(User)):
            return None
        admin = create_user(session, name=ADMIN_NAME, role=Role.ADMIN, actor=None)
        configured = settings.admin_token.get_secret_value() or None
        _, secret = issue_token(
            session,
            user=admin,
            name="first admin token",
            expires_in=None,
            actor=None,
            secret=configured,
        )
        session.commit()
    if configured:
        log.info("created user %r with the token from SPECKLAB_ADMIN_TOKEN", ADMIN_NAME)
        return None
    log.warning("created user %r; its API token (shown once): %s", ADMIN_NAME, secret)
    print(
        f"specklab: first start: user {ADMIN_NAME!r}, API token (shown once): {secret}",
        file=sys.stderr,
        flush=True,
    )
    return secret
