"""Content-addressed files: a blob is stored once under the sha256 of its bytes.

Files are written under a temporary name in the store and renamed into place only when whole,
so a crash leaves either nothing under a blob's name or the whole blob. Temporary files and
blobs nothing refers to any more are removed by :meth:`BlobStore.collect`.

A store of a lab whose hosts share a database also has the lab's copy (``lab_blobs.py``): blobs
are shared in the transaction of the row that refers to them, and a blob missing here is fetched
from there (and kept here).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session

from .lab_blobs import LabBlobs

_PARTIAL = ".partial-"
_HEX = frozenset("0123456789abcdef")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Incoming:
    """A blob being received: written to a temporary file and hashed as it arrives."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store
        fd, name = tempfile.mkstemp(dir=store.root, prefix=_PARTIAL)
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()

    def read(self) -> bytes:
        return self.flushed().read_bytes()

    def flushed(self) -> Path:
        """The temporary file, holding every byte written so far (for readers that open it)."""
        self._file.flush()
        return self.path

    def commit(self) -> str:
        """Move the received bytes to their content address (once) and return the digest."""
        self._file.close()
        target = self._store.path(self.digest)
        if target.exists():
            self.path.unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.path, target)
        return self.digest

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


class BlobStore:
    def __init__(self, root: Path, lab: LabBlobs | None = None) -> None:
        self.root = root
        self.lab = lab
        root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str, suffix: str = "") -> Path:
        if len(digest) != 64 or not _HEX.issuperset(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.root / digest[:2] / f"{digest}{suffix}"

    def put(self, data: bytes, suffix: str = "", digest: str | None = None) -> str:
        """Store ``data`` (atomically, once) and return its key, ``sha256(data)`` by default."""
        digest = digest or sha256_hex(data)
        target = self.path(digest, suffix)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=_PARTIAL)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temporary, target)
        return digest

    def get(self, digest: str, suffix: str = "") -> bytes | None:
        path = self.path(digest, suffix)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        data = self.lab.fetch(path.name) if self.lab is not None else None
        if data is not None:
            self.put(data, suffix, digest=digest)
        return data

    def fetch_missing(self, digest: str, suffix: str = "") -> None:
        """Fetch the blob from the lab's copy and keep it here, unless it is here already
        (blocking: call it from a thread). A blob in neither place stays missing, which its
        reader finds out."""
        if not self.path(digest, suffix).exists():
            self.get(digest, suffix)

    def delete(self, digest: str, suffix: str = "") -> None:
        self.path(digest, suffix).unlink(missing_ok=True)

    def share(
        self, session: Session, digest: str, suffix: str = "", data: bytes | None = None
    ) -> None:
        """Add the stored blob to the lab's copy in ``session`` (committed with its row);
        ``data``: its bytes, when the caller holds them (else they are read back)."""
        if self.lab is not None:
            path = self.path(digest, suffix)
            self.lab.put(session, path.name, path.read_bytes() if data is None else data)

    def unshare(self, session: Session, digest: str, suffix: str = "") -> None:
        """Remove the blob from the lab's copy in ``session``."""
        if self.lab is not None:
            self.lab.delete(session, self.path(digest, suffix).name)

    def collect_shared(self, session: Session, keep: Callable[[str], bool]) -> int:
        """:meth:`collect` for the lab's copy (committed); returns the bytes freed."""
        if self.lab is None:
            return 0
        return self.lab.collect(session, lambda name: keep(name[:64]))

    def collect(self, keep: Callable[[str], bool], *, partial: bool) -> int:
        """Delete every blob whose key ``keep`` refuses, and temporary files when ``partial``
        (only safe when nothing is being written). Returns the number of bytes freed."""
        freed = 0
        for path in [*self.root.glob("*"), *self.root.glob("??/*")]:
            if path.is_dir():
                continue
            if path.name.startswith(_PARTIAL):
                doomed = partial
            else:
                key = path.name[:64]
                doomed = len(key) == 64 and _HEX.issuperset(key) and not keep(key)
            if doomed:
                freed += _unlink(path)
        return freed


def _unlink(path: Path) -> int:
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:  # removed by a concurrent delete
        return 0
    return size
