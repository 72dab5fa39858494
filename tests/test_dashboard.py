"""The dashboard's server side, in process: the binning of the live view, its WebSocket (roles,
refusals, spectators), the lab overview, the pages and their security headers. The pages
themselves are driven in a real browser in ``tests/browser``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import WebSocketDenialResponse, WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from specklab.schemas.events import dvs_events, spikes
from specklab.schemas.stream import ClientStream
from specklab.server.dashboard.binning import (
    MAX_PIXEL_COUNT,
    DvsBinner,
    RasterBinner,
    RasterLayer,
)

from .fixtures_models import guide_network, torchscript_bytes
from .guide_inputs import guide_spikes
from .lab_client import Lab, bearer, running_lab

DEVICE = "virtual-speck2fdevkit:0@test-host"


# ----- binning -----


def test_dvs_binner_counts_each_pixel_and_polarity_like_a_plain_loop() -> None:
    rng = np.random.default_rng(1)
    n = 50_000
    events = dvs_events(
        t=np.arange(n),
        x=rng.integers(0, 140, n),  # some beyond the 128-pixel sensor: ignored
        y=rng.integers(0, 128, n),
        p=rng.integers(0, 2, n),
    )
    binner = DvsBinner(128, 128)
    binner.add(events[: n // 2])
    binner.add(events[n // 2 :])
    count, image = binner.take()

    expected = np.zeros((2, 128, 128), dtype=np.int64)
    for x, y, p in zip(events["x"], events["y"], events["p"], strict=True):
        if x < 128:
            expected[p, y, x] += 1
    assert count == n
    got = np.frombuffer(image, dtype=np.uint8).reshape(2, 128, 128)
    np.testing.assert_array_equal(got, np.minimum(expected, MAX_PIXEL_COUNT))
    # Taking starts a new frame.
    assert binner.take() == (0, bytes(2 * 128 * 128))


def test_dvs_binner_saturates_a_busy_pixel() -> None:
    binner = DvsBinner(4, 2)
    binner.add(dvs_events(t=np.arange(1000), x=3, y=1, p=1))
    _, image = binner.take()
    assert image[8 + 1 * 4 + 3] == MAX_PIXEL_COUNT
    assert sum(image) == MAX_PIXEL_COUNT


def test_raster_binner_counts_every_spike_and_draws_at_most_its_share() -> None:
    layers = [RasterLayer(0, 2, (4, 3, 5)), RasterLayer(1, 7, (10, 1, 1))]
    binner = RasterBinner(layers, max_points=100)
    many = spikes(t=np.arange(1000), layer=0, feature=3, x=4, y=2)
    few = spikes(t=[5, 9], layer=1, feature=[2, 9], x=0, y=0)
    other = spikes(t=[1], layer=4, feature=0, x=0, y=0)  # not monitored: ignored
    binner.add(np.concatenate([many[:600], few, other]))
    binner.add(many[600:])
    first, second = binner.take(seconds=0.5)

    assert first["count"] == 1000 and first["rate_hz"] == 2000
    assert len(first["t"]) == 100 and set(first["n"]) == {3 * 15 + 2 * 5 + 4}
    assert first["neurons"] == 60
    assert second == {
        "layer": 1,
        "core": 7,
        "neurons": 10,
        "count": 2,
        "rate_hz": 4.0,
        "t": [5, 9],
        "n": [2, 9],
    }
    assert [layer["count"] for layer in binner.take(seconds=0.5)] == [0, 0]


# ----- the daemon -----


@pytest.fixture
def lab(tmp_path: Path, database_url: str) -> Iterator[Lab]:
    with running_lab(tmp_path / "data", database_url, virtual=["speck2fdevkit"]) as running:
        yield running


def live(lab: Lab, token: str, query: str = "", device: str = DEVICE) -> WebSocketTestSession:
    return lab.client.websocket_connect(
        f"/v1/devices/{device}/live{query}", subprotocols=["specklab.live", f"bearer.{token}"]
    )


def next_text(websocket: WebSocketTestSession) -> dict[str, object]:
    while True:
        message = websocket.receive()
        if message.get("text") is not None:
            return json.loads(message["text"])
        if message["type"] == "websocket.close":
            raise AssertionError(f"closed: {message}")


def next_frame(websocket: WebSocketTestSession) -> dict[str, object]:
    while True:
        message = websocket.receive()
        if message.get("bytes") is not None:
            data = message["bytes"]
            length = int.from_bytes(data[:4], "little")
            header = json.loads(data[4 : 4 + length])
            header["image"] = data[4 + length :]
            return header
        assert message["type"] != "websocket.close", message


def test_pages_come_with_headers_that_refuse_framing(lab: Lab) -> None:
    page = lab.client.get("/")
    assert page.status_code == 200
    assert "dashboard/js/app.js" in page.text and "<script>" not in page.text
    script = lab.client.get("/dashboard/js/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    for response in (page, script, lab.client.get("/v1/health")):
        assert response.headers["x-frame-options"] == "DENY"
        policy = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
    assert lab.client.get("/dashboard/../app.py").status_code == 404


def test_the_overview_shows_every_booking_to_every_role(lab: Lab) -> None:
    _, ada = lab.add_user("ada")
    _, olga = lab.add_user("olga", role="observer")
    booked = lab.client.post(
        "/v1/bookings", json={"device_id": DEVICE, "minutes": 30}, headers=bearer(ada)
    )
    assert booked.status_code == 201, booked.text
    for token, mine in ((ada, True), (olga, False)):
        overview = lab.client.get("/v1/lab/overview", headers=bearer(token))
        assert overview.status_code == 200, overview.text
        [booking] = overview.json()["bookings"]
        assert booking["user_name"] == "ada" and booking["mine"] is mine
    later = lab.client.get(
        "/v1/lab/overview",
        params={"start": "2099-01-01T00:00:00+00:00", "hours": 24},
        headers=bearer(ada),
    )
    assert later.json()["bookings"] == []
    assert lab.client.get("/v1/lab/overview").status_code == 401
    too_long = lab.client.get("/v1/lab/overview", params={"hours": 10_000}, headers=bearer(ada))
    assert too_long.status_code == 422
    naive = lab.client.get(
        "/v1/lab/overview", params={"start": "2099-01-01T00:00"}, headers=bearer(ada)
    )
    assert naive.status_code == 422


@pytest.mark.parametrize("token", ["spk_not-a-token", None])
def test_the_live_view_refuses_bad_tokens_at_the_handshake(lab: Lab, token: str | None) -> None:
    protocols = ["specklab.live"] + ([f"bearer.{token}"] if token else [])
    path = f"/v1/devices/{DEVICE}/live"
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        lab.client.websocket_connect(path, subprotocols=protocols),
    ):
        pass
    assert denied.value.status_code == 401
    assert set(denied.value.json()) == {"code", "message", "detail"}


def test_the_live_view_of_an_unknown_device_ends_with_an_error_message(lab: Lab) -> None:
    _, ada = lab.add_user("ada")
    with live(lab, ada, device="virtual-speck2fdevkit:9") as websocket:
        error = next_text(websocket)
        assert error["type"] == "error" and error["code"] == "device_not_found"
        assert error["message"].endswith("did you mean virtual-speck2fdevkit:0@test-host?")
        assert error["fatal"]
        with pytest.raises(WebSocketDisconnect) as closed:
            websocket.receive_text()
        assert closed.value.code == 4404


def ada_holds_the_device(lab: Lab) -> tuple[str, str, str, int]:
    """Tokens of ada (who books the device), bob and olga the observer; ada's booking id."""
    _, ada = lab.add_user("ada")
    _, bob = lab.add_user("bob")
    _, olga = lab.add_user("olga", role="observer")
    booked = lab.client.post(
        "/v1/bookings", json={"device_id": DEVICE, "minutes": 30}, headers=bearer(ada)
    )
    assert booked.status_code == 201, booked.text
    return ada, bob, olga, booked.json()["id"]


def test_the_holder_sees_the_sensor_and_spectators_see_it_read_only(lab: Lab) -> None:
    ada, bob, olga, booking = ada_holds_the_device(lab)
    deployments = lab.app.state.deployments
    idle = {"type": "status", "role": "spectator", "state": "idle", "deployment": None}

    with live(lab, olga, "?sensor=true") as observer, live(lab, bob, "?sensor=true") as other:
        # Nothing streams: they wait, and ask for nothing (sensor=true is not theirs to ask).
        assert next_text(observer) == idle and next_text(other) == idle
        assert deployments.live_hub(DEVICE) is None

        with live(lab, ada, "?sensor=true") as holder:
            status = next_text(holder)
            assert status["role"] == "holder" and status["state"] == "watching"
            frame = next_frame(holder)
            while frame["dvs"]["events"] == 0:
                frame = next_frame(holder)
            assert frame["dvs"]["width"] == 128 and len(frame["image"]) == 2 * 128 * 128
            assert sum(frame["image"]) > 0

            for spectator in (observer, other):
                assert next_text(spectator)["state"] == "watching"
                seen = next_frame(spectator)
                while seen["dvs"] is None or seen["dvs"]["events"] == 0:
                    seen = next_frame(spectator)
            assert deployments.live_hub(DEVICE).stats()["consumers"] == 3
            # Heartbeats renew the booking's lease (anything else is ignored).
            lease = lab.client.get(f"/v1/bookings/{booking}", headers=bearer(ada)).json()
            holder.send_text("not json")
            holder.send_text(json.dumps({"op": "heartbeat"}))
            renewed = lease
            while renewed["lease_expires_at"] == lease["lease_expires_at"]:
                next_frame(holder)
                renewed = lab.client.get(f"/v1/bookings/{booking}", headers=bearer(ada)).json()
            assert renewed["lease_expires_at"] > lease["lease_expires_at"]

        # The holder left: the spectators let go of the device at once.
        assert next_text(observer) == idle and next_text(other) == idle
        assert deployments.live_hub(DEVICE) is None


def test_spectators_let_go_when_the_holders_stream_ends_and_the_deployment_stays(lab: Lab) -> None:
    ada, bob, olga, _ = ada_holds_the_device(lab)
    lab.deploy(ada, DEVICE, torchscript_bytes(guide_network()), [1, 28, 28], "lenet.pt")
    hub = lab.app.state.deployments.live_hub(DEVICE)
    rng = np.random.default_rng(0)
    n = 5000
    inputs = guide_spikes(rng, n, 2_000_000)

    with live(lab, olga) as observer, live(lab, bob) as other:
        for spectator in (observer, other):
            assert next_text(spectator)["state"] == "idle"  # deployed, but nobody streams
        assert hub.stats()["consumers"] == 0
        with lab.client.websocket_connect(
            f"/v1/devices/{DEVICE}/stream?mode=continuous", headers=bearer(ada)
        ) as stream:
            client = ClientStream()
            client.receive_data(stream.receive_bytes())  # ready
            client.send_events("spike", inputs)
            for message in client.data_to_send():
                stream.send_bytes(message)
            for spectator in (observer, other):
                status = next_text(spectator)
                assert status["state"] == "watching" and "lenet" in status["deployment"]
                frame = next_frame(spectator)
                while not any(layer["count"] for layer in frame["layers"]):
                    frame = next_frame(spectator)
                assert frame["dvs"] is None  # the holder does not watch the sensor
                assert [layer["layer"] for layer in frame["layers"]] == [0, 1, 2, 3, 4]
            assert hub.stats()["consumers"] == 3

        # The holder's stream ended, the deployment stays: both spectators let go of it.
        for spectator in (observer, other):
            assert next_text(spectator)["state"] == "idle"
        assert lab.app.state.deployments.live_hub(DEVICE) is hub
        assert hub.stats()["consumers"] == 0
