"""The fair compile queue: per-user FIFOs served least-recently-served first, positions that
match the order compiles really start in, shutdown that turns waiters away."""

from __future__ import annotations

import asyncio
import threading

import pytest

from specklab.server.models.compile_queue import CompileQueue, FairQueue, QueueClosed, Ticket


def drain(queue: FairQueue[str]) -> list[str]:
    return [queue.pop() for _ in range(len(queue))]


@pytest.mark.parametrize(
    ("pushes", "order"),
    [
        # One user: first in, first out.
        ([("a", "a1"), ("a", "a2"), ("a", "a3")], ["a1", "a2", "a3"]),
        # Twenty queued by one user do not hold back another user's one.
        (
            [("a", f"a{i}") for i in range(1, 21)] + [("b", "b1")],
            ["a1", "b1"] + [f"a{i}" for i in range(2, 21)],
        ),
        # Three users take turns, each in their own order.
        (
            [("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2"), ("c", "c1")],
            ["a1", "b1", "c1", "a2", "b2"],
        ),
    ],
)
def test_users_take_turns(pushes: list[tuple[str, str]], order: list[str]) -> None:
    queue: FairQueue[str] = FairQueue()
    for owner, item in pushes:
        queue.push(owner, item)
    assert drain(queue) == order


def test_the_user_served_last_waits_behind_the_others() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("a", "a1")
    assert queue.pop() == "a1"  # a is being served; its next uploads arrive
    for i in range(2, 6):
        queue.push("a", f"a{i}")
    queue.push("b", "b1")
    assert drain(queue) == ["b1", "a2", "a3", "a4", "a5"]


def test_positions_are_the_order_of_pops() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("a", "a0")
    queue.pop()
    pushes = [("a", "a1"), ("a", "a2"), ("b", "b1"), ("c", "c1"), ("b", "b2"), ("a", "a3")]
    for owner, item in pushes:
        queue.push(owner, item)
    expected = {item: queue.ahead(owner, item) for owner, item in pushes}
    popped = drain(queue)
    assert {item: popped.index(item) for item in expected} == expected


def test_a_removed_item_gives_up_its_place() -> None:
    queue: FairQueue[str] = FairQueue()
    for owner, item in [("a", "a1"), ("b", "b1"), ("b", "b2")]:
        queue.push(owner, item)
    queue.remove("a", "a1")
    assert queue.ahead("b", "b2") == 1
    assert drain(queue) == ["b1", "b2"]


class Gate:
    """Blocking jobs that start when told to finish: the order they started in is recorded,
    without timing anything."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self._release: dict[str, threading.Event] = {}

    def job(self, name: str):
        self._release[name] = threading.Event()

        def run() -> str:
            self.started.append(name)
            self._release[name].wait(timeout=30)
            return name

        return run

    def release(self, name: str) -> None:
        self._release[name].set()


async def until(condition) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the queue never got there")


async def test_one_users_twenty_uploads_delay_anothers_by_one_compile_at_most() -> None:
    queue = CompileQueue(slots=1)
    gate = Gate()
    greedy = [Ticket("greedy") for _ in range(20)]
    tasks = [asyncio.create_task(queue.run(t, gate.job(f"g{i}"))) for i, t in enumerate(greedy)]
    await until(lambda: gate.started == ["g0"])
    modest = Ticket("modest")
    task = asyncio.create_task(queue.run(modest, gate.job("m")))
    await until(lambda: modest.state == "queued")

    status = queue.status(modest)
    assert (status.state, status.position, status.queued) == ("queued", 0, 20)
    assert queue.status(greedy[1]).position == 1
    assert queue.status(greedy[0]).state == "compiling"

    gate.release("g0")
    await until(lambda: len(gate.started) == 2)
    assert gate.started == ["g0", "m"]
    gate.release("m")
    assert await task == "m"
    for i in range(1, 20):
        gate.release(f"g{i}")
    assert await asyncio.gather(*tasks) == [f"g{i}" for i in range(20)]
    assert gate.started == ["g0", "m"] + [f"g{i}" for i in range(1, 20)]
    assert (queue.running, queue.queued) == (0, 0)


async def test_every_slot_is_used() -> None:
    queue = CompileQueue(slots=2)
    gate = Gate()
    tickets = [Ticket(owner) for owner in ("a", "a", "a", "b")]
    tasks = [asyncio.create_task(queue.run(t, gate.job(f"j{i}"))) for i, t in enumerate(tickets)]
    await until(lambda: len(gate.started) == 2 and tickets[3].state == "queued")
    assert sorted(gate.started) == ["j0", "j1"]
    assert [queue.status(t).position for t in tickets[2:]] == [1, 0]  # b's one goes first
    gate.release("j0")
    await until(lambda: len(gate.started) == 3)
    assert gate.started[2] == "j3"
    for name in ("j1", "j2", "j3"):
        gate.release(name)
    await asyncio.gather(*tasks)


async def test_a_cancelled_waiter_leaves_the_line() -> None:
    queue = CompileQueue(slots=1)
    gate = Gate()
    first = asyncio.create_task(queue.run(Ticket("a"), gate.job("a")))
    await until(lambda: gate.started == ["a"])
    leaving, staying = Ticket("b"), Ticket("c")
    cancelled = asyncio.create_task(queue.run(leaving, gate.job("b")))
    kept = asyncio.create_task(queue.run(staying, gate.job("c")))
    await until(lambda: staying.state == "queued")
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert queue.status(staying).position == 0
    gate.release("a")
    gate.release("c")
    assert await asyncio.gather(first, kept) == ["a", "c"]
    assert gate.started == ["a", "c"]


async def test_closing_turns_away_the_queued_and_refuses_new_work() -> None:
    queue = CompileQueue(slots=1)
    gate = Gate()
    running = asyncio.create_task(queue.run(Ticket("a"), gate.job("a")))
    await until(lambda: gate.started == ["a"])
    waiting_ticket = Ticket("b")
    waiting = asyncio.create_task(queue.run(waiting_ticket, gate.job("b")))
    await until(lambda: waiting_ticket.state == "queued")
    queue.close()
    with pytest.raises(QueueClosed):
        await waiting
    with pytest.raises(QueueClosed):
        await queue.run(Ticket("c"), gate.job("c"))
    gate.release("a")
    assert await running == "a"  # what already runs finishes
    assert gate.started == ["a"]
