"""Engine and sessions for SQLite (one host) and PostgreSQL (a lab of several hosts).

Writes on SQLite are serialized with ``BEGIN IMMEDIATE``: a write session takes the database's
write lock at its first statement, so a check-then-insert (the booking overlap check, quotas)
cannot interleave with another writer. Read sessions use a plain deferred ``BEGIN`` and never
block under WAL. On PostgreSQL both kinds are ordinary transactions; what must not race is
guaranteed by constraints (the bookings exclusion constraint) and row locks.
"""

from __future__ import annotations

import importlib
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

T = TypeVar("T")
_WRITE = "specklab_write"
_AFTER_COMMIT = "specklab_after_commit"
#: How long a SQLite writer waits for the lock before failing ("database is locked").
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: PostgreSQL's deadlock_detected and serialization_failure.
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
RETRY_ATTEMPTS = 6


def normalize_url(url: str) -> str:
    """Route plain ``postgresql://`` URLs to psycopg 3, the driver of the ``postgres`` extra."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _require_psycopg() -> None:
    # Single-host labs on SQLite do without it, so it comes with the `postgres` extra only.
    try:
        importlib.import_module("psycopg")
    except ImportError as exc:
        message = "PostgreSQL needs psycopg 3: pip install 'specklab[postgres]'"
        raise ModuleNotFoundError(message) from exc


class Database:
    def __init__(self, url: str, *, host_name: str = "") -> None:
        """``host_name`` names this daemon in what its sessions write (``session.info``)."""
        self.url = normalize_url(url)
        self.host_name = host_name
        parsed = make_url(self.url)
        if parsed.get_driver_name() == "psycopg":
            _require_psycopg()
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        # A server's connections can drop (restarts, idle timeouts); a file's cannot.
        kwargs: dict[str, Any] = {"pool_pre_ping": not self.is_sqlite}
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False}
        # Request threads (anyio's pool has 40) each hold at most one connection at a time.
        kwargs.update(pool_size=10, max_overflow=40)
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        self.write_engine: Engine = self.engine.execution_options(**{_WRITE: True})
        info = {"host_name": host_name}
        self._read = sessionmaker(self.engine, expire_on_commit=False, info=info)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False, info=info)
        for factory in (self._read, self._write):
            event.listen(factory, "after_commit", _run_after_commit)
            event.listen(factory, "after_transaction_end", _forget_after_rollback)

    def session(self) -> Session:
        """A session for reading (it may write, but on SQLite without taking the lock first)."""
        return self._read()

    def write_session(self) -> Session:
        """A session whose transactions hold SQLite's write lock from their first statement."""
        return self._write()

    async def run(self, work: Callable[[Session], T], *, write: bool = False) -> T:
        """``work(session)`` on a worker thread, in a session of its own (closed after)."""

        def in_session() -> T:
            with self.write_session() if write else self.session() as session:
                return work(session)

        return await anyio.to_thread.run_sync(in_session)

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite would defer it otherwise).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    _enter_wal_mode(cursor)
    for pragma in ("synchronous=NORMAL", "foreign_keys=ON"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _enter_wal_mode(cursor: sqlite3.Cursor) -> None:
    """``PRAGMA journal_mode=WAL``, retried while another connection holds the lock it needs.

    Switching a new database to WAL takes an exclusive lock that SQLite does not wait for
    through the busy timeout, so daemons (or threads) opening a fresh database together
    would otherwise fail with "database is locked".
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _sqlite_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get(_WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def is_retryable(error: DBAPIError) -> bool:
    """A transaction the database aborted to untangle concurrent ones (PostgreSQL's deadlock
    and serialization failures): running it again is the documented answer."""
    return getattr(error.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def commit_retrying(session: Session, work: Callable[[], T]) -> T:
    """``work()`` then commit; run again, in a fresh transaction, when the database aborted it
    for a deadlock or serialization failure (``work`` must read what it changes itself).

    The last failure propagates (the app answers 503, see ``errors``).
    """
    for attempt in range(RETRY_ATTEMPTS - 1):
        try:
            return _work_then_commit(session, work)
        except DBAPIError as error:
            session.rollback()
            if not is_retryable(error):
                raise
            # Jitter: the transactions that collided should not collide again.
            time.sleep(random.uniform(0, 0.02 * 2**attempt))
    return _work_then_commit(session, work)


def _work_then_commit(session: Session, work: Callable[[], T]) -> T:
    result = work()
    session.commit()
    return result


def on_commit(session: Session, callback: Callable[[], None]) -> None:
    """Call ``callback`` once the session's transaction has committed; never if it rolls back.

    For effects outside the database that must not run for a change that did not happen, such
    as telling live streams that their booking ended.
    """
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


def _run_after_commit(session: Session) -> None:
    for callback in session.info.pop(_AFTER_COMMIT, []):
        callback()


def _forget_after_rollback(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_AFTER_COMMIT, None)
