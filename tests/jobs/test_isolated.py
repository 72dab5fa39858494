"""The sandboxed parser's ends that are not a dataset: killed by a limit, out of time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from specklab.server.datasets.formats import MAX_SAMPLES, DatasetError
from specklab.server.datasets.isolated import ParseLimits, read_isolated


@pytest.fixture
def upload(tmp_path: Path) -> Path:
    path = tmp_path / "set.npz"
    events = np.zeros(4, [("x", "<i4"), ("y", "<i4"), ("p", "<i4"), ("t", "<i8")])
    np.savez(path, events=events, offsets=np.array([0, 4]), labels=np.array([1]))
    return path


def test_a_valid_upload_comes_back_checked(upload: Path) -> None:
    kind, samples = read_isolated(upload, ParseLimits(max_events=100, max_unpacked_bytes=10**6))
    assert kind == "npz" and samples.labels.tolist() == [1] and len(samples.events) == 4


def test_a_parser_killed_by_its_cpu_limit_is_an_unreadable_file(upload: Path) -> None:
    # Its imports alone take more than no CPU time: SIGXCPU as soon as the limit is set.
    limits = ParseLimits(max_events=100, max_unpacked_bytes=10**6, cpu_seconds=0)
    with pytest.raises(DatasetError, match="its parser ran out of time or memory"):
        read_isolated(upload, limits)


def test_a_parser_out_of_wall_clock_time_is_killed(upload: Path) -> None:
    limits = ParseLimits(max_events=100, max_unpacked_bytes=10**6, timeout_seconds=0.01)
    with pytest.raises(DatasetError, match="took longer than"):
        read_isolated(upload, limits)


def test_a_dataset_of_more_samples_than_a_job_may_store_is_refused(tmp_path: Path) -> None:
    # Empty samples cost the upload nearly nothing and every job a result row each.
    path = tmp_path / "many.npz"
    events = np.zeros(0, [("x", "<i4"), ("y", "<i4"), ("p", "<i4"), ("t", "<i8")])
    np.savez_compressed(
        path,
        events=events,
        offsets=np.zeros(MAX_SAMPLES + 2, np.int64),
        labels=np.zeros(MAX_SAMPLES + 1, np.int8),
    )
    limits = ParseLimits(max_events=50_000_000, max_unpacked_bytes=10**9)
    with pytest.raises(DatasetError, match=f"1000001 samples, more than {MAX_SAMPLES}"):
        read_isolated(path, limits)
    np.savez_compressed(
        path,
        events=events,
        offsets=np.zeros(MAX_SAMPLES + 1, np.int64),
        labels=np.zeros(MAX_SAMPLES, np.int8),
    )
    assert len(read_isolated(path, limits)[1].labels) == MAX_SAMPLES
