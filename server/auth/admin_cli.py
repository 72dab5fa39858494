"""``specklab admin``: users and tokens, straight on the database of the configured data dir.

For the first admin token, a lost one, or scripting a lab's accounts without a running daemon.
Module-level imports stay in the standard library (the CLI must start fast).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

_ROLES = ("admin", "user", "observer")
#: The token lifetimes the API accepts too (``TokenCreate.expires_in_days``): 0 would have
#: meant "never" and a negative count a dead token, so both are refused.
_MIN_DAYS, _MAX_DAYS = 1, 3650


def _lifetime_days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if not _MIN_DAYS <= days <= _MAX_DAYS:
        raise argparse.ArgumentTypeError(
            f"{days} days: a token lives {_MIN_DAYS} to {_MAX_DAYS} days "
            "(--never-expires for one that never does)"
        )
    return days


def register(commands: argparse._SubParsersAction) -> None:
    admin = commands.add_parser("admin", help="manage users and API tokens (on the database)")
    admin.add_argument("--config", type=Path, help="TOML settings file (or SPECKLAB_CONFIG)")
    admin.add_argument("--data-dir", type=Path, help="the daemon's data dir (its SQLite db)")
    admin.add_argument("--database-url", help="SQLAlchemy URL (default: SQLite in the data dir)")
    admin.add_argument("--json", action="store_true", help="print JSON instead of text")
    actions = admin.add_subparsers(dest="admin_command", metavar="ACTION", required=True)

    create_user = actions.add_parser("create-user", help="add a user")
    create_user.add_argument("name")
    create_user.add_argument("--role", choices=_ROLES, default="user")
    actions.add_parser("list-users", help="list users")

    create_token = actions.add_parser("create-token", help="issue a token; prints it once")
    create_token.add_argument("user", help="user name")
    create_token.add_argument("--name", default="cli", help="what the token is for")
    lifetime = create_token.add_mutually_exclusive_group()
    lifetime.add_argument(
        "--days",
        type=_lifetime_days,
        default=90,
        help=f"days until it expires, {_MIN_DAYS}..{_MAX_DAYS} (default 90)",
    )
    # The flag's former name; `specklab token create` says --days.
    lifetime.add_argument(
        "--expires-days", dest="days", type=_lifetime_days, help=argparse.SUPPRESS
    )
    lifetime.add_argument("--never-expires", action="store_true")

    list_tokens = actions.add_parser("list-tokens", help="list tokens (never their secrets)")
    list_tokens.add_argument("user", nargs="?", help="only this user's")
    revoke = actions.add_parser("revoke-token", help="revoke a token by id")
    revoke.add_argument("token_id", type=int)
    for action in actions.choices.values():
        # Also after the action (``admin list-users --json``), without resetting one before it.
        action.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    admin.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from specklab.schemas.errors import DomainError

    from ..settings import load_settings
    from ..storage import Database, upgrade

    settings = load_settings(args.config, data_dir=args.data_dir, database_url=args.database_url)
    db = Database(settings.effective_database_url, host_name=settings.host_name)
    try:
        upgrade(db)
        with db.write_session() as session:
            _ACTIONS[args.admin_command](session, args)
            session.commit()
    except DomainError as error:
        print(f"specklab admin: {error.body.message}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
    return 0


def _say(args: argparse.Namespace, value: Any, text: str) -> None:
    """``value`` as JSON with ``--json``, else ``text``."""
    import json

    print(json.dumps(value, indent=2) if args.json else text)


def _create_user(session: Any, args: argparse.Namespace) -> None:
    from specklab.schemas.accounts import Role

    from .accounts import create_user, user_public

    user = create_user(session, name=args.name, role=Role(args.role), actor=None)
    session.flush()
    public = user_public(user).model_dump(mode="json")
    _say(args, public, f"created user {user.name} ({user.role})")


def _list_users(session: Any, args: argparse.Namespace) -> None:
    from .accounts import list_users, user_public

    users = list_users(session)
    text = "\n".join(f"{user.id}\t{user.name}\t{user.role}" for user in users)
    _say(args, [user_public(user).model_dump(mode="json") for user in users], text)


def _create_token(session: Any, args: argparse.Namespace) -> None:
    from datetime import timedelta

    from .accounts import get_user, issue_token, token_public

    user = get_user(session, name=args.user)
    lifetime = None if args.never_expires else timedelta(days=args.days)
    token, secret = issue_token(session, user=user, name=args.name, expires_in=lifetime, actor=None)
    session.flush()
    expiry = token.expires_at.isoformat() if token.expires_at else "never"
    if not args.json:
        print(f"token {token.id} for {user.name} (expires {expiry}); shown once:", file=sys.stderr)
    _say(args, {**token_public(token).model_dump(mode="json"), "token": secret}, secret)


def _list_tokens(session: Any, args: argparse.Namespace) -> None:
    from .accounts import get_user, list_tokens, token_public

    user_id = get_user(session, name=args.user).id if args.user else None
    tokens = list_tokens(session, user_id=user_id)
    lines = []
    for token in tokens:
        expires = token.expires_at.isoformat() if token.expires_at else "never"
        state = "revoked" if token.revoked_at else "active"
        lines.append(
            f"{token.id}\t{token.user.name}\t{token.name}\t{token.prefix}...\t{expires}\t{state}"
        )
    _say(args, [token_public(token).model_dump(mode="json") for token in tokens], "\n".join(lines))


def _revoke_token(session: Any, args: argparse.Namespace) -> None:
    from specklab.schemas.errors import DomainError

    from ..storage.tables import ApiToken
    from .accounts import revoke_token, token_public

    token = session.get(ApiToken, args.token_id)
    if token is None:
        raise DomainError(404, "token_not_found", f"no token {args.token_id}")
    revoke_token(session, token=token, actor=None)
    session.flush()
    text = f"revoked token {token.id} ({token.user.name}, {token.name})"
    _say(args, token_public(token).model_dump(mode="json"), text)


_ACTIONS = {
    "create-user": _create_user,
    "list-users": _list_users,
    "create-token": _create_token,
    "list-tokens": _list_tokens,
    "revoke-token": _revoke_token,
}
