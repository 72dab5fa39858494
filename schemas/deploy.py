"""REST bodies of deployments: a compiled model put on a device (the guide's ``hw_model.to``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from .compile import LayerOrdering
from .patch import ConfigPatch


def _exit_layers() -> list[int | Literal["dvs"]]:
    return [-1]


class DeploymentRequest(BaseModel):
    model_id: int
    #: "auto", a list of cores (one per model layer), or a model layer -> core map.
    chip_layers_ordering: LayerOrdering = "auto"
    #: Model layers whose spikes leave the chip, as in the guide: indices (-1 = every exit layer),
    #: "dvs" for the DVS layer's output, or "all".
    monitor_layers: list[int | Literal["dvs"]] | Literal["all"] = Field(
        default_factory=_exit_layers
    )
    #: A declarative configuration patch, applied last (the guide's ``config_modifier``).
    config_patch: ConfigPatch | None = None
    #: Slow clock (leak and readout ticks) in Hz; None keeps the model's setting.
    slow_clock_hz: float | None = Field(default=None, gt=0, le=1_000_000)


class Deployment(BaseModel):
    device_id: str
    #: None for the DVS layer alone, set up for a DVS stream or recording without a model.
    model_id: int | None
    owner: str
    deployed_at: datetime
    #: Model layer -> core, as applied.
    layers: dict[int, int]
    #: Model layers that take input spikes.
    inputs: list[int]
    #: Model layers whose spikes leave the chip.
    monitored: list[int]
    dvs_input: bool
    dvs_monitored: bool
    summary: str
    #: What will not work as the user may expect (a leak with the slow clock off ...).
    warnings: list[str] = Field(default_factory=list)


class NeuronStates(BaseModel):
    """The membrane potentials of one deployed model layer's neurons, read from the device."""

    layer: int
    #: The core the layer sits on.
    core: int
    #: (features, height, width).
    shape: tuple[int, int, int]
    #: ``values[feature][y][x]``, ChipConfig's order (as ``neurons_initial_value``).
    values: list[list[list[int]]]

    @classmethod
    def of(cls, layer: int, core: int, states: np.ndarray) -> NeuronStates:
        features, height, width = states.shape
        return cls(layer=layer, core=core, shape=(features, height, width), values=states.tolist())

    def array(self) -> np.ndarray:
        """``values`` as an int32 array of ``shape``."""
        return np.asarray(self.values, dtype=np.int32).reshape(self.shape)
