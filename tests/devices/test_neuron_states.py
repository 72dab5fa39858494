"""REST: a deployed layer's membrane potentials, on the virtual devkit and through the samna
driver (the samna test double)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from specklab.schemas.deploy import NeuronStates
from specklab.schemas.events import spikes
from specklab.schemas.stream import BatchEnd, ClientStream, Ready
from specklab.server.devices.samna_events import neuron_address
from specklab.server.simulator.engine import ChipSimulator

from ..lab_client import Lab, bearer
from .test_api import deploy_guide

INPUT = spikes(t=[0, 10, 20, 30, 40], layer=0, feature=0, x=[3, 4, 5, 14, 20], y=[5, 6, 7, 14, 9])


def _forward(lab: Lab, device: str, events: np.ndarray) -> None:
    with lab.client.websocket_connect(f"/v1/devices/{device}/stream", headers=lab.admin) as ws:
        client = ClientStream()
        assert isinstance(client.receive_data(ws.receive_bytes()), Ready)
        client.send_events("spike", events)
        for message in client.data_to_send():
            ws.send_bytes(message)
        while not isinstance(client.receive_data(ws.receive_bytes()), BatchEnd):
            pass


def _states(lab: Lab, device: str, layer: int, headers: dict[str, str]) -> Any:
    return lab.client.get(f"/v1/devices/{device}/deployment/layers/{layer}/states", headers=headers)


def test_the_virtual_devkit_answers_the_simulators_membranes_to_its_owner(make_lab: Any) -> None:
    lab = make_lab(virtual=["speck2fdevkit=1"])
    device = "virtual-speck2fdevkit:0"
    deploy_guide(lab, device)
    lab_wide = lab.client.get(f"/v1/devices/{device}", headers=lab.admin).json()["id"]
    config = lab.app.state.deployments.live_hub(lab_wide).config
    before = _states(lab, device, 0, lab.admin)
    assert before.status_code == 200, before.text
    assert not NeuronStates.model_validate(before.json()).array().any()

    _forward(lab, device, INPUT)
    expected = ChipSimulator(config)
    expected.run(spikes=config.spikes_to_cores(INPUT))
    for layer, core in config.core_of_layer.items():
        response = _states(lab, device, layer, lab.admin)
        assert response.status_code == 200, response.text
        got = NeuronStates.model_validate(response.json())
        assert (got.layer, got.core) == (layer, core)
        assert got.shape == config.cnn_layers[core].neuron_shape
        np.testing.assert_array_equal(got.array(), expected.states(core))
    # The input moved the first layer's membranes: the comparison is not of zeros.
    assert expected.states(config.core_of_layer[0]).any()

    # Only the owner and admins read them; an observer sees what runs (the deployment's
    # summary) but not inside it; another user sees neither. Bad layers are 404s.
    for name, role, sees_deployment in (("bob", "user", False), ("olga", "observer", True)):
        headers = bearer(lab.add_user(name, role)[1])
        refused = _states(lab, device, 0, headers)
        assert (refused.status_code, refused.json()["code"]) == (404, "not_deployed")
        shown = lab.client.get(f"/v1/devices/{device}/deployment", headers=headers)
        assert shown.status_code == (200 if sees_deployment else 404), shown.text
        if sees_deployment:
            assert shown.json()["owner"] == "admin" and shown.json()["summary"]
    missing = _states(lab, device, 7, lab.admin)
    assert (missing.status_code, missing.json()["code"]) == (404, "layer_not_found")
    assert "[0, 1, 2, 3, 4]" in missing.json()["message"]
    assert _states(lab, device, -1, lab.admin).status_code == 404
    assert _states(lab, device, "x", lab.admin).status_code == 422
    removed = lab.client.delete(f"/v1/devices/{device}/deployment", headers=lab.admin)
    assert removed.status_code == 204
    gone = _states(lab, device, 0, lab.admin)
    assert (gone.status_code, gone.json()["code"]) == (404, "not_deployed")


def test_the_samna_driver_reads_every_neuron_of_the_layers_core(
    make_lab: Any, samna: ModuleType
) -> None:
    samna.STATE.devices = [samna.device.DeviceInfo("Speck2fDevKit", "SER1", 2, 7, 5)]
    lab = make_lab(virtual=[])
    device = "speck2fdevkit:0"
    deploy_guide(lab, device)
    lab_wide = lab.client.get(f"/v1/devices/{device}", headers=lab.admin).json()["id"]
    config = lab.app.state.deployments.live_hub(lab_wide).config
    core = config.core_of_layer[1]
    shape = config.cnn_layers[core].neuron_shape
    expected = np.random.default_rng(3).integers(-(2**15), 2**15, size=shape, dtype=np.int32)
    for feature, y, x in np.ndindex(shape):
        samna.STATE.neuron_states[(core, neuron_address(shape, feature, y, x))] = int(
            expected[feature, y, x]
        )
    _forward(lab, device, INPUT)  # the board runs its stopwatch from the first batch on
    response = _states(lab, device, 1, lab.admin)
    assert response.status_code == 200, response.text
    got = NeuronStates.model_validate(response.json())
    assert (got.layer, got.core, got.shape) == (1, core, shape)
    np.testing.assert_array_equal(got.array(), expected)
