"""What a job may cost, checked at submit: no sample holds a worker (or a booked device) for
more than about a minute and a half on this machine class, and no job is cut into more chunks
than its submit can write in a moment (a chunk is a row, written with the job)."""

from __future__ import annotations

import math

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.errors import DomainError
from specklab.schemas.jobs import JobOptions

from ..storage.tables import DatasetRecord

#: Chip time one sample runs (``JobOptions.duration_us`` has the same bound).
MAX_SAMPLE_US = 60_000_000
#: Events of one sample.
MAX_SAMPLE_EVENTS = 1_000_000
#: Slow-clock ticks of one sample (its duration times the slow clock): the simulator's cost of
#: leaks and readouts, about 10 us a tick.
MAX_SAMPLE_TICKS = 10_000_000
#: Chunks of one job: its submit writes them all in one transaction, which on SQLite holds the
#: lab's only write lock.
MAX_CHUNKS = 10_000
#: The default chunk: a sixteenth of the dataset, so workers share the work and each chunk's
#: database round trips cost little next to its samples; at most this many samples.
DEFAULT_CHUNK_SAMPLES = 500


def _too_much(message: str, limit: int) -> DomainError:
    return DomainError(422, "sample_too_large", message, detail={"limit": limit})


def check_sample_limits(options: JobOptions, config: ChipConfig, dataset: DatasetRecord) -> None:
    """422 ``sample_too_large`` when a sample of ``dataset`` would run past a limit."""
    if dataset.largest_sample_events > MAX_SAMPLE_EVENTS:
        raise _too_much(
            f"a sample of this dataset holds {dataset.largest_sample_events} events, more than "
            f"the {MAX_SAMPLE_EVENTS} a sample may hold: cut it into shorter samples",
            MAX_SAMPLE_EVENTS,
        )
    duration = options.duration_us or dataset.longest_sample_us
    if duration > MAX_SAMPLE_US:
        raise _too_much(
            f"samples of this dataset last up to {dataset.longest_sample_us / 1e6:g} s, more "
            f"than the {MAX_SAMPLE_US / 1e6:g} s a sample may run: set options.duration_us",
            MAX_SAMPLE_US,
        )
    if config.slow_clock_hz is not None:
        ticks = duration / 1e6 * config.slow_clock_hz
        if ticks > MAX_SAMPLE_TICKS:
            raise _too_much(
                f"a sample of {duration / 1e6:g} s at a slow clock of {config.slow_clock_hz:g} Hz "
                f"ticks {ticks:.0f} times, more than {MAX_SAMPLE_TICKS}: shorten "
                "options.duration_us or lower options.slow_clock_hz",
                MAX_SAMPLE_TICKS,
            )


def chunk_size(options: JobOptions, samples: int) -> int:
    """Samples per chunk of a job over ``samples`` samples: ``options.chunk_size`` (a 422
    ``too_many_chunks`` when it cuts the dataset into more than :data:`MAX_CHUNKS`), by default
    a sixteenth of the dataset (1 to 500 samples; a dataset holds at most 1 M samples, so
    that stays within the chunks)."""
    fewest = math.ceil(samples / MAX_CHUNKS)
    if options.chunk_size is None:
        return min(math.ceil(samples / 16), DEFAULT_CHUNK_SAMPLES)
    if options.chunk_size < fewest:
        raise DomainError(
            422,
            "too_many_chunks",
            f"options.chunk_size {options.chunk_size} cuts the dataset's {samples} samples into "
            f"{math.ceil(samples / options.chunk_size)} chunks, more than the {MAX_CHUNKS} a job "
            f"may have: use at least {fewest}",
            detail={"limit": MAX_CHUNKS, "smallest_chunk_size": fewest},
        )
    return options.chunk_size
