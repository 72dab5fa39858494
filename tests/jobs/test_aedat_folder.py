"""Unpacking a folder of recordings writes no more than the archive's unpacked limit, however
often ``labels.csv`` names one entry."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from specklab.server.datasets.aedat_folder import extract_folder
from specklab.server.datasets.formats import DatasetError

RECORDING = b"\0" * 1000


def _archive(rows: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.aedat4", RECORDING)
        archive.writestr("labels.csv", "file,label\n" + "a.aedat4,0\n" * rows)
    return buffer.getvalue()


def test_rows_naming_one_entry_are_written_within_the_unpacked_limit(tmp_path: Path) -> None:
    listing = extract_folder(_archive(5), tmp_path, max_unpacked=5 * len(RECORDING))
    assert [path.read_bytes() for path, _ in listing] == [RECORDING] * 5


def test_rows_naming_one_entry_past_the_unpacked_limit_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="more than 5000 bytes"):
        extract_folder(_archive(6), tmp_path, max_unpacked=5 * len(RECORDING))
    assert sum(path.stat().st_size for path in tmp_path.iterdir()) <= 5 * len(RECORDING)
