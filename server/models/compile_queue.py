"""A fair queue in front of the compiler pool.

Each user's compiles wait in their own FIFO, and a free worker goes to the users in turn (round
robin), so one user's twenty queued uploads delay another user's one upload by at most one
compile per worker. Who waits where is visible while they wait (:meth:`CompileQueue.status`).

:class:`FairQueue` is the ordering alone, with no I/O; :class:`CompileQueue` hands its slots
(one per compile worker) to the items of a :class:`FairQueue` and runs each job in a thread.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

import anyio

T = TypeVar("T")
R = TypeVar("R")

State = Literal["waiting", "queued", "compiling"]


class FairQueue(Generic[T]):
    """Per-owner FIFOs served in turn: the owner served last goes to the back of the line."""

    def __init__(self) -> None:
        # Owners in the order they will be served; an owner is here only while it has items.
        self._lines: OrderedDict[Hashable, deque[T]] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(line) for line in self._lines.values())

    def push(self, owner: Hashable, item: T) -> None:
        self._lines.setdefault(owner, deque()).append(item)

    def pop(self) -> T:
        """The next item; IndexError when empty."""
        if not self._lines:
            raise IndexError("pop from an empty FairQueue")
        owner, line = next(iter(self._lines.items()))
        item = line.popleft()
        if line:
            self._lines.move_to_end(owner)
        else:
            del self._lines[owner]
        return item

    def remove(self, owner: Hashable, item: T) -> None:
        line = self._lines.get(owner)
        if line is None or item not in line:
            return
        line.remove(item)
        if not line:
            del self._lines[owner]

    def ahead(self, owner: Hashable, item: T) -> int:
        """How many items :meth:`pop` hands out before ``item``.

        Pops go in rounds: round ``r`` takes the ``r``-th item of every owner, in line order.
        """
        rank = self._lines[owner].index(item)
        count = rank
        before = True
        for other, line in self._lines.items():
            if other == owner:
                before = False
                continue
            count += min(len(line), rank + 1 if before else rank)
        return count


class QueueClosed(Exception):
    """The daemon is stopping: no new compile starts."""


@dataclass(eq=False)
class Ticket:
    """One caller's place: ``waiting`` (not yet queued, e.g. its upload still arriving),
    ``queued`` (``position`` compiles go before it) or ``compiling``."""

    owner: Hashable
    state: State = "waiting"
    _turn: asyncio.Future[None] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Status:
    state: State
    #: Compiles that start before this one (0: next); None unless queued.
    position: int | None
    #: Compiles queued in all (running ones not counted).
    queued: int


class CompileQueue:
    """``slots`` jobs run at once (one per compile worker); the rest wait their turn."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("a compile queue needs at least one slot")
        self.slots = slots
        self._running = 0
        self._line: FairQueue[Ticket] = FairQueue()
        self._closed = False

    @property
    def queued(self) -> int:
        return len(self._line)

    @property
    def running(self) -> int:
        return self._running

    def status(self, ticket: Ticket) -> Status:
        position = self._line.ahead(ticket.owner, ticket) if ticket.state == "queued" else None
        return Status(ticket.state, position, len(self._line))

    async def run(self, ticket: Ticket, job: Callable[[], R]) -> R:
        """Wait for ``ticket``'s turn, then run the blocking ``job`` in a thread.

        Raises :class:`QueueClosed` if the queue closes before the turn comes.
        """
        if self._closed:
            raise QueueClosed
        ticket._turn = asyncio.get_running_loop().create_future()
        ticket.state = "queued"
        self._line.push(ticket.owner, ticket)
        self._dispatch()
        try:
            await ticket._turn
        except BaseException:
            self._leave(ticket)
            raise
        try:
            return await anyio.to_thread.run_sync(job)
        finally:
            self._running -= 1
            ticket.state = "waiting"
            self._dispatch()

    def close(self) -> None:
        """Refuse new jobs and turn away those still queued (running ones finish)."""
        self._closed = True
        while self._line:
            ticket = self._line.pop()
            ticket.state = "waiting"
            if ticket._turn is not None and not ticket._turn.done():
                ticket._turn.set_exception(QueueClosed())

    def _leave(self, ticket: Ticket) -> None:
        """A cancelled (or turned away) waiter gives back its place, or its slot if the turn
        had already come."""
        if ticket.state == "compiling":
            self._running -= 1
            self._dispatch()
        else:
            self._line.remove(ticket.owner, ticket)
        ticket.state = "waiting"

    def _dispatch(self) -> None:
        while self._running < self.slots and self._line and not self._closed:
            ticket = self._line.pop()
            self._running += 1
            ticket.state = "compiling"
            assert ticket._turn is not None
            ticket._turn.set_result(None)
