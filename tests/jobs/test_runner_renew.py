"""A renewal that finds a chunk no longer running stops only what its slot still holds: the
slot may have moved on to its next chunk while the renewal ran."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from specklab.server.jobs import queue
from specklab.server.jobs.pool import ChunkTask
from specklab.server.jobs.runner import JobRunner, _Running


class FakePool:
    size = 1

    def __init__(self) -> None:
        self.cancelled: list[int] = []

    def run(self, slot: int, task: ChunkTask) -> list[dict[str, Any]]:
        raise AssertionError("not run here")

    def cancel(self, slot: int) -> None:
        self.cancelled.append(slot)


class SlotMovesOn:
    """A database whose renewal reports ``stop`` and, while it runs, the slot's chunk ends
    and its next one starts."""

    def __init__(self, runner_slot: _Running, following: queue.Claim, stop: set[int]) -> None:
        self.slot, self.following, self.stop = runner_slot, following, stop

    async def run(self, work: Any, *, write: bool = False) -> set[int]:
        self.slot.claim, self.slot.following = self.following, None
        return self.stop


def claim(chunk_id: int) -> queue.Claim:
    return queue.Claim((chunk_id,), 1, 1, (0, 1), "c", "d", {})


def runner(db: Any, pool: FakePool) -> JobRunner:
    return JobRunner(
        db,
        pool,
        host="h",
        config_path=lambda d: Path(d),
        dataset_path=lambda d: Path(d),
        fetch=lambda config, dataset: None,
        lease_s=30,
    )


def test_a_finished_chunk_found_stopped_stops_nothing_its_slot_runs_now() -> None:
    first, second = claim(1), claim(2)
    running = _Running(first, following=second)
    pool = FakePool()
    jobs = runner(SlotMovesOn(running, second, stop={1}), pool)
    jobs._slots[0] = running
    asyncio.run(jobs._renew())
    assert pool.cancelled == [] and not running.skip


def test_a_cancelled_chunk_claimed_ahead_is_skipped() -> None:
    first, second = claim(1), claim(2)
    running = _Running(first, following=second)
    pool = FakePool()

    class Stays(SlotMovesOn):
        async def run(self, work: Any, *, write: bool = False) -> set[int]:
            return self.stop

    jobs = runner(Stays(running, second, stop={2}), pool)
    jobs._slots[0] = running
    asyncio.run(jobs._renew())
    assert pool.cancelled == [] and running.skip
