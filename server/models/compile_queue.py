"""A fair queue in front of the compiler pool.

Each user's compiles wait in their own FIFO, and a free worker goes to the user served least
recently (round robin), so one user's twenty queued uploads delay another user's one upload by
at most one of them (beyond the compiles already running). Who waits where is visible while
they wait (:meth:`CompileQueue.status`).

:class:`FairQueue` is the ordering alone, with no I/O; :class:`CompileQueue` hands its slots
(one per compile worker) to the items of a :class:`FairQueue` and runs each job in a thread.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

import anyio

T = TypeVar("T")
R = TypeVar("R")

State = Literal["waiting", "queued", "compiling"]


class FairQueue(Generic[T]):
    """Per-owner FIFOs; the next item is the first of the owner served least recently (owners
    never served first, in the order their lines formed)."""

    def __init__(self) -> None:
        self._lines: dict[Hashable, deque[T]] = {}
        # When each line formed, to order owners never served.
        self._formed: dict[Hashable, int] = {}
        # The pop that last served each owner (one entry per owner ever served: one per user).
        self._served: dict[Hashable, int] = {}
        self._pops = 0
        self._forming = itertools.count()

    def __len__(self) -> int:
        return sum(len(line) for line in self._lines.values())

    def push(self, owner: Hashable, item: T) -> None:
        if owner not in self._lines:
            self._lines[owner] = deque()
            self._formed[owner] = next(self._forming)
        self._lines[owner].append(item)

    def pop(self) -> T:
        """The next item; IndexError when empty."""
        if not self._lines:
            raise IndexError("pop from an empty FairQueue")
        owner = self._next_owner({o: len(line) for o, line in self._lines.items()}, self._served)
        item = self._lines[owner].popleft()
        if not self._lines[owner]:
            self.remove(owner, item)
        self._served[owner] = self._pops
        self._pops += 1
        return item

    def remove(self, owner: Hashable, item: T) -> None:
        line = self._lines.get(owner)
        if line is None:
            return
        if item in line:
            line.remove(item)
        if not line:
            del self._lines[owner], self._formed[owner]

    def ahead(self, owner: Hashable, item: T) -> int:
        """How many items :meth:`pop` hands out before ``item`` (pops replayed on counts)."""
        rank = self._lines[owner].index(item)
        lengths = {o: len(line) for o, line in self._lines.items()}
        served = dict(self._served)
        count = 0
        while True:
            turn = self._next_owner(lengths, served)
            if turn == owner:
                if rank == 0:
                    return count
                rank -= 1
            lengths[turn] -= 1
            if not lengths[turn]:
                del lengths[turn]
            served[turn] = self._pops + count
            count += 1

    def _next_owner(self, lengths: dict[Hashable, int], served: dict[Hashable, int]) -> Hashable:
        return min(lengths, key=lambda o: (served.get(o, -1), self._formed[o]))


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
            assert ticket._turn is not None
            if ticket._turn.done():  # cancelled; its task has yet to leave the line
                continue
            self._running += 1
            ticket.state = "compiling"
            ticket._turn.set_result(None)
