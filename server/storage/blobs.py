"""Content-addressed files: a blob is stored once under the sha256 of its bytes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str, suffix: str = "") -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.root / digest[:2] / f"{digest}{suffix}"

    def put(self, data: bytes, suffix: str = "", digest: str | None = None) -> str:
        """Store ``data`` (atomically, once) and return its key, ``sha256(data)`` by default."""
        digest = digest or sha256_hex(data)
        target = self.path(digest, suffix)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temporary, target)
        return digest

    def get(self, digest: str, suffix: str = "") -> bytes | None:
        try:
            return self.path(digest, suffix).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, digest: str, suffix: str = "") -> None:
        self.path(digest, suffix).unlink(missing_ok=True)
