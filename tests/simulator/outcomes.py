"""Comparing what two runs left behind: the chip's state and the outputs."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from specklab.server.simulator import ChipSimulator


class Outputs(Protocol):
    """A simulator's or a device's output (``SimOutput``, ``DeviceOutput``)."""

    spikes: np.ndarray
    dvs: np.ndarray
    readout: np.ndarray


def chip_now(sim: ChipSimulator) -> dict[str, object]:
    return {
        **{f"states of core {core}": sim.states(core) for core in sim.config.cnn_layers},
        "counters": sim.counters,
        "clock": sim.time_us,
    }


def assert_same(one: dict[str, object], two: dict[str, object]) -> None:
    assert one.keys() == two.keys()
    for key, value in one.items():
        if isinstance(value, np.ndarray):
            assert np.array_equal(value, two[key]), key  # type: ignore[arg-type]
        else:
            assert value == two[key], key


def assert_same_outputs(one: Outputs, two: Outputs) -> None:
    for name in ("spikes", "dvs", "readout"):
        assert np.array_equal(getattr(one, name), getattr(two, name)), name
