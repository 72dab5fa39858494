"""ChipConfig -> samna's ``SpeckConfiguration``, field by field (docs/chip.md §8).

Differences from a plain copy, all deliberate:

- weights go from ``[out][in][ky][kx]`` to samna's ``[out][in][kx][ky]`` and initial neuron
  values from ``[f][y][x]`` to ``[f][x][y]``;
- ``output_decimator_interval`` is a count N (1 spike of N passes) in ChipConfig; samna wants the
  code ``log2(N) - 1`` (0 -> 1 of 2, 1 -> 1 of 4, ...), so N must be a power of two;
- the readout is fed by a destination ``layer = 12`` on ``readout.input_core`` (the vendor's
  wiring), and reads 16 features at 1x1 (``readout_configuration_sel = 3``); its reported value is
  the maximum average (``output_mode_sel = 3``); a threshold of 0 sets
  ``override_threshold_max`` so that every slow-clock tick reports;
- leaks and the readout use the devkit's external slow clock (``leak_internal_slow_clk_enable``
  False), which the driver sets through the io module;
- the sensor switch: with the sensor off, ``pass_sensor_events`` and ``raw_monitor_enable`` are
  written False whatever the document says; with no DVS layer, the DVS layer is written inert.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from specklab.schemas.chipconfig import (
    XY,
    ChipConfig,
    CNNLayer,
    Destination,
    DVSLayer,
    Mirror,
    Readout,
)
from specklab.schemas.events import READOUT_CORE

from .errors import ConfigRejected

#: samna ``readout_configuration_sel``: 1x * 1y * 16f.
READOUT_ADDRESSING_16F = 3
#: samna ``output_mode_sel``: bits 15:0 carry the maximum average.
READOUT_MODE_MAX_AVERAGE = 3


def chip_module(samna: ModuleType, chip: str) -> ModuleType:
    try:
        return getattr(samna, chip)
    except AttributeError:
        raise ConfigRejected(f"this samna has no {chip} support") from None


def build_configuration(samna: ModuleType, config: ChipConfig, *, sensor_enabled: bool) -> Any:
    """A new samna configuration object holding ``config``."""
    target = chip_module(samna, config.chip).configuration.SpeckConfiguration()
    readout = config.readout if config.readout is not None and config.readout.enable else None
    if readout is not None and readout.input_core not in config.cnn_layers:
        raise ConfigRejected(f"the readout reads core {readout.input_core}, which is not used")
    for core, layer in config.cnn_layers.items():
        to_readout = readout is not None and readout.input_core == core
        _write_core(target.cnn_layers[core], core, layer, to_readout)
    _write_dvs(target.dvs_layer, config.dvs_layer, sensor_enabled)
    _write_readout(target.readout, readout)
    return target


def _write_xy(target: Any, pair: XY | Mirror) -> None:
    target.x = pair.x
    target.y = pair.y


def _write_core(target: Any, core: int, layer: CNNLayer, to_readout: bool) -> None:
    d = layer.dimensions
    dims = target.dimensions
    _write_xy(dims.input_shape.size, d.input_shape.size)
    dims.input_shape.feature_count = d.input_shape.feature_count
    _write_xy(dims.output_shape.size, d.output_shape.size)
    dims.output_shape.feature_count = d.output_shape.feature_count
    _write_xy(dims.padding, d.padding)
    _write_xy(dims.stride, d.stride)
    dims.kernel_size = d.kernel_size
    target.weights = layer.weight_array().transpose(0, 1, 3, 2).tolist()
    target.biases = list(layer.biases)
    target.leak_enable = layer.leak_enable
    target.leak_internal_slow_clk_enable = False
    target.threshold_high = layer.threshold_high
    target.threshold_low = layer.threshold_low
    target.return_to_zero = layer.return_to_zero
    target.neurons_initial_value = layer.initial_state().transpose(0, 2, 1).tolist()
    target.monitor_enable = layer.monitor_enable
    target.output_decimator_enable = layer.output_decimator_enable
    target.output_decimator_interval = decimator_code(layer.output_decimator_interval, core)
    routes = [_route(dest) for dest in layer.destinations]
    if to_readout:
        if len(routes) >= 2:
            raise ConfigRejected(f"core {core} feeds the readout but already has 2 destinations")
        routes.append((READOUT_CORE, True, 1, 0))
    _write_destinations(target.destinations, routes)


def decimator_code(interval: int, core: int) -> int:
    code = interval.bit_length() - 2
    if interval != 1 << (code + 1):
        raise ConfigRejected(
            f"core {core}: output_decimator_interval {interval} is not a power of two (2..512)"
        )
    return code


#: (layer, enable, pooling, feature_shift) of one destination slot.
Route = tuple[int, bool, int, int]


def _route(dest: Destination) -> Route:
    return (dest.layer, dest.enable, dest.pooling, dest.feature_shift)


def _write_destinations(target: Any, routes: list[Route]) -> None:
    for slot in range(len(target)):
        out = target[slot]
        if slot < len(routes):
            out.layer, out.enable, out.pooling, out.feature_shift = routes[slot]
        else:
            out.enable = False


def _write_dvs(target: Any, dvs: DVSLayer | None, sensor_enabled: bool) -> None:
    if dvs is None:
        target.pass_sensor_events = False
        target.monitor_enable = False
        target.raw_monitor_enable = False
        _write_destinations(target.destinations, [])
        return
    target.merge = dvs.merge
    _write_xy(target.pooling, dvs.pooling)
    _write_xy(target.origin, dvs.origin)
    _write_xy(target.cut, dvs.cut)
    _write_xy(target.mirror, dvs.mirror)
    target.mirror_diagonal = dvs.mirror_diagonal
    target.pass_sensor_events = dvs.pass_sensor_events and sensor_enabled
    target.monitor_enable = dvs.monitor_enable
    target.raw_monitor_enable = dvs.raw_monitor_enable and sensor_enabled
    _write_destinations(target.destinations, [_route(d) for d in dvs.destinations])


def _write_readout(target: Any, readout: Readout | None) -> None:
    target.enable = readout is not None
    if readout is None:
        return
    target.readout_configuration_sel = READOUT_ADDRESSING_16F
    target.output_mode_sel = READOUT_MODE_MAX_AVERAGE
    target.low_pass_filter_disable = False
    target.low_pass_filter32_not16 = readout.average_window == 32
    target.threshold = readout.threshold
    target.override_threshold_max = readout.threshold == 0
    target.monitor_enable = readout.monitor_enable
