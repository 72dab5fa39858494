"""A ChipConfig packed into flat integer arrays, once, for the compiled event loop.

The compiled loop cannot read pydantic models, so every number it needs is copied here into
plain numpy arrays. The column constants below name those numbers; numba reads module-level
integers as compile-time constants, so naming them costs nothing in the hot loop.

Memory layouts chosen for the hot loop (they differ from ChipConfig's torch order on purpose):

- weights of a core: ``[in][ky][k-1-kx][out]`` (kx reversed), so the kernel entries one input
  event adds to consecutive output columns (stride 1) form one contiguous slice;
- neuron states of a core: ``[y][x][feature]``, contiguous over features for the same reason;
- weights, biases and states end with ``LANES - 1`` zeros of padding, because the hot loop
  reads and writes them in whole vector blocks (see ``intrinsics.add_block``).
"""

from __future__ import annotations

import math
from typing import NamedTuple, get_args

import numpy as np

from specklab.schemas.chipconfig import NUM_CORES, ChipConfig, CNNLayer, Destination, Pooling
from specklab.schemas.events import DVS_CORE, DVS_LAYER

from .errors import SimulatorError
from .intrinsics import LANES

#: Rows of the core table: cores 0-8, and row 13 for the DVS layer (its destinations, monitor).
CORE_ROWS = DVS_CORE + 1
STATE_MAX = 2**15 - 1
STATE_MIN = -(2**15)
WEIGHT_MIN, WEIGHT_MAX = -(2**7), 2**7 - 1

# Columns of the core table.
ACTIVE = 0
CIN, HIN, WIN = 1, 2, 3
COUT, HOUT, WOUT = 4, 5, 6
KERNEL, STRIDE_Y, STRIDE_X, PAD_Y, PAD_X = 7, 8, 9, 10, 11
THR_HIGH, THR_LOW, RETURN_TO_ZERO, LEAK = 12, 13, 14, 15
MONITOR, DECIMATE, DECIMATE_N = 16, 17, 18
W_OFF, S_OFF, B_OFF, NEURONS = 19, 20, 21, 22
#: Most neurons one input event can touch (bounds the spikes one event can emit).
RF_NEURONS = 23
N_DEST = 24
#: Destination d occupies DEST + 3 * d + (0: core, 1: log2 of its pooling, 2: feature_shift).
DEST = 25
#: The model layer of the core's output spikes (DVS_LAYER for the DVS layer's and unplaced cores).
LAYER = DEST + 6
CORE_COLUMNS = LAYER + 1

# Entries of the DVS-layer vector.
DVS_ENABLED, DVS_IN_W, DVS_IN_H, DVS_MERGE = 0, 1, 2, 3
#: DVS_POOL_X and DVS_POOL_Y hold log2 of the pooling (the chip pools by 1, 2 or 4: a shift).
DVS_POOL_X, DVS_POOL_Y, DVS_ORIGIN_X, DVS_ORIGIN_Y, DVS_CUT_X, DVS_CUT_Y = 4, 5, 6, 7, 8, 9
DVS_MIRROR_X, DVS_MIRROR_Y, DVS_SWAP, DVS_PASS, DVS_RAW_MONITOR = 10, 11, 12, 13, 14
DVS_ENTRIES = 15

# Entries of the readout vector.
RO_ENABLE, RO_CORE, RO_CLASSES, RO_WINDOW, RO_THRESHOLD, RO_MONITOR, RO_STRIDE = range(7)
RO_ENTRIES = 7
RO_MAX_CLASSES = 16
RO_MAX_WINDOW = 32


class PackedChip(NamedTuple):
    cores: np.ndarray  # int64 [CORE_ROWS, CORE_COLUMNS]
    dvs: np.ndarray  # int64 [DVS_ENTRIES]
    readout: np.ndarray  # int64 [RO_ENTRIES]
    weights: np.ndarray  # int8, all cores, hot-loop layout
    biases: np.ndarray  # int16, all cores
    initial_states: np.ndarray  # int16, all cores, hot-loop layout
    #: Slow-clock period in microseconds; 0 when no tick has anything to do.
    tick_period_us: float


#: The chip's sum poolings (1, 2, 4), for destinations and the DVS layer alike.
POOLINGS: tuple[int, ...] = get_args(Pooling)


def _log2(pooling: int) -> int:
    return pooling.bit_length() - 1


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _check_range(name: str, values: np.ndarray, low: int, high: int) -> None:
    if values.size and (values.min() < low or values.max() > high):
        raise SimulatorError(
            f"{name} must lie in [{low}, {high}], got [{values.min()}, {values.max()}]"
        )


def _check_core(core: int, layer: CNNLayer) -> None:
    d = layer.dimensions
    where = f"core {core}"
    if d.stride.x < 1 or d.stride.y < 1:
        raise SimulatorError(f"{where}: stride must be >= 1, got {d.stride}")
    for axis in ("x", "y"):
        expected = conv_output_size(
            getattr(d.input_shape.size, axis),
            d.kernel_size,
            getattr(d.stride, axis),
            getattr(d.padding, axis),
        )
        got = getattr(d.output_shape.size, axis)
        if got != expected or got < 1:
            raise SimulatorError(
                f"{where}: output size {axis}={got}, but the convolution gives {expected}"
            )
    if layer.threshold_low >= layer.threshold_high:
        raise SimulatorError(
            f"{where}: threshold_low ({layer.threshold_low}) must be below "
            f"threshold_high ({layer.threshold_high})"
        )
    _check_range(f"{where}: weights", layer.weight_array(), WEIGHT_MIN, WEIGHT_MAX)
    _check_range(f"{where}: biases", np.asarray(layer.biases), STATE_MIN, STATE_MAX)
    _check_range(f"{where}: initial neuron values", layer.initial_state(), STATE_MIN, STATE_MAX)


def _pack_destinations(row: np.ndarray, destinations: list[Destination]) -> None:
    enabled = [dest for dest in destinations if dest.enable]
    row[N_DEST] = len(enabled)
    for i, dest in enumerate(enabled):
        row[DEST + 3 * i : DEST + 3 * i + 3] = (dest.layer, _log2(dest.pooling), dest.feature_shift)


def _pack_dvs(config: ChipConfig, cores: np.ndarray) -> np.ndarray:
    dvs = np.zeros(DVS_ENTRIES, dtype=np.int64)
    layer = config.dvs_layer
    if layer is None:
        return dvs
    if {layer.pooling.x, layer.pooling.y} - set(POOLINGS):
        raise SimulatorError(f"DVS layer: pooling must be one of {POOLINGS}, got {layer.pooling}")
    for dest in layer.destinations:
        if dest.enable and dest.layer not in config.cnn_layers:
            raise SimulatorError(f"DVS layer sends to unconfigured core {dest.layer}")
    dvs[:] = (
        1,
        layer.input_size.x,
        layer.input_size.y,
        layer.merge,
        _log2(layer.pooling.x),
        _log2(layer.pooling.y),
        layer.origin.x,
        layer.origin.y,
        layer.cut.x,
        layer.cut.y,
        layer.mirror.x,
        layer.mirror.y,
        layer.mirror_diagonal,
        layer.pass_sensor_events,
        layer.raw_monitor_enable,
    )
    cores[DVS_CORE, ACTIVE] = 1
    cores[DVS_CORE, MONITOR] = layer.monitor_enable
    _pack_destinations(cores[DVS_CORE], layer.destinations)
    return dvs


def _pack_readout(config: ChipConfig) -> np.ndarray:
    readout = np.zeros(RO_ENTRIES, dtype=np.int64)
    spec = config.readout
    if spec is None or not spec.enable:
        return readout
    if spec.input_core not in config.cnn_layers:
        raise SimulatorError(f"readout reads unconfigured core {spec.input_core}")
    readout[:] = (
        1,
        spec.input_core,
        spec.num_classes,
        spec.average_window,
        spec.threshold,
        spec.monitor_enable,
        spec.channel_stride,
    )
    return readout


def pack(config: ChipConfig, slow_clock_hz: float | None = None) -> PackedChip:
    """Check ``config`` against what the chip accepts and flatten it.

    ``slow_clock_hz`` overrides ``config.slow_clock_hz`` when given.
    """
    cores = np.zeros((CORE_ROWS, CORE_COLUMNS), dtype=np.int64)
    weights: list[np.ndarray] = []
    biases: list[np.ndarray] = []
    states: list[np.ndarray] = []
    w_off = s_off = b_off = 0
    for core in range(NUM_CORES):
        layer = config.cnn_layers.get(core)
        if layer is None:
            continue
        _check_core(core, layer)
        d = layer.dimensions
        k = d.kernel_size
        cout, hout, wout = layer.neuron_shape
        w = layer.weight_array().astype(np.int8).transpose(1, 2, 3, 0)[:, :, ::-1]
        s = layer.initial_state().astype(np.int16).transpose(1, 2, 0)
        rf_rows = min(math.ceil(k / d.stride.y), hout)
        rf_cols = min(math.ceil(k / d.stride.x), wout)
        row = cores[core]
        row[ACTIVE] = 1
        row[CIN : WIN + 1] = (
            d.input_shape.feature_count,
            d.input_shape.size.y,
            d.input_shape.size.x,
        )
        row[COUT : WOUT + 1] = (cout, hout, wout)
        row[KERNEL : PAD_X + 1] = (k, d.stride.y, d.stride.x, d.padding.y, d.padding.x)
        row[THR_HIGH : LEAK + 1] = (
            layer.threshold_high,
            layer.threshold_low,
            layer.return_to_zero,
            layer.leak_enable,
        )
        row[MONITOR : DECIMATE_N + 1] = (
            layer.monitor_enable,
            layer.output_decimator_enable,
            layer.output_decimator_interval,
        )
        row[W_OFF : RF_NEURONS + 1] = (w_off, s_off, b_off, s.size, rf_rows * rf_cols * cout)
        _pack_destinations(row, layer.destinations)
        weights.append(w.ravel())
        biases.append(np.asarray(layer.biases, dtype=np.int16))
        states.append(s.ravel())
        w_off += w.size
        s_off += s.size
        b_off += cout
    cores[:, LAYER] = DVS_LAYER
    for core, model_layer in config.layer_of_core.items():
        cores[core, LAYER] = model_layer
    dvs = _pack_dvs(config, cores)
    readout = _pack_readout(config)
    hz = config.slow_clock_hz if slow_clock_hz is None else slow_clock_hz
    if hz is not None and not 0 < hz <= 1_000_000:
        raise SimulatorError(f"slow clock must be in (0, 1 MHz], got {hz} Hz")
    ticks_matter = bool(readout[RO_ENABLE]) or bool(cores[:NUM_CORES, LEAK].any())
    period = 1e6 / hz if hz is not None and ticks_matter else 0.0

    def flat(parts: list[np.ndarray], dtype: type[np.integer]) -> np.ndarray:
        return np.concatenate([*parts, np.zeros(LANES - 1, dtype=dtype)])

    return PackedChip(
        cores,
        dvs,
        readout,
        flat(weights, np.int8),
        flat(biases, np.int16),
        flat(states, np.int16),
        period,
    )


def state_view(packed: PackedChip, states: np.ndarray, core: int) -> np.ndarray:
    """A core's slice of the flat state vector as ``[feature][y][x]`` (a view, not a copy)."""
    if not 0 <= core < NUM_CORES or not packed.cores[core, ACTIVE]:
        raise SimulatorError(f"core {core} is not configured")
    row = packed.cores[core]
    block = states[row[S_OFF] : row[S_OFF] + row[NEURONS]]
    return block.reshape(row[HOUT], row[WOUT], row[COUT]).transpose(2, 0, 1)
