"""Reading an uploaded dataset (``.npz`` or HDF5, one layout: ``docs/jobs.md``) into the
canonical form every job reads: events as ``DVS_DTYPE`` (each sample's time starting at 0),
``offsets`` (n + 1 sample boundaries) and ``labels``.

Uploads are untrusted: ``.npz`` files are read with ``allow_pickle=False`` (object arrays are
refused), and both formats have every array's size checked from its header before it is read,
so a small compressed file cannot unpack into more memory than ``max_events`` allows.
"""

from __future__ import annotations

import io
import itertools
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from specklab.schemas.events import DVS_DTYPE

_COLUMNS = ("x", "y", "p", "t")
#: Bytes one event may take in an upload's arrays (four int64 columns), for the size checks.
_EVENT_BYTES = 4 * 8
#: Samples a dataset may hold: every sample is a row of every job's results, so the count
#: bounds what one job stores (the largest event test sets hold about 10 k).
MAX_SAMPLES = 1_000_000
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_TAR_MAGIC_OFFSET = 257


class DatasetError(ValueError):
    """An upload that is not a dataset of the documented layout; the message says why."""


@dataclass(frozen=True, slots=True)
class Samples:
    """A dataset in canonical form."""

    events: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def sample(self, index: int) -> np.ndarray:
        return self.events[self.offsets[index] : self.offsets[index + 1]]

    def longest_us(self) -> int:
        """The longest sample's span: its last event's time + 1 (samples start at 0)."""
        starts, ends = self.offsets[:-1], self.offsets[1:]
        last = ends[ends > starts] - 1
        return int(self.events["t"][last].max()) + 1 if len(last) else 0


def detect_container(head: bytes) -> str:
    """``zip`` (a .npz, or an archive of AEDAT4 recordings), ``tar`` (recordings) or ``hdf5``,
    from the file's first 512 bytes."""
    if head.startswith(b"PK"):
        return "zip"
    if head[_TAR_MAGIC_OFFSET : _TAR_MAGIC_OFFSET + 5] == b"ustar":
        return "tar"
    if head.startswith(_HDF5_MAGIC):
        return "hdf5"
    raise DatasetError(
        "a dataset is a .npz, an HDF5 file, or a zip or tar archive of AEDAT4 recordings; "
        "this file is none of them"
    )


def is_recordings_archive(data: bytes) -> bool:
    """A tar, or a zip holding a ``labels.csv``: a folder of AEDAT4 recordings."""
    container = detect_container(data[:512])
    return container == "tar" or (container == "zip" and _holds(data, "labels.csv"))


def read_arrays(data: bytes, *, max_events: int) -> tuple[str, Samples]:
    """A ``.npz`` or HDF5 upload's format and samples; DatasetError for anything else. h5py
    parses untrusted bytes in C: call it in the sandboxed child of ``isolated.py`` only."""
    if detect_container(data[:512]) == "hdf5":
        return "hdf5", _read_hdf5(io.BytesIO(data), max_events)
    return "npz", _read_npz(io.BytesIO(data), max_events)


def _holds(data: bytes, name: str) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return name in archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def save_canonical(samples: Samples) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, events=samples.events, offsets=samples.offsets, labels=samples.labels)
    return buffer.getvalue()


def load_canonical(data: bytes) -> Samples:
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return Samples(arrays["events"], arrays["offsets"], arrays["labels"])


def _read_npz(path: io.BytesIO, max_events: int) -> Samples:
    budget = max_events * _EVENT_BYTES + 1024
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
            if unpacked > budget:
                raise DatasetError(
                    f"the arrays unpack to {unpacked} bytes, more than {max_events} events take"
                )
        with np.load(path, allow_pickle=False) as arrays:
            return _canonical(set(arrays.files), lambda name: arrays[name], max_events)
    except DatasetError:
        raise
    except ValueError as exc:  # numpy's refusal of object arrays without pickle
        raise DatasetError(f"the .npz holds an array that cannot be read safely: {exc}") from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"the .npz cannot be read: {exc}") from exc


def _read_hdf5(path: io.BytesIO, max_events: int) -> Samples:
    import h5py  # only uploads of HDF5 pay for it

    try:
        with h5py.File(path, "r") as handle:

            def read(name: str) -> np.ndarray:
                node = handle[name]
                if not isinstance(node, h5py.Dataset):
                    raise DatasetError(f"{name!r} must be an HDF5 dataset, not a group")
                if node.dtype.kind == "O" or h5py.check_vlen_dtype(node.dtype) is not None:
                    raise DatasetError(f"{name!r} holds variable-length or object data")
                if node.size * node.dtype.itemsize > max_events * _EVENT_BYTES + 1024:
                    raise DatasetError(f"{name!r} is larger than {max_events} events take")
                return node[()]

            return _canonical(set(handle.keys()), read, max_events)
    except DatasetError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"the HDF5 file cannot be read: {exc}") from exc


def _canonical(names: set[str], read: Callable[[str], np.ndarray], max_events: int) -> Samples:
    missing = {"offsets", "labels"} - names
    if missing:
        raise DatasetError(
            f"the dataset needs arrays {sorted(missing)} (or, as a zip of AEDAT4 recordings, "
            "a labels.csv at its root)"
        )
    columns = _event_columns(names, read)
    size = len(columns["t"])
    if size > max_events:
        raise DatasetError(f"the dataset holds {size} events, more than {max_events}")
    labels = _integers("labels", read("labels"))
    offsets = _integers("offsets", read("offsets"))
    events = np.zeros(size, DVS_DTYPE)
    for name, limit in (("x", 2**16), ("y", 2**16), ("p", 2), ("t", 2**63)):
        column = columns[name]
        if size and (column.min() < 0 or column.max() >= limit):
            raise DatasetError(f"event field {name!r} must lie in [0, {limit})")
        events[name] = column
    return canonical_events(events, offsets, labels)


def canonical_events(events: np.ndarray, offsets: np.ndarray, labels: np.ndarray) -> Samples:
    """Checked samples of ``DVS_DTYPE`` events: each sample in time order, its first event at
    t = 0 (docs/jobs.md)."""
    if events.dtype != DVS_DTYPE or events.ndim != 1:
        raise DatasetError(f"events must be a 1-D array of {DVS_DTYPE}, got {events.dtype}")
    labels = _integers("labels", labels)
    if len(labels) > MAX_SAMPLES:
        raise DatasetError(f"the dataset holds {len(labels)} samples, more than {MAX_SAMPLES}")
    offsets = _offsets(_integers("offsets", offsets), len(labels), len(events))
    if len(labels) == 0:
        raise DatasetError("the dataset has no samples")
    if labels.min() < 0 or labels.max() >= 2**15:
        raise DatasetError("labels must be class indices from 0 to 32767")
    for start, end in itertools.pairwise(offsets):
        sample = events[start:end]
        if len(sample):
            sample[:] = sample[np.argsort(sample["t"], kind="stable")]
            sample["t"] -= sample["t"][0]
    return Samples(events, offsets, labels.astype(np.int64))


def _event_columns(names: set[str], read: Callable[[str], np.ndarray]) -> dict[str, np.ndarray]:
    if "events" in names:
        events = read("events")
        fields = set(events.dtype.names or ())
        if events.ndim != 1 or not set(_COLUMNS) <= fields:
            raise DatasetError(
                "'events' must be a 1-D structured array with fields x, y, p, t; "
                f"it has shape {events.shape} and fields {sorted(fields)}"
            )
        columns = {name: events[name] for name in _COLUMNS}
    elif set(_COLUMNS) <= names:
        columns = {name: read(name) for name in _COLUMNS}
    else:
        raise DatasetError("the dataset needs an 'events' array or columns x, y, p, t")
    checked = {name: _integers(name, column) for name, column in columns.items()}
    if len({len(column) for column in checked.values()}) != 1:
        raise DatasetError("the columns x, y, p, t must have the same length")
    return checked


def _integers(name: str, array: np.ndarray) -> np.ndarray:
    if array.ndim != 1:
        raise DatasetError(f"{name!r} must be 1-D, got shape {array.shape}")
    if array.dtype.kind not in "iub":
        raise DatasetError(f"{name!r} must hold integers, got {array.dtype}")
    return array.astype(np.int64)


def _offsets(offsets: np.ndarray, samples: int, events: int) -> np.ndarray:
    """Sample boundaries: sample ``i`` is ``events[offsets[i]:offsets[i + 1]]``."""
    if len(offsets) != samples + 1:
        raise DatasetError(
            f"'offsets' must hold {samples + 1} sample boundaries for {samples} labels; it "
            f"holds {len(offsets)} (do the labels match the samples?)"
        )
    if offsets[0] != 0 or offsets[-1] != events:
        raise DatasetError(f"'offsets' must start at 0 and end at the event count ({events})")
    if np.any(np.diff(offsets) < 0):
        raise DatasetError("'offsets' must not decrease")
    return offsets
