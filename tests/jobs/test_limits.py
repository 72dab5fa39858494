"""The per-sample limits of jobs, checked at submit."""

from __future__ import annotations

import pytest

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.errors import DomainError
from specklab.schemas.jobs import JobOptions
from specklab.server.jobs.limits import (
    MAX_CHUNKS,
    MAX_SAMPLE_EVENTS,
    check_sample_limits,
    chunk_size,
)
from specklab.server.storage.tables import DatasetRecord


def _dataset(events: int, span_us: int) -> DatasetRecord:
    return DatasetRecord(largest_sample_events=events, longest_sample_us=span_us)


def test_a_sample_with_too_many_events_is_refused_whatever_the_duration() -> None:
    config = ChipConfig(chip="speck2f")
    check_sample_limits(JobOptions(), config, _dataset(MAX_SAMPLE_EVENTS, 1000))
    with pytest.raises(DomainError, match="cut it into shorter samples") as caught:
        check_sample_limits(
            JobOptions(duration_us=10), config, _dataset(MAX_SAMPLE_EVENTS + 1, 1000)
        )
    assert (caught.value.status, caught.value.code) == (422, "sample_too_large")


def test_slow_clock_ticks_count_only_with_a_slow_clock() -> None:
    long = _dataset(10, 60_000_000)
    check_sample_limits(JobOptions(), ChipConfig(chip="speck2f"), long)
    with pytest.raises(DomainError, match="ticks 60000000 times"):
        check_sample_limits(JobOptions(), ChipConfig(chip="speck2f", slow_clock_hz=1e6), long)
    check_sample_limits(
        JobOptions(duration_us=1_000_000), ChipConfig(chip="speck2f", slow_clock_hz=1e6), long
    )


@pytest.mark.parametrize(
    ("samples", "size"), [(1, 1), (16, 1), (17, 2), (1000, 63), (8000, 500), (1_000_000, 500)]
)
def test_the_default_chunk_is_a_sixteenth_of_the_dataset_up_to_500_samples(
    samples: int, size: int
) -> None:
    assert chunk_size(JobOptions(), samples) == size


def test_a_chunk_size_cutting_a_dataset_into_too_many_chunks_is_refused() -> None:
    assert chunk_size(JobOptions(chunk_size=1), MAX_CHUNKS) == 1
    assert chunk_size(JobOptions(chunk_size=7), 70_000) == 7
    with pytest.raises(DomainError, match="10001 chunks, more than the 10000") as caught:
        chunk_size(JobOptions(chunk_size=1), MAX_CHUNKS + 1)
    assert (caught.value.status, caught.value.code) == (422, "too_many_chunks")
    assert caught.value.body.detail == {"limit": MAX_CHUNKS, "smallest_chunk_size": 2}
