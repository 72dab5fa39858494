"""The lab's copy of stored files (``storage/lab_blobs.py``): written with the row that refers
to it, fetched and checked by any host, collected when nothing refers to it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from specklab.server.storage import Database
from specklab.server.storage.blobs import BlobStore, sha256_hex
from specklab.server.storage.lab_blobs import CHUNK_BYTES, BlobCorrupt, LabBlobs
from specklab.server.storage.tables import LabBlobChunk


def test_hosts_share_blobs_through_the_database(db: Database, tmp_path: Path) -> None:
    lab = LabBlobs.for_lab(db, "models")
    if db.engine.dialect.name == "sqlite":
        assert lab is None  # one host: the data dir is the only copy
        return
    assert lab is not None
    data = bytes(range(256)) * (CHUNK_BYTES // 128 + 3)  # three chunks, the last partial
    digest = sha256_hex(data)
    host_a = BlobStore(tmp_path / "a", lab)
    host_b = BlobStore(tmp_path / "b", LabBlobs(db, "models"))
    host_a.put(data)
    with db.write_session() as session:
        host_a.share(session, digest)
        host_a.share(session, digest)  # already there: kept once
        session.commit()
    assert host_b.get(digest) == data
    assert host_b.path(digest).read_bytes() == data  # kept on B from now on
    assert BlobStore(tmp_path / "c", LabBlobs(db, "compiled")).get(digest) is None

    with db.write_session() as session:
        session.execute(
            update(LabBlobChunk).where(LabBlobChunk.seq == 1).values(data=b"x" * CHUNK_BYTES)
        )
        session.commit()
    with pytest.raises(BlobCorrupt, match="does not match"):
        BlobStore(tmp_path / "d", lab).get(digest)

    with db.write_session() as session:
        assert host_a.collect_shared(session, {digest}.__contains__) == 0
        assert host_a.collect_shared(session, lambda key: False) == len(data)
    assert BlobStore(tmp_path / "e", lab).get(digest) is None
