"""Recordings through the blocking client, against the real daemon."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from specklab.client import Booking, Client, HardwareModel, InvalidRequest, NotFound
from specklab.schemas.events import DVS_DTYPE, SPIKE_DTYPE, EventKind

from .conftest import GRID_OUTPUTS, grid


def test_record_the_monitored_layer_while_a_stream_feeds_it(
    lab: Client, hw_model: HardwareModel, tmp_path: Path
) -> None:
    with hw_model.stream() as stream:

        def feed() -> None:
            time.sleep(0.1)  # the recording starts first
            for i in range(4):
                stream.send(grid(i * 50_000))

        feeder = threading.Thread(target=feed)
        feeder.start()
        recording = lab.record(hw_model.device, 0.6, source="monitor", name="grid")
        feeder.join()
    assert (recording.name, recording.source, recording.kind) == ("grid", "monitor", "spike")
    assert recording.event_count == 4 * GRID_OUTPUTS
    assert recording.id in [r.id for r in lab.recordings()]
    assert lab.recording(recording.id) == recording

    events = lab.recording_events(recording, progress=True)
    assert events.dtype == SPIKE_DTYPE and len(events) == recording.event_count
    saved = tmp_path / "grid.npy"
    lab.download_recording(recording, saved, progress=True)
    assert np.array_equal(np.load(saved), events)

    with pytest.raises(InvalidRequest, match="only DVS recordings"):
        lab.download_recording(recording, tmp_path / "grid.aedat4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.npy"]  # nothing half-written
    with pytest.raises(InvalidRequest, match="only DVS recordings"):
        lab.replay(recording, hw_model.device)

    lab.delete_recording(recording)
    with pytest.raises(NotFound):
        lab.recording(recording.id)


def test_record_dvs_returns_the_sensors_events(lab: Client, booking: Booking) -> None:
    events = lab.record_dvs(booking.device_id, 0.3, progress=True)
    assert events.dtype == DVS_DTYPE and len(events) > 0
    recording = next(r for r in lab.recordings() if r.source == "dvs")
    assert recording.kind is EventKind.DVS and recording.event_count == len(events)


def test_a_dvs_recording_downloads_as_aedat4(lab: Client, booking: Booking, tmp_path: Path) -> None:
    recording = lab.record(booking.device_id, 0.2)
    with (tmp_path / "dvs.aedat4").open("wb") as sink:
        lab.download_recording(recording, sink, format="aedat4")
    assert (tmp_path / "dvs.aedat4").read_bytes().startswith(b"#!AER-DAT4.0")


def test_live_dvs_events_stream(lab: Client, booking: Booking) -> None:
    with lab.dvs_stream(booking.device_id) as live:
        assert live.info["raw"] is True
        received = 0
        for events in live.outputs(idle=2.0):
            assert events.dtype == DVS_DTYPE
            received += len(events)
            if received >= 100:
                break
    assert received >= 100


def test_replay_a_dvs_recording_into_a_dvs_input_network(lab: Client, booking: Booking) -> None:
    torch = pytest.importorskip("torch")
    network = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, bias=False), torch.nn.ReLU())
    with torch.no_grad():
        network[0].weight.fill_(1.0)
    model = lab.compile(network, input_shape=(2, 16, 16), dvs_input=True)
    assert model.report.dvs is not None and model.report.dvs.cut == (15, 15)
    recording = lab.record(booking.device_id, 0.3)
    with lab.deploy(model, booking.device_id) as hw_model, hw_model.stream() as stream:
        assert stream.info["dvs_input"] is True
        assert lab.replay(recording, booking.device_id, speed=2.0) == recording.event_count
        replayed = sum(len(events) for events in stream.outputs(idle=1.0))
    assert replayed > 0
    # The same events, sent as one batch of DVS input.
    events = lab.recording_events(recording)
    assert len(hw_model.forward(events).spikes) > 0
