"""Deployments and event streams through the blocking client, against the real daemon."""

from __future__ import annotations

import time

import numpy as np
import pytest
from websockets.protocol import State

from specklab.client import (
    Booking,
    BookingConflict,
    Client,
    Conflict,
    HardwareModel,
    InvalidRequest,
    NotFound,
    RemoteModel,
    Spike,
    StreamError,
    to_raster,
    to_spikes,
)
from specklab.schemas.events import SPIKE_DTYPE, spikes
from specklab.schemas.patch import ConfigPatch, CorePatch

from .conftest import GRID_OUTPUTS, LEASE_LAPSES_S, all_ones_outputs, grid


def test_deploy_then_call_the_model_like_the_guide(hw_model: HardwareModel) -> None:
    deployment = hw_model.deployment
    assert deployment.inputs == [0] and deployment.monitored == [0]
    assert hw_model.client.deployment(hw_model.device).model_id == deployment.model_id
    events_in = [Spike(layer=0, x=3, y=3, feature=0, timestamp=100)]
    events_out = hw_model(events_in)
    assert events_out.dtype == SPIKE_DTYPE
    assert len(events_out) == all_ones_outputs(3, 3) == 36
    out = to_spikes(events_out)
    assert {(s.layer, s.timestamp) for s in out} == {(0, 100)}
    assert {(s.x, s.y) for s in out} == {(x, y) for x in (1, 2, 3) for y in (1, 2, 3)}


def test_arrays_rasters_and_forward_outputs(hw_model: HardwareModel) -> None:
    result = hw_model.forward(grid())
    assert len(result.spikes) == GRID_OUTPUTS
    assert result.counts["spike"] == GRID_OUTPUTS
    assert len(result.readout) == 0
    raster = to_raster(result.spikes, dt=1000, shape=(4, 6, 6))
    assert raster.shape == (1, 4, 6, 6) and raster.sum() == GRID_OUTPUTS
    counts = np.zeros((3, 1, 8, 8), dtype=np.int64)
    counts[2, 0, 0, 0] = 2  # two spikes at the corner in step 2
    from_raster = hw_model(counts, dt=500)
    assert len(from_raster) == 2 * all_ones_outputs(0, 0)
    assert set(from_raster["t"].tolist()) == {1000}


def test_forward_many_pipelines_batches_in_order(hw_model: HardwareModel) -> None:
    batches = [grid(), spikes(t=[5], layer=0, feature=0, x=0, y=0), grid(1000)]
    outputs = list(hw_model.forward_many(batches, window=2))
    assert [len(o.spikes) for o in outputs] == [GRID_OUTPUTS, 4, GRID_OUTPUTS]
    assert outputs[0].seq < outputs[1].seq < outputs[2].seq


def test_bad_input_is_a_non_fatal_stream_error(hw_model: HardwareModel) -> None:
    with pytest.raises(StreamError, match="x=9 is out of range") as raised:
        hw_model([Spike(layer=0, x=9, y=0, feature=0, timestamp=0)])
    assert raised.value.code == "bad_input" and not raised.value.fatal
    assert len(hw_model([Spike(layer=0, x=0, y=0, feature=0, timestamp=0)])) == 4
    hw_model.reset_states()
    hw_model.close()
    hw_model.reset_states()  # without a stream, over REST


def test_continuous_stream_sends_in_the_background_and_iterates(
    lab: Client, hw_model: HardwareModel
) -> None:
    with hw_model.stream() as stream:
        assert stream.info["mode"] == "continuous"
        sent = stream.send_from([grid(), grid(2000)], background=True)
        received = sum(len(events) for events in stream.outputs(idle=1.0))
        assert sent.result(timeout=5) == 2
        assert received == 2 * GRID_OUTPUTS
        stats = stream.stats()
        assert stats["events_in"] == 128 and stats["dropped"] == 0
    with pytest.raises(Exception, match="closed"):
        stream.stats()


def test_streams_need_a_booking_and_a_deployment(
    lab: Client, admin: Client, booking: Booking
) -> None:
    with pytest.raises(Conflict, match="deploy a model first") as raised:
        lab.stream(booking.device_id)
    assert raised.value.code == "not_deployed"
    other = next(d.id for d in lab.devices() if d.virtual and d.id != booking.device_id)
    with pytest.raises(BookingConflict) as refused:
        lab.stream(other, mode="forward")
    # The refusal is the REST one: same status and code (a WebSocket refusal has no detail).
    assert (refused.value.status, refused.value.code) == (409, "not_booked")


def test_undeploy(lab: Client, hw_model: HardwareModel) -> None:
    hw_model.undeploy()
    with pytest.raises(NotFound, match="nothing is deployed"):
        lab.deployment(hw_model.device)


def test_a_preempted_booking_ends_the_stream_with_a_fatal_error(
    admin: Client, booking: Booking, hw_model: HardwareModel
) -> None:
    assert len(hw_model(grid())) == GRID_OUTPUTS
    admin.preempt(booking.id, reason="maintenance")
    # The daemon's fatal frame and close arrive before the next batch is sent: the send finds
    # the stream closed, and the error still carries the frame's reason.
    stream = hw_model._stream
    assert stream is not None
    deadline = time.monotonic() + 30
    while stream._connection.state is not State.CLOSED and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(StreamError) as raised:
        hw_model(grid())
    assert raised.value.fatal and raised.value.code == "booking_preempted"
    assert "maintenance" in raised.value.message
    assert booking.refresh().end_reason == "preempted by admin: maintenance"


def test_an_open_stream_keeps_its_booking_in_use(lab: Client, remote_model: RemoteModel) -> None:
    booking = lab.book("speck2fdevkit", minutes=5)  # no lease held: only use keeps it
    try:
        with lab.deploy(remote_model, booking.device_id) as model, model.stream():
            time.sleep(LEASE_LAPSES_S)  # longer than the idle time, with no frame sent
            assert booking.refresh().status == "running"
    finally:
        lab.cancel(booking.id)


def test_deploy_with_a_config_patch(
    lab: Client, booking: Booking, remote_model: RemoteModel
) -> None:
    halve = ConfigPatch(
        layers={0: CorePatch(output_decimator_enable=True, output_decimator_interval=2)}
    )
    with lab.deploy(remote_model, booking.device_id, config_patch=halve) as hw_model:
        assert len(hw_model(grid())) == GRID_OUTPUTS // 2
    with pytest.raises(InvalidRequest, match=r"layers\.7"):
        lab.deploy(remote_model, booking.device_id, config_patch={"layers": {7: {}}})


def test_membrane_potentials_of_a_layer(hw_model: HardwareModel) -> None:
    # The values themselves are checked against the simulator in tests/devices: here, that
    # the client asks for the right layer and hands back its array.
    hw_model([Spike(layer=0, x=3, y=3, feature=0, timestamp=100)])
    membrane = hw_model.membrane(0)
    assert (membrane.dtype, membrane.shape) == (np.int32, (4, 6, 6))
    states = hw_model.client.neuron_states(hw_model.device, 0)
    assert (states.layer, states.core) == (0, hw_model.deployment.layers[0])
    np.testing.assert_array_equal(states.array(), membrane)
    with pytest.raises(NotFound, match="no layer 3"):
        hw_model.membrane(3)
