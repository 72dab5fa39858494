"""A folder of AEDAT4 recordings with a labels CSV, uploaded as a zip or tar archive.

The layout (``docs/jobs.md``): ``labels.csv`` at the archive's root, one row ``file,label``
per sample (a first row ``file,label`` is a header), ``file`` the path of an ``.aedat4`` file
of the archive; the samples are the rows, in order. The archive is held to the rules of model
uploads (``compiler/archive.py``): canonical, unique entry names, an unambiguous zip
directory, sizes and compression ratios within limits; a tar holds regular files and folders
only (no links, devices or sparse files). The parser's process (``isolated.py``) extracts the
recordings (pure Python) before it enters its sandbox and reads them with the project's AEDAT4
reader (``recordings/aedat.py``, dv-processing: native code) inside it.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from specklab.schemas.events import DVS_DTYPE

from ..compiler.archive import ArchiveLimits, check_name, check_sizes, open_zip, read_entry
from ..compiler.errors import InputError
from ..recordings.aedat import read_aedat4
from .formats import DatasetError, Samples, canonical_events, detect_container

LABELS = "labels.csv"
#: Recordings (rows of ``labels.csv``) one archive may hold.
MAX_FILES = 10_000


def extract_folder(data: bytes, scratch: Path, *, max_unpacked: int) -> list[tuple[Path, int]]:
    """Write the recordings ``labels.csv`` names to ``scratch`` (as ``<row>.aedat4``: no
    name from the upload reaches the file system); their paths and labels, in row order.
    Pure Python (zip and tar directories, CSV); DatasetError for anything off the layout."""
    limits = ArchiveLimits(max_upload_bytes=len(data), max_unpacked_bytes=max_unpacked)
    try:
        tar = detect_container(data[:512]) == "tar"
        entries = _tar_entries(data, limits) if tar else _zip_entries(data, limits)
        if LABELS not in entries:
            raise DatasetError(f"the archive needs a {LABELS} at its root")
        listing = []
        written = 0
        for row, (name, label) in enumerate(_labels(entries[LABELS]()), start=1):
            if name not in entries:
                raise DatasetError(f"{LABELS} names {name!r}, which the archive does not hold")
            if not name.endswith(".aedat4"):
                raise DatasetError(f"{name!r}: recordings are .aedat4 files")
            recording = entries[name]()
            # Rows may name one entry many times: the bytes written are bounded, not only
            # the archive's own entries.
            written += len(recording)
            if written > max_unpacked:
                raise DatasetError(
                    f"the recordings {LABELS} names come to more than {max_unpacked} bytes"
                )
            path = scratch / f"{row}.aedat4"
            path.write_bytes(recording)
            listing.append((path, label))
    except InputError as exc:
        raise DatasetError(exc.message) from exc
    return listing


def read_recordings(listing: list[tuple[Path, int]], *, max_events: int) -> Samples:
    """The samples of :func:`extract_folder`'s recordings, read with the project's AEDAT4
    reader (native code: run it sandboxed)."""
    parts, total = [], 0
    for path, _ in listing:
        try:
            events = read_aedat4(path)
        except RuntimeError as exc:  # dv-processing's refusal of a damaged file
            first = str(exc).strip().splitlines()[-1:] or ["no message"]
            raise DatasetError(f"row {path.stem}: not a readable AEDAT4 file ({first[0]})") from exc
        total += len(events)
        if total > max_events:
            raise DatasetError(f"the recordings hold more than {max_events} events")
        parts.append(events)
    offsets = np.concatenate([[0], np.cumsum([len(part) for part in parts])]).astype(np.int64)
    events = np.concatenate(parts) if parts else np.zeros(0, DVS_DTYPE)
    labels = np.asarray([label for _, label in listing], np.int64)
    return canonical_events(events, offsets, labels)


def _zip_entries(data: bytes, limits: ArchiveLimits) -> dict[str, Callable[[], bytes]]:
    archive = open_zip(data)
    check_sizes(archive, limits)
    _check_count(len(archive.infolist()))
    return {
        info.filename: functools.partial(read_entry, archive, info.filename)
        for info in archive.infolist()
        if not info.is_dir()
    }


def _tar_entries(data: bytes, limits: ArchiveLimits) -> dict[str, Callable[[], bytes]]:
    try:
        # Left open: its entries are read later, from memory.
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:")  # noqa: SIM115
        members = archive.getmembers()
    except (tarfile.TarError, EOFError, ValueError) as exc:
        raise DatasetError(f"the tar archive cannot be read: {exc}") from exc
    _check_count(len(members))
    entries: dict[str, Callable[[], bytes]] = {}
    total = 0
    for member in members:
        check_name(os.fsencode(member.name), member.name)
        if member.isdir():
            continue
        if not member.isreg() or member.issparse():
            raise DatasetError(f"{member.name!r} is not a regular file (links are refused)")
        if member.name in entries:
            raise DatasetError(f"the archive holds {member.name!r} twice")
        total += member.size
        if total > limits.max_unpacked_bytes:
            raise DatasetError(
                f"the archive unpacks to more than {limits.max_unpacked_bytes} bytes"
            )
        entries[member.name] = functools.partial(_tar_read, archive, member)
    return entries


def _tar_read(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = archive.extractfile(member)
    if handle is None:
        raise DatasetError(f"{member.name!r} cannot be read")
    with handle:
        return handle.read()


def _check_count(count: int) -> None:
    if count > MAX_FILES + 1:
        raise DatasetError(f"the archive holds {count} entries, more than {MAX_FILES + 1}")


def _labels(data: bytes) -> list[tuple[str, int]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{LABELS} is not UTF-8 text") from exc
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    if rows and [cell.strip() for cell in rows[0]] == ["file", "label"]:
        rows = rows[1:]
    if not rows:
        raise DatasetError(f"{LABELS} names no recording")
    if len(rows) > MAX_FILES:
        raise DatasetError(f"{LABELS} has {len(rows)} rows, more than {MAX_FILES}")
    found = []
    for number, row in enumerate(rows, start=1):
        if len(row) != 2 or not row[1].strip().isdigit() or int(row[1]) >= 2**15:
            raise DatasetError(
                f"{LABELS} row {number}: expected 'file,label' with a class index from 0 to "
                f"32767, got {row!r}"
            )
        found.append((row[0].strip(), int(row[1])))
    return found
