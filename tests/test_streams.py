"""Deploy and stream through a real daemon: REST deployments and msgpack WebSockets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from specklab.schemas.events import DVS_DTYPE, EventKind, dvs_events, spikes
from specklab.schemas.frames import EventsFrame, encode
from specklab.schemas.stream import (
    CLOSE_ENDED,
    BatchEnd,
    ClientStream,
    ForwardResult,
    Outputs,
    Stats,
    StreamError,
    refusal_close_code,
)
from specklab.server.recordings.aedat import read_aedat4

from .guide_inputs import guide_spikes
from .stream_lab import DEVICE, StreamLab, open_stream, stream_lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamLab]:
    with stream_lab(tmp_path_factory.mktemp("streams") / "data") as running:
        yield running


@pytest.fixture(scope="module")
def deployed(lab: StreamLab) -> dict:
    """ada books the virtual devkit and deploys the guide's network, monitoring every layer."""
    return lab.book_and_deploy_guide("ada", monitor_layers="all")


def input_spikes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return guide_spikes(rng, n, 50_000)


def forward(websocket, client: ClientStream, events: np.ndarray) -> tuple[ForwardResult, BatchEnd]:
    seq = client.send_events("spike", events)
    for message in client.data_to_send():
        websocket.send(message)
    result = ForwardResult(seq)
    while True:
        event = client.receive_data(websocket.recv(timeout=120))
        if isinstance(event, Outputs):
            assert event.seq == seq
            result.add(event.kind, event.events)
        elif isinstance(event, BatchEnd):
            assert event.seq == seq
            return result, event
        else:
            raise AssertionError(f"unexpected {event!r}")


def test_deployment_reports_the_placement(lab: StreamLab, deployed: dict) -> None:
    assert deployed["layers"] == {"0": 0, "1": 3, "2": 5, "3": 6, "4": 1}
    assert deployed["monitored"] == [0, 1, 2, 3, 4]
    assert deployed["inputs"] == [0]
    with lab.http("ada") as http:
        assert http.get(f"/v1/devices/{DEVICE}/deployment").json() == deployed
    with lab.http("bob") as http:
        assert http.get(f"/v1/devices/{DEVICE}/deployment").status_code == 404


def test_forward_turns_input_spikes_into_output_spikes_with_layer_numbering(
    lab: StreamLab, deployed: dict
) -> None:
    with lab.websocket("ada", f"/v1/devices/{DEVICE}/stream?mode=forward") as websocket:
        client = open_stream(websocket)
        assert client.info["layers"] == {"0": 0, "1": 3, "2": 5, "3": 6, "4": 1}
        events = input_spikes(3000)
        result, end = forward(websocket, client, events)
        out = result.events(EventKind.SPIKE)
        assert end.counts["spike"] == len(out) > 0
        assert end.counts["complete"] == 1
        core_of = {int(k): v for k, v in deployed["layers"].items()}
        assert set(out["layer"].tolist()) <= set(core_of)
        for layer, core in core_of.items():
            assert set(out["core"][out["layer"] == layer].tolist()) <= {core}
        assert (np.diff(out["t"].astype(np.int64)) >= 0).all()
        assert out["t"].min() >= events["t"].min()
        # the same batch again, after a reset, gives the same answer (deterministic chip)
        client.send_control("reset_states")
        for message in client.data_to_send():
            websocket.send(message)
        again, _ = forward(websocket, client, events)
        np.testing.assert_array_equal(again.events(EventKind.SPIKE), out)


def test_bad_frames_get_error_frames_and_the_stream_goes_on(lab: StreamLab, deployed: dict) -> None:
    with lab.websocket("ada", f"/v1/devices/{DEVICE}/stream") as websocket:
        client = open_stream(websocket)
        bad = [
            b"\xc1garbage",
            encode(EventsFrame(EventKind.SPIKE, spikes(t=0, layer=3, feature=0, x=0, y=0), seq=0)),
            encode(EventsFrame(EventKind.SPIKE, spikes(t=0, layer=0, feature=0, x=99, y=0), seq=0)),
            encode(EventsFrame(EventKind.DVS, dvs_events(t=0, x=1, y=1, p=1), seq=0)),
        ]
        for message in bad:
            websocket.send(message)
            error = client.receive_data(websocket.recv(timeout=30))
            assert isinstance(error, StreamError) and not error.fatal, error
            assert error.code in ("malformed", "bad_input"), error
        websocket.send("text is not a frame")
        assert isinstance(client.receive_data(websocket.recv(timeout=30)), StreamError)
        result, _ = forward(websocket, client, input_spikes(10))
        assert isinstance(result, ForwardResult)


def test_stats_are_reported(lab: StreamLab, deployed: dict) -> None:
    with lab.websocket("ada", f"/v1/devices/{DEVICE}/stream") as websocket:
        client = open_stream(websocket)
        forward(websocket, client, input_spikes(100))
        client.send_control("stats")
        for message in client.data_to_send():
            websocket.send(message)
        stats = client.receive_data(websocket.recv(timeout=30))
        assert isinstance(stats, Stats)
        assert stats.counters["events_in"] == 100 and "dropped" in stats.counters


def test_continuous_mode_paces_inputs_and_streams_outputs(lab: StreamLab, deployed: dict) -> None:
    with lab.websocket("ada", f"/v1/devices/{DEVICE}/stream?mode=continuous") as websocket:
        client = open_stream(websocket)
        events = input_spikes(2000)
        events["t"] = np.sort(np.random.default_rng(1).integers(0, 200_000, len(events)))
        client.send_events("spike", events)
        for message in client.data_to_send():
            websocket.send(message)
        received: list[np.ndarray] = []
        while sum(map(len, received)) == 0 or received[-1]["t"].max() < 150_000:
            event = client.receive_data(websocket.recv(timeout=30))
            if isinstance(event, Outputs) and event.kind is EventKind.SPIKE:
                received.append(event.events)
        out = np.concatenate(received)
        assert out["t"].max() >= 150_000
        assert len(out) > 0


def test_other_users_and_unbooked_devices_are_refused(lab: StreamLab, deployed: dict) -> None:
    with lab.websocket("bob", f"/v1/devices/{DEVICE}/stream") as websocket:
        error = ClientStream().receive_data(websocket.recv(timeout=30))
        assert isinstance(error, StreamError) and error.fatal
        assert error.code == "device_booked" and "ada" in error.message
        assert error.detail["next_free"]
        with pytest.raises(ConnectionClosed) as closed:
            websocket.recv(timeout=30)
        assert closed.value.rcvd.code == refusal_close_code(409)


def test_dvs_stream_of_the_virtual_sensor(lab: StreamLab, deployed: dict) -> None:
    with lab.websocket("ada", f"/v1/devices/{DEVICE}/dvs?raw=true") as websocket:
        client = open_stream(websocket)
        events = []
        while sum(map(len, events)) < 500:
            event = client.receive_data(websocket.recv(timeout=30))
            if isinstance(event, Outputs):
                assert event.kind is EventKind.DVS
                events.append(event.events)
        out = np.concatenate(events)
        assert out["x"].max() < 128 and out["y"].max() < 128 and set(out["p"].tolist()) <= {0, 1}


def test_preemption_ends_the_stream_with_a_fatal_error(tmp_path: Path) -> None:
    with stream_lab(tmp_path / "data") as lab:
        model_id = lab.upload_guide("ada")
        booking = lab.book("ada")
        with lab.http("ada") as http:
            assert (
                http.post(
                    f"/v1/devices/{DEVICE}/deployment", json={"model_id": model_id}
                ).status_code
                == 201
            )
        with lab.websocket("ada", f"/v1/devices/{DEVICE}/stream") as websocket:
            client = open_stream(websocket)
            with lab.http("admin") as http:
                preempt = http.post(
                    f"/v1/bookings/{booking}/preempt", json={"reason": "maintenance"}
                )
                assert preempt.status_code == 200
            error = client.receive_data(websocket.recv(timeout=30))
            assert isinstance(error, StreamError) and error.fatal
            assert error.code == "booking_preempted"
            assert error.message.endswith(": maintenance")
            with pytest.raises(ConnectionClosed) as closed:
                websocket.recv(timeout=30)
            assert closed.value.rcvd.code == CLOSE_ENDED
        with lab.http("ada") as http:
            assert http.get(f"/v1/devices/{DEVICE}/deployment").status_code == 404


def test_a_five_second_dvs_recording_downloads_and_reads_back(
    lab: StreamLab, deployed: dict, tmp_path: Path
) -> None:
    with lab.http("ada") as http:
        response = http.post(
            "/v1/recordings", json={"device_id": DEVICE, "duration_s": 5.0, "name": "scene"}
        )
        assert response.status_code == 201, response.text
        recording = response.json()
        assert recording["kind"] == "dvs" and recording["event_count"] > 1000
        assert 4.9 <= recording["duration_s"] <= 5.0
        assert [r["id"] for r in http.get("/v1/recordings").json()] == [recording["id"]]

        npy = http.get(f"/v1/recordings/{recording['id']}/events.npy")
        assert npy.status_code == 200
        path = tmp_path / "scene.npy"
        path.write_bytes(npy.content)
        events = np.load(path, allow_pickle=False)
        assert events.dtype == DVS_DTYPE and len(events) == recording["event_count"]
        assert events["t"].max() < 5_000_000 and (np.diff(events["t"].astype(np.int64)) >= 0).all()

        aedat = http.get(f"/v1/recordings/{recording['id']}/events.aedat4")
        assert aedat.status_code == 200
        (tmp_path / "scene.aedat4").write_bytes(aedat.content)
        np.testing.assert_array_equal(read_aedat4(tmp_path / "scene.aedat4"), events)

    with lab.http("bob") as http:
        assert http.get(f"/v1/recordings/{recording['id']}/events.npy").status_code == 404

    with lab.http("ada") as http:
        assert http.delete(f"/v1/recordings/{recording['id']}").status_code == 204
        assert http.get(f"/v1/recordings/{recording['id']}").status_code == 404


def test_recording_the_monitored_layers(lab: StreamLab, deployed: dict) -> None:
    with lab.http("ada") as http:
        response = http.post(
            "/v1/recordings", json={"device_id": DEVICE, "duration_s": 0.5, "source": "monitor"}
        )
        assert response.status_code == 201, response.text
        assert response.json()["kind"] == "spike"
        assert http.get(f"/v1/recordings/{response.json()['id']}/events.aedat4").status_code == 422


def test_recording_needs_a_booking(lab: StreamLab, deployed: dict) -> None:
    with lab.http("bob") as http:
        response = http.post("/v1/recordings", json={"device_id": DEVICE, "duration_s": 1})
        assert response.status_code == 409
        assert response.json()["code"] == "device_booked"


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    message=st.binary(max_size=200)
    | st.dictionaries(
        st.sampled_from(["v", "type", "kind", "dtype", "bin", "seq", "op"]),
        st.integers(0, 3)
        | st.sampled_from(["events", "control", "spike", "dvs"])
        | st.binary(max_size=40),
        max_size=6,
    ).map(lambda body: msgpack.packb(body))
)
def test_fuzzed_frames_through_the_endpoint_leave_the_stream_working(
    lab: StreamLab, deployed: dict, message: bytes
) -> None:
    with lab.websocket("ada", f"/v1/devices/{DEVICE}/stream") as websocket:
        client = open_stream(websocket)
        websocket.send(message)
        reply = client.receive_data(websocket.recv(timeout=60))
        assert isinstance(reply, StreamError | Outputs | BatchEnd), reply
        assert not isinstance(reply, StreamError) or not reply.fatal
        if not isinstance(reply, StreamError):  # it was a valid batch: read to its end
            while not isinstance(reply, BatchEnd):
                reply = client.receive_data(websocket.recv(timeout=60))
        result, _ = forward(websocket, client, input_spikes(5))
        assert isinstance(result, ForwardResult)
