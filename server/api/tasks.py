"""A WebSocket's concurrent jobs (receive, send, watch, renew), run until the first ends."""

from __future__ import annotations

from collections.abc import Awaitable, Iterator

import anyio
from starlette.websockets import WebSocketDisconnect


class Ending(Exception):
    """Raised by a job to end its group for a reason the client is told (a stream's end)."""


async def run_until_first_done(*jobs: Awaitable[object]) -> None:
    """Run ``jobs`` until one returns or fails; the others are cancelled. A client that left is
    no failure, and an :class:`Ending` has its say over a failure it caused (a send on a closing
    socket)."""
    try:
        async with anyio.create_task_group() as group:
            for job in jobs:
                group.start_soon(_then_stop, job, group.cancel_scope)
    except ExceptionGroup as failures:
        found = [exc for exc in _leaves(failures) if not isinstance(exc, WebSocketDisconnect)]
        found.sort(key=lambda exc: not isinstance(exc, Ending))
        if found:
            raise found[0] from None


async def _then_stop(job: Awaitable[object], scope: anyio.CancelScope) -> None:
    await job
    scope.cancel()


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error
