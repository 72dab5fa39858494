"""Deployments, streams and recordings through the asyncio client, against the real daemon."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from specklab.client import (
    AsyncBooking,
    AsyncClient,
    BookingConflict,
    Client,
    RemoteModel,
    Spike,
    StreamError,
)
from specklab.schemas.events import SPIKE_DTYPE

from .conftest import GRID_OUTPUTS, Account, all_ones_outputs, grid


@pytest.fixture
async def alab(streamer: Account) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(streamer.url, streamer.token) as client:
        yield client


@pytest.fixture
async def abooking(alab: AsyncClient) -> AsyncIterator[AsyncBooking]:
    async with alab.book("speck2fdevkit", minutes=5) as booking:
        yield booking


async def test_deploy_and_call_the_model(
    alab: AsyncClient, abooking: AsyncBooking, remote_model: RemoteModel
) -> None:
    async with alab.deploy(remote_model, abooking.device_id) as hw_model:
        events_out = await hw_model([Spike(layer=0, x=3, y=3, feature=0, timestamp=7)])
        assert events_out.dtype == SPIKE_DTYPE and len(events_out) == all_ones_outputs(3, 3)
        result = await hw_model.forward(grid())
        assert len(result.spikes) == GRID_OUTPUTS
        outputs = [o async for o in hw_model.forward_many([grid(), grid()], window=2)]
        assert [len(o.spikes) for o in outputs] == [GRID_OUTPUTS, GRID_OUTPUTS]
        with pytest.raises(StreamError, match="out of range"):
            await hw_model([Spike(layer=0, x=0, y=12, feature=0, timestamp=0)])
        await hw_model.reset_states()
        membrane = await hw_model.membrane(0)
        assert (membrane.dtype, membrane.shape) == (np.int32, (4, 6, 6))
        assert (await alab.neuron_states(abooking.device_id, 0)).shape == (4, 6, 6)
        assert (await alab.deployment(abooking.device_id)).model_id == remote_model.id
        await hw_model.undeploy()


async def test_continuous_stream_with_a_sending_task(
    alab: AsyncClient, abooking: AsyncBooking, remote_model: RemoteModel
) -> None:
    hw_model = await alab.deploy(remote_model, abooking.device_id)

    async def batches() -> AsyncIterator[np.ndarray]:
        for i in range(3):
            yield grid(i * 1000)

    async with hw_model.stream() as stream:
        sending = asyncio.create_task(stream.send_from(batches()))
        received = 0
        async for events in stream.outputs(idle=1.0):
            received += len(events)
        assert await sending == 3
        assert received == 3 * GRID_OUTPUTS
        assert (await stream.stats())["events_in"] == 3 * 64
    await hw_model.aclose()


async def test_a_preemptions_reason_reaches_the_async_stream(
    admin: Client, alab: AsyncClient, abooking: AsyncBooking, remote_model: RemoteModel
) -> None:
    async with alab.deploy(remote_model, abooking.device_id) as hw_model:
        assert len(await hw_model(grid())) == GRID_OUTPUTS
        admin.preempt(abooking.id, reason="maintenance")
        stream = hw_model._stream
        assert stream is not None
        # The close has arrived before the next batch is sent (see the blocking client's test).
        await asyncio.wait_for(stream._connection.wait_closed(), 30)
        with pytest.raises(StreamError) as raised:
            await hw_model(grid())
        assert raised.value.code == "booking_preempted"
        assert "maintenance" in raised.value.message


async def test_a_stream_refused_for_lack_of_a_booking(
    alab: AsyncClient, abooking: AsyncBooking
) -> None:
    other = next(d.id for d in await alab.devices() if d.virtual and d.id != abooking.device_id)
    with pytest.raises(BookingConflict, match="not booked by you"):
        await alab.stream(other)


async def test_record_the_monitored_layer(
    alab: AsyncClient, abooking: AsyncBooking, remote_model: RemoteModel
) -> None:
    hw_model = await alab.deploy(remote_model, abooking.device_id)
    async with hw_model.stream() as stream:

        async def feed() -> None:
            await asyncio.sleep(0.1)
            await stream.send_from([grid(), grid(50_000)])

        recording, _ = await asyncio.gather(
            alab.record(abooking.device_id, 0.5, source="monitor"), feed()
        )
    assert recording.event_count == 2 * GRID_OUTPUTS
    events = await alab.recording_events(recording)
    assert len(events) == recording.event_count
    await alab.delete_recording(recording)


async def test_live_dvs_events(alab: AsyncClient, abooking: AsyncBooking) -> None:
    async with alab.dvs_stream(abooking.device_id) as live:
        received = 0
        async for events in live.outputs(idle=2.0):
            received += len(events)
            if received >= 100:
                break
    assert received >= 100
