"""One validation pass: a batch the input check passed is not checked again by the simulator,
and whatever the check's proof does not cover still is, with the same errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.events import EventKind, spikes
from specklab.schemas.inputs import Checked, InputCheck
from specklab.schemas.stream import BatchEnd, ClientStream, Outputs, Ready, Stats
from specklab.server.devices.errors import InvalidEvents
from specklab.server.devices.manager import DeviceManager
from specklab.server.devices.samna_loader import SamnaLoader
from specklab.server.devices.samna_probe import SamnaState, SamnaStatus
from specklab.server.simulator import ChipSimulator, SimulatorError, kernel

from ..fixtures_models import guide_network, torchscript_bytes
from ..guide_inputs import guide_spikes
from ..lab_client import Lab, bearer, running_lab
from .test_virtual import FakeTime, _devkit, _known_weights

GUARD_TEXT = "outside the inputs of the configured cores"


@pytest.fixture
def guard_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the simulator's input guard's passes over (non-empty) spikes."""
    calls: list[int] = []
    first_bad: Callable[..., int] = kernel.first_bad_spike

    def counted(cores: np.ndarray, events: np.ndarray) -> int:
        if len(events):
            calls.append(1)
        return first_bad(cores, events)

    monkeypatch.setattr(kernel, "first_bad_spike", counted)
    return calls


def _model_spikes() -> np.ndarray:
    return spikes(t=[5000, 5040], layer=0, feature=[0, 1], x=1, y=2)


def _checked(config: ChipConfig) -> Checked:
    return InputCheck(config).checked(EventKind.SPIKE, _model_spikes())


def test_a_checked_batch_runs_without_a_second_check(guard_calls: list[int]) -> None:
    config = _known_weights()
    devkit = _devkit()
    devkit.apply(config)
    proof = _checked(config)
    trusted = devkit.forward(proof.events, timeout=0, checked=proof)
    assert guard_calls == []
    devkit.reset_states()
    guarded = devkit.forward(proof.events, timeout=0)
    assert guard_calls == [1]
    assert np.array_equal(trusted.spikes, guarded.spikes) and len(trusted.spikes) == 3


def test_checked_continuous_inputs_run_without_a_second_check(guard_calls: list[int]) -> None:
    config = _known_weights()
    outputs = []
    for trusted in (True, False):
        time = FakeTime()
        devkit = _devkit(time)
        devkit.apply(config)
        devkit.start_stopwatch()
        proof = _checked(config)
        devkit.write(proof.events, checked=proof if trusted else None)
        outputs.append(devkit.read(0.01).spikes)
        assert guard_calls == ([] if trusted else [1])
    assert np.array_equal(*outputs) and len(outputs[0]) == 3


def test_continuous_inputs_are_checked_when_not_all_of_them_were(
    guard_calls: list[int],
) -> None:
    config = _known_weights()
    devkit = _devkit(FakeTime())
    devkit.apply(config)
    devkit.start_stopwatch()
    proof = _checked(config)
    devkit.write(proof.events[:1])
    devkit.write(proof.events, checked=proof)  # due with the unchecked one before it
    devkit.read(0.01)
    assert guard_calls == [1]
    bad = spikes(t=[6000], layer=0, core=2, feature=[7], x=1, y=2)
    devkit.write(bad, checked=proof)  # another array than the proof's
    with pytest.raises(InvalidEvents, match=GUARD_TEXT):
        devkit.read(0.01)


def test_what_the_proof_does_not_cover_is_checked(guard_calls: list[int]) -> None:
    config = _known_weights()
    devkit = _devkit()
    devkit.apply(config)
    proof = _checked(config)
    devkit.forward(proof.events[:1], timeout=0, checked=proof)  # a slice: not the checked array
    other = _checked(ChipConfig.model_validate(config.model_dump()))  # an equal configuration
    devkit.forward(other.events, timeout=0, checked=other)
    assert guard_calls == [1, 1]


def test_bad_input_is_refused_with_or_without_another_batchs_proof() -> None:
    config = _known_weights()
    devkit = _devkit()
    devkit.apply(config)
    proof = _checked(config)
    bad = spikes(t=[0], layer=0, core=2, feature=[7], x=1, y=2)  # core 2 takes 2 features
    for checked in (None, proof):
        with pytest.raises(InvalidEvents, match=GUARD_TEXT):
            devkit.forward(bad, timeout=0, checked=checked)
    simulator = ChipSimulator(config)
    with pytest.raises(SimulatorError, match=GUARD_TEXT):
        simulator.run(bad, checked=proof)


def test_the_checked_array_is_read_only() -> None:
    proof = _checked(_known_weights())
    assert proof.events["core"].tolist() == [2, 2]
    with pytest.raises(ValueError, match="read-only"):
        proof.events["feature"] = 9


def test_the_simulator_trusts_proofs_for_the_configuration_it_was_given(
    guard_calls: list[int],
) -> None:
    config = _known_weights()
    proof = _checked(config)
    derived = config.model_copy()  # what the devkit runs: inputs unchanged
    ChipSimulator(derived, input_config=config).run(proof.events, checked=proof)
    assert guard_calls == []
    ChipSimulator(derived).run(proof.events, checked=proof)
    assert guard_calls == [1]


async def test_a_proof_crosses_the_manager_to_the_device_thread(guard_calls: list[int]) -> None:
    """The stream's path: the configuration the check used is the one the device applied."""
    manager = DeviceManager(
        host="h",
        virtual=["speck2fdevkit=1"],
        samna=SamnaLoader(timeout_s=1, probe=lambda: SamnaStatus(SamnaState.NOT_INSTALLED)),
    )
    await manager.start()
    try:
        hold = await manager.open_hold("virtual-speck2fdevkit:0", owner="alice")
        config = _known_weights()
        await hold.apply(config)
        proof = _checked(config)
        trusted = await hold.forward(proof.events, checked=proof)
        assert guard_calls == [] and len(trusted.spikes) == 3
        await hold.reset_states()
        await hold.start_stopwatch()
        await hold.write(proof.events, checked=proof)  # continuous mode's path
        assert len((await hold.read(1.0)).spikes) == 3 and guard_calls == []
        await hold.close()
    finally:
        await manager.stop()


@pytest.fixture
def lab(tmp_path: Path, database_url: str) -> Iterator[Lab]:
    with running_lab(tmp_path / "data", database_url, virtual=["speck2fdevkit"]) as running:
        yield running


@pytest.mark.parametrize("mode", ["forward", "continuous"])
def test_a_streams_inputs_are_checked_once(lab: Lab, guard_calls: list[int], mode: str) -> None:
    device = "virtual-speck2fdevkit:0@test-host"
    _, ada = lab.add_user("ada")
    booked = lab.client.post(
        "/v1/bookings", json={"device_id": device, "minutes": 30}, headers=bearer(ada)
    )
    assert booked.status_code == 201, booked.text
    lab.deploy(ada, device, torchscript_bytes(guide_network()), [1, 28, 28], "lenet.pt")
    inputs = guide_spikes(np.random.default_rng(0), 2_000, 20_000)
    with lab.client.websocket_connect(
        f"/v1/devices/{device}/stream?mode={mode}", headers=bearer(ada)
    ) as websocket:
        client = ClientStream()
        assert isinstance(client.receive_data(websocket.receive_bytes()), Ready)
        client.send_events("spike", inputs)
        for message in client.data_to_send():
            websocket.send_bytes(message)
        while not isinstance(event := client.receive_data(websocket.receive_bytes()), Outputs):
            assert isinstance(event, Stats), event  # the inputs ran: they caused outputs
        client.send_control("stats")
        websocket.send_bytes(client.data_to_send()[0])
        while not isinstance(event := client.receive_data(websocket.receive_bytes()), Stats):
            assert isinstance(event, Outputs | BatchEnd), event
        assert event.counters["events_in"] == len(inputs) and event.counters["errors"] == 0
    assert guard_calls == []
