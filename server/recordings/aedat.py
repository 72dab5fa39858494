"""AEDAT4, iniVation's event-camera file format, written with their maintained library
``dv-processing`` (read by DV, dv-processing, aedat, tonic and most event-vision tools).

The daemon exports in a child process (``python -m specklab.server.recordings.aedat IN OUT``):
the library is native code that aborts its process on some errors, and an export must never
take the daemon down with it.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np

from specklab.schemas.errors import DomainError
from specklab.schemas.events import dvs_events

#: An export runs at about 1.5 M events/s; this bounds the largest recording's.
EXPORT_TIMEOUT_S = 600.0


class ExportFailed(DomainError):
    def __init__(self, message: str) -> None:
        super().__init__(500, "export_failed", message)


async def export_aedat4(npy: Path, target: Path) -> None:
    """Write the DVS events of ``npy`` to ``target`` (atomically) in a child process."""
    partial = target.with_name(f".partial-{target.name}")  # the library wants the suffix
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        str(npy),
        str(partial),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), EXPORT_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise ExportFailed(f"the AEDAT4 export took longer than {EXPORT_TIMEOUT_S:g} s") from None
    if process.returncode != 0:
        partial.unlink(missing_ok=True)
        detail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise ExportFailed(f"the AEDAT4 export failed ({process.returncode}): {detail[0]}")
    partial.replace(target)


def write_aedat4(events: np.ndarray, path: Path, size: tuple[int, int] = (128, 128)) -> None:
    """Write DVS events (``t, x, y, p``) as an AEDAT4 file of one event stream."""
    import dv_processing as dv

    store = dv.EventStore()
    push = store.push_back
    # dv-processing offers no bulk constructor from numpy: one call per event (~0.6 s per M).
    columns = (events[name].tolist() for name in ("t", "x", "y", "p"))
    for t, x, y, p in zip(*columns, strict=True):
        push(t, x, y, bool(p))
    config = dv.io.MonoCameraWriter.EventOnlyConfig("specklab", size)
    writer = dv.io.MonoCameraWriter(str(path), config)
    if len(events):
        writer.writeEvents(store)
    del writer  # the file is complete once the writer is gone


def read_aedat4(path: Path) -> np.ndarray:
    """All events of an AEDAT4 file as the schemas' DVS array."""
    import dv_processing as dv

    recording = dv.io.MonoCameraRecording(str(path))
    parts = []
    while (batch := recording.getNextEventBatch()) is not None:
        parts.append(batch.numpy())
    if not parts:
        return dvs_events(t=np.zeros(0, np.uint64), x=0, y=0, p=0)
    raw = np.concatenate(parts)
    return dvs_events(t=raw["timestamp"], x=raw["x"], y=raw["y"], p=raw["polarity"])


if __name__ == "__main__":
    source, target = map(Path, sys.argv[1:3])
    write_aedat4(np.load(source, allow_pickle=False), target)
