"""Configuration patches: the declarative replacement of the guide's ``config_modifier``.

A :class:`ConfigPatch` is a small JSON document of the settings users may change on a compiled
network without recompiling: monitors, leaks, decimators, the readout's averaging, the slow
clock and the DVS layer's merge / pooling / crop / mirroring / routing of the sensor.
:func:`apply_patch` turns (ChipConfig, patch) into a new ChipConfig, which every device takes as
it takes any other; nothing device-specific happens here.

Unknown fields and out-of-range values are refused by validation, with the field's path in the
error (pydantic's ``loc``); fields that do not fit the network (a core it does not use, a DVS
patch for a network without a DVS layer) raise :class:`PatchError` naming the field.

Example::

    {"monitor_layers": [-1, "dvs"], "layers": {"0": {"leak_enable": true}},
     "dvs": {"mirror": {"x": true}, "cut": {"x": 63, "y": 63}}, "slow_clock_hz": 1000}
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from .chipconfig import ChipConfig, CoreId, Pooling
from .errors import DomainError

Coordinate = Annotated[int, Field(ge=0, lt=128)]
#: In ``monitor_layers``: every exit layer of the network, as sinabs reads it.
EXIT_LAYERS = -1


class PatchError(DomainError, ValueError):
    """A patch that is valid on its own but does not fit the configuration; ``loc`` names the
    field (``dvs.cut``, ``cores.4`` ...)."""

    def __init__(self, loc: str, message: str) -> None:
        super().__init__(422, "invalid_patch", f"{loc}: {message}", detail={"loc": loc})
        self.loc = loc


class _Patch(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CorePatch(_Patch):
    monitor_enable: bool | None = None
    leak_enable: bool | None = None
    output_decimator_enable: bool | None = None
    #: 1 spike of this many leaves the core (a power of two for the samna driver).
    output_decimator_interval: int | None = Field(default=None, ge=2, le=512)


class XYPatch(_Patch):
    x: Coordinate
    y: Coordinate


class PoolingPatch(_Patch):
    x: Pooling
    y: Pooling


class MirrorPatch(_Patch):
    x: bool | None = None
    y: bool | None = None


class DestinationPatch(_Patch):
    enable: bool | None = None


class DVSPatch(_Patch):
    merge: bool | None = None
    pooling: PoolingPatch | None = None
    #: The crop's first kept pixel (pooled coordinates).
    origin: XYPatch | None = None
    #: The crop's last kept pixel (pooled coordinates, inclusive).
    cut: XYPatch | None = None
    mirror: MirrorPatch | None = None
    mirror_diagonal: bool | None = None
    pass_sensor_events: bool | None = None
    monitor_enable: bool | None = None
    raw_monitor_enable: bool | None = None
    #: Per destination (0 or 1): route the DVS layer's events to its core, or not.
    destinations: dict[Annotated[int, Field(ge=0, lt=2)], DestinationPatch] = Field(
        default_factory=dict
    )


class ReadoutPatch(_Patch):
    enable: bool | None = None
    average_window: Literal[16, 32] | None = None
    threshold: int | None = Field(default=None, ge=0, lt=2**16)
    monitor_enable: bool | None = None


class ConfigPatch(_Patch):
    #: Exactly these model layers are monitored, plus the DVS layer with "dvs"; the guide's
    #: ``monitor_layers``. As in the guide and sinabs, -1 stands for every exit layer (the
    #: network's outputs); other negative indices count from the end. Applied before
    #: ``layers`` and ``cores``.
    monitor_layers: list[int | Literal["dvs"]] | None = None
    #: Per model layer (negative counts from the end, as in the guide).
    layers: dict[int, CorePatch] = Field(default_factory=dict)
    #: Per core, for those who think in cores.
    cores: dict[CoreId, CorePatch] = Field(default_factory=dict)
    dvs: DVSPatch | None = None
    readout: ReadoutPatch | None = None
    #: The slow clock (leaks, readout) in Hz; an explicit null switches it off.
    slow_clock_hz: float | None = Field(default=None, gt=0, le=1_000_000)


def apply_patch(config: ChipConfig, patch: ConfigPatch) -> ChipConfig:
    """A new configuration: ``config`` with ``patch`` applied (``config`` is left unchanged).

    Only what a patch can change is copied; the large arrays (weights, initial states) are
    shared with ``config``. Every value a patch carries was validated by its model, and the
    cross-field rules a patch can break (the DVS crop) are checked here.
    """
    out = config.model_copy()
    out.cnn_layers = {core: layer.model_copy() for core, layer in config.cnn_layers.items()}
    if config.dvs_layer is not None:
        out.dvs_layer = config.dvs_layer.model_copy(deep=True)
    if config.readout is not None:
        out.readout = config.readout.model_copy()
    if patch.monitor_layers is not None:
        _monitor_exactly(out, patch.monitor_layers)
    for layer, core_patch in patch.layers.items():
        try:
            core = out.core(layer)
        except IndexError as exc:
            raise PatchError(f"layers.{layer}", str(exc)) from None
        _patch_core(out, core, core_patch, f"layers.{layer}")
    for core, core_patch in patch.cores.items():
        _patch_core(out, core, core_patch, f"cores.{core}")
    if patch.dvs is not None:
        _patch_dvs(out, patch.dvs)
    if patch.readout is not None:
        if out.readout is None:
            raise PatchError("readout", "this network has no readout")
        _set(out.readout, patch.readout)
    if "slow_clock_hz" in patch.model_fields_set:
        out.slow_clock_hz = patch.slow_clock_hz
    return out


def _set(target: BaseModel, patch: _Patch) -> None:
    for name in patch.model_fields_set:
        value = getattr(patch, name)
        if value is not None:
            setattr(target, name, value)


def _monitor_exactly(config: ChipConfig, monitored: list[int | Literal["dvs"]]) -> None:
    cores: set[int] = set()
    for index, layer in enumerate(monitored):
        if layer == "dvs":
            if config.dvs_layer is None:
                raise PatchError(f"monitor_layers.{index}", "this network has no DVS layer")
            continue
        if layer == EXIT_LAYERS:
            cores.update(config.core(exit_layer) for exit_layer in config.outputs)
            continue
        try:
            cores.add(config.core(layer))
        except IndexError as exc:
            raise PatchError(f"monitor_layers.{index}", str(exc)) from None
    for core, cnn_layer in config.cnn_layers.items():
        cnn_layer.monitor_enable = core in cores
    if config.dvs_layer is not None:
        config.dvs_layer.monitor_enable = "dvs" in monitored


def _patch_core(config: ChipConfig, core: int, patch: CorePatch, loc: str) -> None:
    layer = config.cnn_layers.get(core)
    if layer is None:
        raise PatchError(
            loc, f"core {core} is not used by this network ({sorted(config.cnn_layers)})"
        )
    _set(layer, patch)


def _patch_dvs(config: ChipConfig, patch: DVSPatch) -> None:
    layer = config.dvs_layer
    if layer is None:
        raise PatchError("dvs", "this network has no DVS layer")
    flags = {
        "merge",
        "mirror_diagonal",
        "pass_sensor_events",
        "monitor_enable",
        "raw_monitor_enable",
    }
    for name, value in patch.model_dump(include=flags, exclude_none=True).items():
        setattr(layer, name, value)
    for name in ("pooling", "origin", "cut"):
        value = getattr(patch, name)
        if value is not None:
            xy = getattr(layer, name)
            xy.x, xy.y = value.x, value.y
    if patch.mirror is not None:
        _set(layer.mirror, patch.mirror)
    for index, destination in patch.destinations.items():
        if index >= len(layer.destinations):
            raise PatchError(
                f"dvs.destinations.{index}",
                f"the DVS layer has {len(layer.destinations)} destination(s)",
            )
        _set(layer.destinations[index], destination)
    pooled = (layer.input_size.x // layer.pooling.x, layer.input_size.y // layer.pooling.y)
    for axis, size in zip("xy", pooled, strict=True):
        first, last = getattr(layer.origin, axis), getattr(layer.cut, axis)
        if last >= size:
            raise PatchError(f"dvs.cut.{axis}", f"{last} is outside the pooled sensor (< {size})")
        if first > last:
            raise PatchError(f"dvs.origin.{axis}", f"{first} is past the cut ({last})")
