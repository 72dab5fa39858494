"""One validation pass: a batch the input check passed is not checked again by the simulator,
and whatever the check's proof does not cover still is, with the same errors."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.events import EventKind, spikes
from specklab.schemas.inputs import Checked, InputCheck
from specklab.server.devices.errors import InvalidEvents
from specklab.server.devices.manager import DeviceManager
from specklab.server.devices.samna_loader import SamnaLoader
from specklab.server.devices.samna_probe import SamnaState, SamnaStatus
from specklab.server.simulator import ChipSimulator, SimulatorError, kernel

from .test_virtual import _devkit, _known_weights

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
        await hold.close()
    finally:
        await manager.stop()
