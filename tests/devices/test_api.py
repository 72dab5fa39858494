"""REST: /v1/devices and /v1/device-types, on the app with its lifespan (in process)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import event

from specklab.schemas import chipconfig
from specklab.schemas.booking import BookingSummary
from specklab.schemas.devices import DeviceList, DevicePublic
from specklab.schemas.events import spikes
from specklab.schemas.stream import CLOSE_ENDED, BatchEnd, ClientStream, Ready, StreamError
from specklab.server.chips import DEVICE_TYPES
from specklab.server.devices.manager import DeviceManager

from ..fixtures_models import guide_network, torchscript_bytes
from ..lab_client import Lab


def _devices(lab: Lab) -> DeviceList:
    response = lab.client.get("/v1/devices", headers=lab.admin)
    assert response.status_code == 200, response.text
    return DeviceList.model_validate(response.json())


def test_virtual_devkits_are_listed_free(make_lab: Any) -> None:
    lab = make_lab(virtual=["speck2fdevkit=2"])
    listing = _devices(lab)
    assert [(d.id, d.name) for d in listing.devices] == [
        ("virtual-speck2fdevkit:0@test-host", "virtual-speck2fdevkit:0"),
        ("virtual-speck2fdevkit:1@test-host", "virtual-speck2fdevkit:1"),
    ]
    first = listing.devices[0]
    assert (first.type, first.chip, first.virtual, first.supported) == (
        "speck2fdevkit",
        "speck2f",
        True,
        True,
    )
    assert (first.status, first.usb, first.serial_number, first.booking) == (
        "free",
        None,
        None,
        None,
    )
    assert first.host == "test-host"
    assert listing.samna.state == "not installed"
    one = lab.client.get("/v1/devices/virtual-speck2fdevkit:1", headers=lab.admin)
    assert one.status_code == 200
    assert DevicePublic.model_validate(one.json()).id == "virtual-speck2fdevkit:1@test-host"


def test_unknown_device_is_a_404_error_body(make_lab: Any) -> None:
    lab = make_lab(virtual=[])
    response = lab.client.get("/v1/devices/speck2fdevkit:0", headers=lab.admin)
    assert response.status_code == 404
    assert response.json()["code"] == "device_not_found"
    assert response.json()["message"] == "no device speck2fdevkit:0"
    assert response.json()["detail"] == {"device_id": "speck2fdevkit:0", "suggestions": []}
    assert lab.client.get("/v1/devices", headers={}).status_code == 401


def test_an_unknown_device_id_answers_with_the_closest_known_ids(make_lab: Any) -> None:
    lab = make_lab(virtual=["speck2fdevkit=2", "speck2edevkit=1"])
    # Lab-wide ids carry their host (docs/scaling.md).
    hint = "did you mean virtual-speck2fdevkit:0@test-host or virtual-speck2fdevkit:1@test-host?"
    # The guide's id, everywhere a device is named: REST reads, writes, bookings, streams.
    for method, path, body in (
        ("GET", "/v1/devices/speck2fdevkit:0", None),
        ("GET", "/v1/devices/speck2fdevkit:0/deployment", None),
        ("POST", "/v1/devices/speck2fdevkit:0/deployment", {"model_id": 1}),
        ("POST", "/v1/bookings", {"device_id": "speck2fdevkit:0", "minutes": 5}),
    ):
        response = lab.client.request(method, path, json=body, headers=lab.admin)
        assert response.status_code == 404, response.text
        error = response.json()
        assert error["code"] == "device_not_found"
        assert error["message"].startswith("no device speck2fdevkit:0")
        assert error["message"].endswith(hint), error
        assert error["detail"] == {
            "device_id": "speck2fdevkit:0",
            "suggestions": [
                "virtual-speck2fdevkit:0@test-host",
                "virtual-speck2fdevkit:1@test-host",
            ],
        }
    # A typo finds its neighbour.
    typo = lab.client.get("/v1/devices/virtual-speck2edevkt:0", headers=lab.admin).json()
    assert typo["detail"]["suggestions"][0] == "virtual-speck2edevkit:0@test-host"
    with lab.client.websocket_connect(
        "/v1/devices/speck2fdevkit:0/stream", headers=lab.admin
    ) as ws:
        error = ClientStream().receive_data(ws.receive_bytes())
        assert isinstance(error, StreamError) and error.fatal
        assert (error.code, error.detail["suggestions"][0]) == (
            "device_not_found",
            "virtual-speck2fdevkit:0@test-host",
        )
        assert error.message.endswith(hint)


def test_device_types_are_the_guides(make_lab: Any) -> None:
    lab = make_lab(virtual=[])
    types = lab.client.get("/v1/device-types", headers=lab.admin).json()
    assert {t["type"]: t["samna_name"] for t in types} == DEVICE_TYPES
    supported = {t["type"]: (t["supported"], t["chip"]) for t in types}
    assert supported["speck2fdevkit"] == (True, "speck2f")
    assert supported["speck2e"] == (True, "speck2e")
    assert supported["dvxplorer"] == (False, None)
    assert sum(s for s, _ in supported.values()) == 4


def test_status_follows_sessions_and_bookings(make_lab: Any) -> None:
    lab = make_lab(virtual=["speck2edevkit=1"])
    manager: DeviceManager = lab.app.state.devices
    device_id = "virtual-speck2edevkit:0@test-host"
    portal = lab.client.portal
    assert portal is not None
    booking = BookingSummary(
        id=7,
        user_name="alice",
        starts_at=datetime.now(UTC),
        ends_at=datetime.now(UTC) + timedelta(hours=1),
    )

    async def booked(asked: list[str]) -> dict[str, BookingSummary]:
        return {device_id: booking} if device_id in asked else {}

    manager.booking_lookup = booked
    shown = _devices(lab).devices[0]
    assert (shown.status, shown.booking) == ("booked", booking)
    hold = portal.call(partial(manager.open_hold, device_id, owner="alice"))
    assert _devices(lab).devices[0].status == "busy"
    portal.call(hold.close)
    manager.booking_lookup = None
    assert _devices(lab).devices[0].status == "free"


def test_real_device_through_samna_and_its_unplugging(make_lab: Any, samna: ModuleType) -> None:
    samna.STATE.devices = [samna.device.DeviceInfo("Speck2fDevKit", "SER1", 2, 7, 5)]
    lab = make_lab(virtual=None, device_rescan_s=0.05)
    listing = _devices(lab)
    assert listing.samna.state == "loaded"
    # No default virtual devkit; the id comes from the serial number.
    assert [(d.id, d.name) for d in listing.devices] == [
        ("speck2fdevkit:sn-SER1", "speck2fdevkit:0")
    ]
    real = listing.devices[0]
    assert (real.virtual, real.serial_number, real.logic_version) == (False, "SER1", "5")
    assert (real.usb.bus, real.usb.address) == (2, 7)  # type: ignore[union-attr]
    assert real.status == "free"

    samna.STATE.unplug("SER1")
    deadline = time.monotonic() + 5
    while _devices(lab).devices[0].status != "offline":
        assert time.monotonic() < deadline, "the rescan never noticed the unplugged device"
        time.sleep(0.02)
    gone = _devices(lab).devices[0]
    assert gone.id == "speck2fdevkit:sn-SER1" and "unplugged" in (gone.detail or "")


def deploy_guide(lab: Lab, *devices: str) -> int:
    """The guide's network, uploaded once, booked and deployed on each device by the admin;
    returns the model's id."""
    upload = lab.client.post(
        "/v1/models",
        headers=lab.admin,
        files={"file": ("lenet.pt", torchscript_bytes(guide_network()))},
        data={"options": json.dumps({"input_shape": [1, 28, 28]})},
    )
    assert upload.status_code == 201, upload.text
    for device in devices:
        response = lab.client.post(
            "/v1/bookings", headers=lab.admin, json={"device_id": device, "minutes": 30}
        )
        assert response.status_code == 201, response.text
        response = lab.client.post(
            f"/v1/devices/{device}/deployment",
            headers=lab.admin,
            json={"model_id": upload.json()["id"]},
        )
        assert response.status_code == 201, response.text
    return upload.json()["id"]


def test_a_core_the_chip_does_not_have_is_a_422_naming_it(make_lab: Any) -> None:
    lab = make_lab(virtual=["speck2fdevkit=1"])
    device = "virtual-speck2fdevkit:0"
    model_id = deploy_guide(lab, device)
    for ordering, core in (([0, 1, 2, 3, 12], "12"), ({"0": -1}, "-1"), ([9, 0, 1, 2, 3], "9")):
        response = lab.client.post(
            f"/v1/devices/{device}/deployment",
            headers=lab.admin,
            json={"model_id": model_id, "chip_layers_ordering": ordering},
        )
        assert response.status_code == 422, response.text
        assert f"core {core} does not exist" in response.json()["message"]


def test_a_model_deployed_again_is_not_validated_again(
    make_lab: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its validated configuration is kept (by document); each deployment's monitors and
    patches go to a copy, never into the kept one."""
    lab = make_lab(virtual=["speck2fdevkit=1"])
    device = "virtual-speck2fdevkit:0"
    model_id = deploy_guide(lab, device)
    parsed: list[object] = []
    lift = chipconfig.lift_arrays
    monkeypatch.setattr(chipconfig, "lift_arrays", lambda *args: parsed.append(args) or lift(*args))
    url = f"/v1/devices/{device}/deployment"
    for monitor, expected in (([0], [0]), ([-1], [4]), ("all", [0, 1, 2, 3, 4]), ([-1], [4])):
        response = lab.client.post(
            url, headers=lab.admin, json={"model_id": model_id, "monitor_layers": monitor}
        )
        assert response.status_code == 201, response.text
        assert response.json()["monitored"] == expected
    assert parsed == []


def test_unplugging_a_device_mid_stream_ends_the_stream_and_keeps_the_daemon(
    make_lab: Any, samna: ModuleType
) -> None:
    samna.STATE.devices = [samna.device.DeviceInfo("Speck2fDevKit", "SER1", 2, 7, 5)]
    lab = make_lab(virtual=["speck2fdevkit=1"], device_rescan_s=0.05)
    device = "speck2fdevkit:0"
    deploy_guide(lab, device, "virtual-speck2fdevkit:0")

    with lab.client.websocket_connect(f"/v1/devices/{device}/stream", headers=lab.admin) as ws:
        client = ClientStream()
        assert isinstance(client.receive_data(ws.receive_bytes()), Ready)
        samna.STATE.unplug("SER1")
        error = client.receive_data(ws.receive_bytes())
        assert isinstance(error, StreamError) and error.fatal, error
        assert error.code == "device_offline"
        closing = ws.receive()
        assert (closing["type"], closing["code"]) == ("websocket.close", CLOSE_ENDED)

    gone = lab.client.get(f"/v1/devices/{device}", headers=lab.admin).json()
    assert gone["status"] == "offline"
    assert lab.client.get(f"/v1/devices/{device}/deployment", headers=lab.admin).status_code == 404
    # The daemon and the other device's deployment carry on.
    with lab.client.websocket_connect(
        "/v1/devices/virtual-speck2fdevkit:0/stream", headers=lab.admin
    ) as ws:
        client = ClientStream()
        assert isinstance(client.receive_data(ws.receive_bytes()), Ready)
        client.send_events("spike", spikes(t=[0, 10], layer=0, feature=0, x=[3, 4], y=[5, 6]))
        for message in client.data_to_send():
            ws.send_bytes(message)
        answers = []
        while not answers or not isinstance(answers[-1], BatchEnd):
            answers.append(client.receive_data(ws.receive_bytes()))
        assert answers[-1].seq == 0
        # The server ends this stream too (the test client cancels the app when it closes).
        removed = lab.client.delete(
            "/v1/devices/virtual-speck2fdevkit:0/deployment", headers=lab.admin
        )
        assert removed.status_code == 204, removed.text
        error = client.receive_data(ws.receive_bytes())
        assert isinstance(error, StreamError) and error.code == "deployment_removed", error
        assert ws.receive()["code"] == CLOSE_ENDED


def test_a_client_closing_its_stream_right_after_a_batch_ends_it_cleanly(make_lab: Any) -> None:
    # The test client cancels the app as soon as it has closed, while the server is still
    # reaping the stream's jobs: that must not leak a CancelledError.
    lab = make_lab(virtual=["speck2fdevkit=1"])
    device = "virtual-speck2fdevkit:0"
    deploy_guide(lab, device)
    for _ in range(10):
        with lab.client.websocket_connect(f"/v1/devices/{device}/stream", headers=lab.admin) as ws:
            client = ClientStream()
            assert isinstance(client.receive_data(ws.receive_bytes()), Ready)
            client.send_events("spike", spikes(t=[0], layer=0, feature=0, x=[3], y=[5]))
            for message in client.data_to_send():
                ws.send_bytes(message)
            while not isinstance(client.receive_data(ws.receive_bytes()), BatchEnd):
                pass


def test_the_listing_looks_bookings_up_once_for_all_devices(make_lab: Any) -> None:
    lab = make_lab(virtual=["speck2fdevkit=3"])
    ids = [d.id for d in _devices(lab).devices]
    for device in ids[:2]:
        response = lab.client.post(
            "/v1/bookings", headers=lab.admin, json={"device_id": device, "minutes": 30}
        )
        assert response.status_code == 201, response.text
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(lab.db.engine, "before_cursor_execute", seen)
    try:
        listing = _devices(lab)
    finally:
        event.remove(lab.db.engine, "before_cursor_execute", seen)
    assert [d.status for d in listing.devices] == ["booked", "booked", "free"]
    # One query for this host's devices, one in the lab's listing (other hosts' devices).
    assert sum("FROM bookings" in s for s in statements) == 2
