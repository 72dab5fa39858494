"""DVS streams (/dvs) on the app in process: the device's own chip, and monitors put back."""

from __future__ import annotations

import time
from typing import Any

from specklab.schemas.events import DVS_CORE, EventKind, spikes
from specklab.schemas.stream import BatchEnd, ClientStream, Outputs, Ready, Stats, StreamError

from ..lab_client import Lab
from .test_api import deploy_guide


def _first_outputs(ws: Any) -> Outputs:
    client = ClientStream()
    greeting = client.receive_data(ws.receive_bytes())
    assert isinstance(greeting, Ready), greeting
    return _next_outputs(client, ws)


def _next_outputs(client: ClientStream, ws: Any) -> Outputs:
    while True:
        event = client.receive_data(ws.receive_bytes())
        if isinstance(event, Outputs):
            return event


def _dvs_monitored(lab: Lab, device: str) -> bool:
    deployment = lab.client.get(f"/v1/devices/{device}/deployment", headers=lab.admin)
    assert deployment.status_code == 200, deployment.text
    return deployment.json()["dvs_monitored"]


def test_a_speck2e_devkit_streams_its_sensor_without_a_deployment(make_lab: Any) -> None:
    lab = make_lab(virtual=["speck2edevkit=1"])
    device = "virtual-speck2edevkit:0"
    booked = lab.client.post(
        "/v1/bookings", headers=lab.admin, json={"device_id": device, "minutes": 30}
    )
    assert booked.status_code == 201, booked.text
    for raw, kind in ((True, EventKind.DVS), (False, EventKind.SPIKE)):
        url = f"/v1/devices/{device}/dvs?raw={str(raw).lower()}"
        with lab.client.websocket_connect(url, headers=lab.admin) as ws:
            assert _first_outputs(ws).kind is kind


def test_a_dvs_stream_leaves_the_deployments_monitors_as_they_were(make_lab: Any) -> None:
    lab = make_lab(virtual=["speck2fdevkit=1"])
    device = "virtual-speck2fdevkit:0"
    deploy_guide(lab, device)
    assert not _dvs_monitored(lab, device)
    with lab.client.websocket_connect(
        f"/v1/devices/{device}/dvs?raw=false", headers=lab.admin
    ) as ws:
        outputs = _first_outputs(ws)
        assert outputs.kind is EventKind.SPIKE and set(outputs.events["core"]) == {DVS_CORE}
        assert _dvs_monitored(lab, device)
    deadline = time.monotonic() + 30  # the daemon notices the closed socket on its own
    while _dvs_monitored(lab, device) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _dvs_monitored(lab, device)
    with lab.client.websocket_connect(f"/v1/devices/{device}/stream", headers=lab.admin) as ws:
        client = ClientStream()
        assert isinstance(client.receive_data(ws.receive_bytes()), Ready)
        client.send_events("spike", spikes(t=[0, 10], layer=0, feature=0, x=[3, 4], y=[5, 6]))
        for message in client.data_to_send():
            ws.send_bytes(message)
        cores: set[int] = set()
        while not isinstance(event := client.receive_data(ws.receive_bytes()), BatchEnd):
            if isinstance(event, Outputs):
                cores.update(event.events["core"].tolist() if event.kind is EventKind.SPIKE else [])
        assert DVS_CORE not in cores


def test_a_dvs_stream_refuses_input_and_streams_on(make_lab: Any) -> None:
    lab = make_lab(virtual=["speck2fdevkit=1"])
    device = "virtual-speck2fdevkit:0"
    deploy_guide(lab, device)
    with lab.client.websocket_connect(f"/v1/devices/{device}/dvs", headers=lab.admin) as ws:
        client = ClientStream()
        assert isinstance(client.receive_data(ws.receive_bytes()), Ready)
        client.send_events("spike", spikes(t=[0], layer=0, feature=0, x=3, y=5))
        ws.send_bytes(client.data_to_send()[0])
        replies = (client.receive_data(ws.receive_bytes()) for _ in range(10_000))
        event = next((r for r in replies if not isinstance(r, Outputs | Stats)), None)
        assert isinstance(event, StreamError), event  # within the sensor's next outputs
        assert (event.code, event.fatal) == ("bad_input", False)
        assert "send input on /stream" in event.message
        assert isinstance(_next_outputs(client, ws), Outputs)
