"""The database layer on both backends: migrations, the no-overlap rule, times, commit hooks."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError

from specklab.server.storage import Database, normalize_url, on_commit, upgrade, utcnow
from specklab.server.storage.migrate import current_revision, head_revision
from specklab.server.storage.tables import (
    ApiToken,
    AuditEntry,
    Base,
    Booking,
    BookingState,
    ModelRecord,
    RecordingRecord,
    User,
    is_booking_overlap,
)

from .rows import placeholder_row


def test_migrations_build_exactly_the_tables(db: Database) -> None:
    assert current_revision(db) == head_revision()
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_upgrade_twice_is_harmless(db: Database) -> None:
    upgrade(db)
    assert current_revision(db) == head_revision()


def test_concurrent_start_ups_migrate_once(database_url: str) -> None:
    """Daemons of one lab may start together against one database."""
    databases = [Database(database_url) for _ in range(3)]
    assert _at_once(upgrade, databases) == []
    assert current_revision(databases[0]) == head_revision()
    for database in databases:
        database.dispose()


def test_a_fresh_sqlite_database_opened_by_many_at_once_is_never_locked(tmp_path: Path) -> None:
    """Entering WAL mode needs a lock SQLite's busy timeout does not wait for (retried)."""

    def read(database: Database) -> None:
        with database.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    for attempt in range(200):
        databases = [Database(f"sqlite:///{tmp_path / f'{attempt}.db'}") for _ in range(4)]
        assert _at_once(read, databases) == [], f"attempt {attempt}"
        for database in databases:
            database.dispose()


def _at_once(work: Callable[[Database], object], databases: list[Database]) -> list[Exception]:
    """``work`` on each database, each on its own thread, all released together; the errors."""
    together = threading.Barrier(len(databases))
    errors: list[Exception] = []

    def run(database: Database) -> None:
        together.wait()
        try:
            work(database)
        except Exception as error:  # reported by the caller
            errors.append(error)

    threads = [threading.Thread(target=run, args=(d,)) for d in databases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def _user(db: Database) -> int:
    with db.write_session() as session:
        user = User(name="u", role="user")
        session.add(user)
        session.commit()
        return user.id


def _booking(user_id: int, device: str, start: datetime, minutes: int, **extra: object) -> Booking:
    return Booking(
        user_id=user_id,
        device_id=device,
        starts_at=start,
        ends_at=start + timedelta(minutes=minutes),
        **extra,
    )


def test_the_database_refuses_overlapping_active_bookings(db: Database) -> None:
    user_id = _user(db)
    start = datetime(2030, 5, 1, 12, tzinfo=UTC)
    with db.write_session() as session:
        session.add(_booking(user_id, "d:0", start, 60))
        session.commit()
        session.add(_booking(user_id, "d:0", start + timedelta(minutes=59), 60))
        with pytest.raises(IntegrityError) as caught:
            session.commit()
        assert is_booking_overlap(caught.value)
        session.rollback()
        # Back to back, another device, or an inactive booking: all fine.
        session.add(_booking(user_id, "d:0", start + timedelta(minutes=60), 60))
        session.add(_booking(user_id, "d:1", start, 60))
        session.add(_booking(user_id, "d:0", start, 60, state=BookingState.CANCELLED))
        session.commit()


def test_the_database_refuses_an_extension_into_another_booking(db: Database) -> None:
    user_id = _user(db)
    start = datetime(2030, 5, 1, 12, tzinfo=UTC)
    with db.write_session() as session:
        first = _booking(user_id, "d:0", start, 60)
        session.add_all([first, _booking(user_id, "d:0", start + timedelta(minutes=90), 60)])
        session.commit()
        first.ends_at = start + timedelta(minutes=91)
        with pytest.raises(IntegrityError) as caught:
            session.commit()
        assert is_booking_overlap(caught.value)


def test_times_come_back_aware_utc_and_naive_ones_are_refused(db: Database) -> None:
    user_id = _user(db)
    local = datetime(2030, 5, 1, 14, 0, 0, 123456, tzinfo=UTC).astimezone(
        datetime.now().astimezone().tzinfo
    )
    with db.write_session() as session:
        session.add(_booking(user_id, "d:0", local, 10))
        session.commit()
    with db.session() as session:
        stored = session.scalars(select(Booking)).one()
        assert stored.starts_at == local and stored.starts_at.tzinfo is UTC
    with db.write_session() as session:
        session.add(_booking(user_id, "d:1", datetime(2030, 5, 1), 10))
        with pytest.raises(Exception, match="aware datetime"):
            session.commit()


def test_on_commit_runs_after_commit_only(db: Database) -> None:
    calls: list[str] = []
    with db.write_session() as session:
        session.add(User(name="a", role="user"))
        on_commit(session, lambda: calls.append("committed"))
        session.rollback()
        session.add(User(name="b", role="user"))
        on_commit(session, lambda: calls.append("second"))
        assert calls == []
        session.commit()
    assert calls == ["second"]


def test_audit_entries_name_the_host(db: Database) -> None:
    from specklab.server.storage.audit import SYSTEM_ACTOR, audit
    from specklab.server.storage.tables import AuditEntry

    with db.write_session() as session:
        audit(session, None, "device.deploy", "device:d:0", {"model": "m"})
        session.commit()
    with db.session() as session:
        entry = session.scalars(select(AuditEntry)).one()
    assert (entry.actor_name, entry.host_name, entry.detail) == (
        SYSTEM_ACTOR,
        "test-host",
        {"model": "m"},
    )
    assert utcnow() - entry.at < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["user.create", "booking.extend", "booking.create"]),
        ({"action": "booking."}, ["booking.extend", "booking.create"]),
        ({"action": "booking"}, []),
        ({"action": "booking.create"}, ["booking.create"]),
        ({"target": "user:ada"}, ["user.create"]),
        ({"limit": 1}, ["user.create"]),
        ({"before_id": 3}, ["booking.extend", "booking.create"]),
    ],
)
def test_audit_entries_filter_newest_first(
    db: Database, filters: dict[str, object], expected: list[str]
) -> None:
    from specklab.server.storage.audit import audit, audit_entries

    with db.write_session() as session:
        for action, target in [
            ("booking.create", "booking:1"),
            ("booking.extend", "booking:1"),
            ("user.create", "user:ada"),
        ]:
            audit(session, None, action, target)
        session.commit()
    with db.session() as session:
        assert [e.action for e in audit_entries(session, **filters)] == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgres://u@h:5433/db", "postgresql+psycopg://u@h:5433/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_postgres_urls_use_psycopg3(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


def _rows(user_id: int) -> dict[str, Callable[[], Base]]:
    """A fresh row of every table whose rows are deleted (and so whose ids could come back)."""
    start = datetime(2030, 5, 1, 12, tzinfo=UTC)
    counter = iter(range(1_000_000))
    return {
        "users": lambda: User(name=f"user-{next(counter)}", role="user"),
        "api_tokens": lambda: ApiToken(
            user_id=user_id, name="t", token_hash=f"{next(counter):064d}", prefix="spk_"
        ),
        # Each on a device of its own: the no-overlap rule stays out of the way.
        "bookings": lambda: _booking(user_id, f"d:{next(counter)}", start, 10),
        "audit_log": lambda: AuditEntry(actor_name="a", action="x", target="y", host_name="h"),
        "models": lambda: placeholder_row(ModelRecord, user_id),
        "recordings": lambda: placeholder_row(RecordingRecord, user_id),
    }


def _add(db: Database, row: Base) -> int:
    """Insert ``row`` with the columns it sets only, so it also fits the older schema a
    migration test starts from (columns added later are left to the migration)."""
    table = row.__table__
    values = {c.name: getattr(row, c.key) for c in table.columns if getattr(row, c.key) is not None}
    with db.write_session() as session:
        new_id = session.execute(insert(table).values(values).returning(table.c.id)).scalar_one()
        session.commit()
        return new_id


def test_a_deleted_rows_id_is_never_handed_out_again_even_after_a_restart(
    database_url: str,
) -> None:
    db = Database(database_url)
    upgrade(db)
    user_id = _user(db)
    makers = _rows(user_id)
    deleted = {}
    for table, make in makers.items():
        _add(db, make())
        newest = _add(db, make())
        with db.write_session() as session:
            session.execute(text(f"DELETE FROM {table} WHERE id = :id"), {"id": newest})
            session.commit()
        deleted[table] = newest
        # Within one run of the daemon...
        assert _add(db, make()) > newest, table
    db.dispose()
    # ...and in the next one, the newest rows deleted again.
    db = Database(database_url)
    for table, make in makers.items():
        newest = _add(db, make())
        with db.write_session() as session:
            session.execute(text(f"DELETE FROM {table} WHERE id = :id"), {"id": newest})
            session.commit()
        db.dispose()
        db = Database(database_url)
        assert _add(db, make()) > newest > deleted[table], table
    db.dispose()


def test_upgrading_to_never_reused_ids_keeps_every_row_and_rule(tmp_path: Path) -> None:
    """The SQLite migration rebuilds tables: no child row may be lost to a cascade."""
    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(db, "0002")
    user_id = _user(db)
    before = {table: [_add(db, make()) for _ in range(2)] for table, make in _rows(user_id).items()}
    with db.write_session() as session:
        gone = {"id": before["recordings"][1]}
        session.execute(text("DELETE FROM recordings WHERE id = :id"), gone)
        session.commit()
    upgrade(db)
    with db.session() as session:
        for table, ids in before.items():
            kept = set(session.scalars(text(f"SELECT id FROM {table}")))
            expected = set(ids) - ({ids[1]} if table == "recordings" else set())
            assert expected <= kept, table
    # The no-overlap triggers came back with the rebuilt table.
    start = datetime(2030, 5, 1, 12, tzinfo=UTC)
    with db.write_session() as session:
        session.add_all([_booking(user_id, "d:x", start, 60), _booking(user_id, "d:x", start, 30)])
        with pytest.raises(IntegrityError) as caught:
            session.commit()
    assert is_booking_overlap(caught.value)
    db.dispose()
