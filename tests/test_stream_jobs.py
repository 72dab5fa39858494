"""A stream's concurrent jobs: the first to finish ends them all, and which failure is told."""

from __future__ import annotations

import asyncio

import pytest
from starlette.websockets import WebSocketDisconnect

from specklab.server.api.streams import _StreamEnd
from specklab.server.api.tasks import run_until_first_done


async def _forever(cancelled: list[str], name: str, started: list[str] | None = None) -> None:
    if started is not None:
        started.append(name)
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        cancelled.append(name)
        raise


async def _fail(error: BaseException) -> None:
    await asyncio.sleep(0)
    raise error


async def test_the_first_job_to_return_cancels_the_others() -> None:
    cancelled: list[str] = []
    await run_until_first_done(_forever(cancelled, "a"), asyncio.sleep(0), _forever(cancelled, "b"))
    assert sorted(cancelled) == ["a", "b"]


async def test_a_streams_end_is_told_over_the_failure_it_caused() -> None:
    end = _StreamEnd("booking_ended", "over", 4410)
    with pytest.raises(_StreamEnd) as told:
        await run_until_first_done(_fail(RuntimeError("send on a closing socket")), _fail(end))
    assert told.value is end


async def test_a_failure_is_told_as_itself() -> None:
    cancelled: list[str] = []
    with pytest.raises(RuntimeError, match="device gone"):
        await run_until_first_done(_forever(cancelled, "a"), _fail(RuntimeError("device gone")))
    assert cancelled == ["a"]


async def test_a_client_that_left_is_no_failure() -> None:
    cancelled: list[str] = []
    await run_until_first_done(_forever(cancelled, "a"), _fail(WebSocketDisconnect(1000)))
    assert cancelled == ["a"]


async def test_cancelling_the_stream_reaps_every_job() -> None:
    cancelled: list[str] = []
    started: list[str] = []
    runner = asyncio.create_task(
        run_until_first_done(_forever(cancelled, "a", started), _forever(cancelled, "b", started))
    )
    while len(started) < 2:
        await asyncio.sleep(0)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert sorted(cancelled) == ["a", "b"]
