"""AEDAT4, iniVation's event-camera file format, written with their maintained library
``dv-processing`` (what DV, jAER's successors, tonic and most event-vision tools read)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_aedat4(events: np.ndarray, path: Path, size: tuple[int, int] = (128, 128)) -> None:
    """Write DVS events (``t, x, y, p``) as an AEDAT4 file of one event stream."""
    import dv_processing as dv

    store = dv.EventStore()
    push = store.push_back
    # dv-processing offers no bulk constructor from numpy; one call per event, ~0.6 s per M.
    for t, x, y, p in zip(
        events["t"].tolist(),
        events["x"].tolist(),
        events["y"].tolist(),
        events["p"].tolist(),
        strict=True,
    ):
        push(t, x, y, bool(p))
    writer = dv.io.MonoCameraWriter(
        str(path), dv.io.MonoCameraWriter.EventOnlyConfig("specklab", size)
    )
    if len(events):
        writer.writeEvents(store)
    del writer  # the file is complete once the writer is gone


def read_aedat4(path: Path) -> np.ndarray:
    """All events of an AEDAT4 file as the schemas' DVS array (for tests and tools)."""
    import dv_processing as dv

    from specklab.schemas.events import dvs_events

    recording = dv.io.MonoCameraRecording(str(path))
    parts = []
    while (batch := recording.getNextEventBatch()) is not None:
        parts.append(batch.numpy())
    if not parts:
        return dvs_events(t=np.zeros(0, np.uint64), x=0, y=0, p=0)
    raw = np.concatenate(parts)
    return dvs_events(t=raw["timestamp"], x=raw["x"], y=raw["y"], p=raw["polarity"])
