"""The evaluation pool's workers: a chunk sent ahead runs once and gives the rows a direct run
gives, a withdrawn one never answers for another, and a cancel stops only the running chunk."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from specklab.schemas.jobs import JobOptions
from specklab.server.jobs.evaluate import Plan, job_config, run_samples
from specklab.server.jobs.pool import ChunkCancelled, ChunkTask, EvaluationPool
from specklab.server.simulator import ChipSimulator

from .digits import Digits, digits_job_inputs, npz_upload

SAMPLES = 30


@pytest.fixture(scope="module")
def digits() -> Digits:
    return digits_job_inputs(limit=SAMPLES)


@pytest.fixture(scope="module")
def files(digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("pool")
    config, dataset = directory / "config.json", directory / "samples.npz"
    config.write_text(digits.config.model_dump_json())
    dataset.write_bytes(npz_upload(digits.samples))
    return config, dataset


@pytest.fixture
def pool() -> Iterator[EvaluationPool]:
    pool = EvaluationPool(1)
    yield pool
    pool.close()


def task(files: tuple[Path, Path], start: int, stop: int) -> ChunkTask:
    return ChunkTask(files[0], files[1], JobOptions(), start, stop, user_id=1)


def direct(digits: Digits, start: int, stop: int) -> list[dict[str, Any]]:
    plan = Plan.of(job_config(digits.config, JobOptions()), JobOptions())
    return run_samples(ChipSimulator(plan.config), plan, digits.samples, start, stop)


def without_time(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "time_s"} for row in rows]


def in_thread(pool: EvaluationPool, chunk: ChunkTask) -> tuple[threading.Thread, list[Any]]:
    """``pool.run(0, chunk)`` on a thread; the list gets its rows or its exception."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(pool.run(0, chunk))
        except ChunkCancelled as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    worker = None
    while thread.is_alive() and (worker is None or not worker.running):
        # until the chunk is sent: only then may another be sent ahead
        worker = pool._workers[0]
        time.sleep(0.001)
    return thread, outcome


def test_a_chunk_sent_ahead_is_sent_once_and_finds_the_direct_rows(
    pool: EvaluationPool, files: tuple[Path, Path], digits: Digits
) -> None:
    assert without_time(pool.run(0, task(files, 0, 5))) == without_time(direct(digits, 0, 5))
    first, following = task(files, 5, 20), task(files, 20, SAMPLES)
    thread, outcome = in_thread(pool, first)
    pool.send_ahead(0, following)
    thread.join()
    assert without_time(outcome[0]) == without_time(direct(digits, 5, 20))
    assert without_time(pool.run(0, following)) == without_time(direct(digits, 20, SAMPLES))
    worker = pool._workers[0]
    assert worker is not None and worker._last_seq == 3, "the chunk sent ahead was sent again"


def test_a_withdrawn_chunk_never_answers_for_the_next(
    pool: EvaluationPool, files: tuple[Path, Path], digits: Digits
) -> None:
    pool.run(0, task(files, 0, 1))  # the worker is up
    withdrawn, later = task(files, 0, SAMPLES), task(files, 10, 12)
    thread, outcome = in_thread(pool, task(files, 1, 20))
    pool.send_ahead(0, withdrawn)
    pool.withdraw(0, withdrawn)
    thread.join()
    assert without_time(outcome[0]) == without_time(direct(digits, 1, 20))
    assert without_time(pool.run(0, later)) == without_time(direct(digits, 10, 12))


def test_cancelling_the_running_chunk_spares_the_one_sent_ahead(
    pool: EvaluationPool, files: tuple[Path, Path], digits: Digits
) -> None:
    pool.run(0, task(files, 0, 1))
    following = task(files, 3, 6)
    thread, outcome = in_thread(pool, task(files, 0, SAMPLES))
    pool.send_ahead(0, following)
    pool.cancel(0)
    thread.join()
    # The running chunk may have ended before the cancel reached it; the next one must run.
    assert isinstance(outcome[0], ChunkCancelled | list)
    assert without_time(pool.run(0, following)) == without_time(direct(digits, 3, 6))
