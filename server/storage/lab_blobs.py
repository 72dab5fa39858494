"""The lab's copy of stored files, in the database the lab already runs.

On PostgreSQL, every file of the data dir's stores that a row refers to (model uploads and their
compiled results, recordings) is also kept in ``lab_blobs`` / ``lab_blob_chunks`` (1 MiB
``bytea`` chunks), written in the same transaction as the row that refers to it: a host sees a
model or recording exactly when it can fetch its bytes. A host that lacks a file fetches it once,
checks its sha256, and keeps it in its data dir as a cache. On SQLite (one host) the data dir is
the only copy: there is no other host to serve.

The trade-off (``docs/scaling.md``): the database grows by the stored bytes (quotas bound them)
and carries each file once per host that reads it; in return no new service, no host-to-host
traffic, and a host that is down takes nothing of the lab's data with it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .db import Database
from .tables import LabBlob, LabBlobChunk

CHUNK_BYTES = 1024 * 1024


class BlobCorrupt(Exception):
    """The bytes fetched do not hash to what was stored."""


class LabBlobs:
    """One store's files in the lab's database."""

    def __init__(self, db: Database, store: str) -> None:
        self.db = db
        self.store = store

    @classmethod
    def for_lab(cls, db: Database, store: str) -> LabBlobs | None:
        """The store's lab copy where hosts share the database (PostgreSQL), else None."""
        return cls(db, store) if db.engine.dialect.name == "postgresql" else None

    def put(self, session: Session, name: str, data: bytes) -> None:
        """Add the file to ``session`` (the caller commits it with the row that refers to it);
        a file already there is kept."""
        if session.get(LabBlob, (self.store, name)) is not None:
            return
        chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
        header = LabBlob(
            store=self.store,
            name=name,
            sha256=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data),
            chunks=len(chunks),
        )
        try:
            with session.begin_nested():
                session.add(header)
                session.flush()  # the header first: a concurrent put of the same name fails here
        except IntegrityError:
            return  # another host stored the same name meanwhile: the same content
        session.add_all(
            LabBlobChunk(store=self.store, name=name, seq=seq, data=chunk)
            for seq, chunk in enumerate(chunks)
        )

    def fetch(self, name: str) -> bytes | None:
        """The file's bytes, checked against their sha256; None when the lab has no such file."""
        with self.db.session() as session:
            header = session.get(LabBlob, (self.store, name))
            if header is None:
                return None
            data = b"".join(
                session.scalars(
                    select(LabBlobChunk.data)
                    .where(LabBlobChunk.store == self.store, LabBlobChunk.name == name)
                    .order_by(LabBlobChunk.seq)
                )
            )
        if hashlib.sha256(data).hexdigest() != header.sha256 or len(data) != header.size_bytes:
            raise BlobCorrupt(f"{self.store}/{name}: the lab's copy does not match its sha256")
        return data

    def delete(self, session: Session, name: str) -> None:
        """Remove the file in ``session`` (the caller commits)."""
        self._delete(session, [name])

    def collect(self, session: Session, keep: Callable[[str], bool]) -> int:
        """Remove (and commit) the files ``keep`` refuses; returns the bytes freed."""
        doomed = [
            (name, size)
            for name, size in session.execute(
                select(LabBlob.name, LabBlob.size_bytes).where(LabBlob.store == self.store)
            )
            if not keep(name)
        ]
        if doomed:
            self._delete(session, [name for name, _ in doomed])
            session.commit()
        return sum(size for _, size in doomed)

    def _delete(self, session: Session, names: list[str]) -> None:
        for table in (LabBlobChunk, LabBlob):
            session.execute(delete(table).where(table.store == self.store, table.name.in_(names)))
