"""Keeping numba's on-disk cache honest about code compiled in from other modules.

numba keys a module's cached machine code by that module's own source only. Constants and
intrinsics imported from elsewhere are compiled in, so a change to them alone (an upgrade,
a checkout) would leave stale machine code running: wrong spikes, silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def forget_stale_cache(module: Path, compiled_in: Iterable[Path]) -> None:
    """Delete ``module``'s cached machine code if any of ``compiled_in`` changed since it was made.

    Works on the cache next to the module (numba's default). Where that folder is read-only,
    numba caches per user instead, which this does not reach.
    """
    digest = hashlib.sha256()
    for source in compiled_in:
        digest.update(source.read_bytes())
    cache = module.parent / "__pycache__"
    stamp = cache / f"{module.stem}.compiled-in"
    try:
        if stamp.is_file() and stamp.read_text() == digest.hexdigest():
            return
        for cached in cache.glob(f"{module.stem}.*.nb[ic]"):
            cached.unlink()
        cache.mkdir(exist_ok=True)
        stamp.write_text(digest.hexdigest())
    except OSError:
        pass  # read-only: see the docstring
