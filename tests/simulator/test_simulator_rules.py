"""Each rule of the chip model on a hand-computed micro case (docs/simulator.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from specklab.schemas.chipconfig import XY, DVSLayer, Mirror, Readout
from specklab.schemas.events import DVS_CORE, DVS_LAYER, SPIKE_DTYPE
from specklab.server.simulator import ChipSimulator, SimulatorError

from ..chip_configs import chip, layer, to
from .handmade import dvs_events, rows, spikes


def one_neuron(weight: int, **fields: object) -> ChipSimulator:
    return ChipSimulator(chip({0: layer([[[[weight]]]], **fields)}))


def test_a_neuron_integrates_and_fires_at_threshold() -> None:
    sim = one_neuron(4, high=10)
    out = sim.run(spikes(*[(t, 0, 0, 0, 0) for t in (1, 2, 3, 4)]))
    # 4, 8, 12 -> spike (12 - 10 = 2), 6
    assert rows(out.spikes) == [(3, 0, 0, 0, 0)]
    assert sim.read_neuron(0, 0, 0, 0) == 6


def test_threshold_is_reached_with_equality() -> None:
    sim = one_neuron(5, high=10)
    assert rows(sim.run(spikes((1, 0, 0, 0, 0), (2, 0, 0, 0, 0))).spikes) == [(2, 0, 0, 0, 0)]
    assert sim.read_neuron(0, 0, 0, 0) == 0


def test_at_most_one_spike_per_input_event_and_subtract() -> None:
    sim = one_neuron(25, high=10)
    out = sim.run(spikes((1, 0, 0, 0, 0), (2, 0, 0, 0, 0)))
    # 25 -> one spike -> 15; 40 -> one spike -> 30
    assert rows(out.spikes) == [(1, 0, 0, 0, 0), (2, 0, 0, 0, 0)]
    assert sim.read_neuron(0, 0, 0, 0) == 30


def test_a_neuron_left_above_threshold_waits_for_its_own_next_input() -> None:
    # k=1 on a 1x2 input: an event reaches exactly one neuron. x=1 fires once and stays at
    # 15 >= 10; the event at x=0 must not make it fire again, though they are neighbours.
    sim = ChipSimulator(chip({0: layer([[[[25]]]], size=(1, 2), high=10)}))
    out = sim.run(spikes((1, 0, 0, 0, 1), (2, 0, 0, 0, 0)))
    assert rows(out.spikes) == [(1, 0, 0, 0, 1), (2, 0, 0, 0, 0)]
    assert sim.states(0).tolist() == [[[15, 15]]]


def test_wide_slices_fire_every_neuron_at_threshold_in_order() -> None:
    # 3 output columns x 37 features = 111 neurons in one slice, more than one vector block.
    weights = np.zeros((37, 1, 3, 3), dtype=np.int64)
    weights[::4] = 20
    sim = ChipSimulator(chip({0: layer(weights, size=(1, 5), padding=1)}))
    out = sim.run(spikes((3, 0, 0, 0, 2)))
    assert rows(out.spikes) == [(3, 0, f, 0, x) for x in (1, 2, 3) for f in range(0, 37, 4)]


def test_return_to_zero_resets_instead_of_subtracting() -> None:
    sim = one_neuron(25, high=10, return_to_zero=True)
    out = sim.run(spikes((1, 0, 0, 0, 0), (2, 0, 0, 0, 0)))
    assert len(out.spikes) == 2
    assert sim.read_neuron(0, 0, 0, 0) == 0


def test_membrane_is_clamped_at_threshold_low() -> None:
    sim = ChipSimulator(chip({0: layer([[[[-7]], [[4]]]], high=10, low=-10)}))
    sim.run(spikes(*[(t, 0, 0, 0, 0) for t in (1, 2, 3)]))
    assert sim.read_neuron(0, 0, 0, 0) == -10  # -7, -14 -> -10, -17 -> -10
    sim.run(spikes((4, 0, 1, 0, 0)))
    assert sim.read_neuron(0, 0, 0, 0) == -6  # the clamp forgot the deficit


def test_membrane_saturates_at_the_16_bit_maximum() -> None:
    sim = one_neuron(20, high=32000, neurons_initial_value=[[[32760]]])
    assert len(sim.run(spikes((1, 0, 0, 0, 0))).spikes) == 1
    assert sim.read_neuron(0, 0, 0, 0) == 767  # min(32780, 32767) - 32000


@pytest.mark.parametrize(
    ("stride", "padding", "size"), [(1, 0, (5, 6)), (2, 1, (5, 6)), (1, 2, (4, 3))]
)
def test_input_events_add_the_kernel_like_a_convolution(
    stride: int, padding: int, size: tuple[int, int]
) -> None:
    rng = np.random.default_rng(stride + padding)
    weights = rng.integers(-20, 20, size=(2, 3, 3, 3))
    config = chip(
        {0: layer(weights, size=size, stride=stride, padding=padding, high=30000, low=-30000)}
    )
    sim = ChipSimulator(config)
    n = 40
    events = spikes(
        *zip(
            range(n),
            [0] * n,
            rng.integers(0, 3, n).tolist(),
            rng.integers(0, size[0], n).tolist(),
            rng.integers(0, size[1], n).tolist(),
            strict=True,
        )
    )
    sim.run(events)
    counts = np.zeros((1, 3, *size))
    np.add.at(counts[0], (events["feature"], events["y"], events["x"]), 1)
    expected = F.conv2d(
        torch.tensor(counts),
        torch.tensor(weights, dtype=torch.float64),
        stride=stride,
        padding=padding,
    )[0]
    assert np.array_equal(sim.states(0), expected.numpy().astype(np.int64))


def test_neurons_are_scanned_in_y_x_feature_order() -> None:
    # A 2x2 kernel on a 3x3 input: the centre event reaches all four output positions.
    sim = ChipSimulator(chip({0: layer(np.full((2, 1, 2, 2), 20), size=(3, 3))}))
    out = sim.run(spikes((5, 0, 0, 1, 1)))
    assert rows(out.spikes) == [
        (5, 0, f, y, x) for y in range(2) for x in range(2) for f in range(2)
    ]


def test_sum_pooling_maps_coordinates_and_passes_every_spike() -> None:
    source = layer([[[[20]]]], size=(4, 4), monitor_enable=False, destinations=[to(1, pooling=2)])
    target = layer([[[[4]]]], size=(2, 2), high=10)
    sim = ChipSimulator(chip({0: source, 1: target}))
    out = sim.run(spikes((1, 0, 0, 0, 0), (2, 0, 0, 0, 1), (3, 0, 0, 1, 0), (4, 0, 0, 3, 2)))
    # Three spikes land on target (0, 0): 4, 8, 12 -> fires on the third. (3, 2) -> (1, 1).
    assert rows(out.spikes) == [(3, 1, 0, 0, 0)]
    assert sim.read_neuron(1, 0, 0, 0) == 2
    assert sim.read_neuron(1, 0, 1, 1) == 4


def test_two_destinations_and_feature_shift_depth_first() -> None:
    source = layer(np.full((2, 1, 1, 1), 20), destinations=[to(1), to(2, feature_shift=1)])
    first = layer(np.full((2, 2, 1, 1), 20))
    # The second target listens only to input feature 2: it fires only through the shift.
    second = layer([[[[0]], [[0]], [[20]]]])
    sim = ChipSimulator(chip({0: source, 1: first, 2: second}))
    out = sim.run(spikes((7, 0, 0, 0, 0)))
    assert [(core, f) for _, core, f, _, _ in rows(out.spikes)] == [
        (0, 0),  # the source's scan emits both features first,
        (0, 1),
        (1, 0),  # then source feature 0 -> first target (fires both features),
        (1, 1),
        # -> second target as feature 1: weight 0, silent;
        (1, 0),  # source feature 1 -> first target again (20 - 10 + 20 = 30: both fire),
        (1, 1),
        (2, 0),  # -> second target as feature 1 + 1 = 2: fires.
    ]


def test_an_input_event_is_fully_propagated_before_the_next() -> None:
    sim = ChipSimulator(chip({0: layer([[[[20]]]], destinations=[to(1)]), 1: layer([[[[20]]]])}))
    out = sim.run(spikes((1, 0, 0, 0, 0), (1, 0, 0, 0, 0)))
    assert [r[1] for r in rows(out.spikes)] == [0, 1, 0, 1]


def test_leak_adds_the_bias_once_per_slow_clock_tick() -> None:
    config = chip({0: layer([[[[0]]]], biases=[3], leak_enable=True)}, slow_clock_hz=1000)
    sim = ChipSimulator(config)
    assert len(sim.advance_to(3500).spikes) == 0
    assert sim.read_neuron(0, 0, 0, 0) == 9  # ticks at 1000, 2000, 3000
    out = sim.advance_to(4000)
    assert rows(out.spikes) == [(4000, 0, 0, 0, 0)]  # 12 crosses at the tick; 12 - 10 = 2
    assert sim.read_neuron(0, 0, 0, 0) == 2
    assert sim.time_us == 4000


def test_slow_clock_override_and_no_leak_without_leak_enable() -> None:
    sim = ChipSimulator(
        chip({0: layer([[[[0]]]], biases=[3], leak_enable=True)}), slow_clock_hz=2000
    )
    sim.advance_to(1000)
    assert sim.read_neuron(0, 0, 0, 0) == 6  # ticks at 500, 1000
    still = ChipSimulator(chip({0: layer([[[[0]]]], biases=[3])}, slow_clock_hz=1000))
    still.advance_to(5000)
    assert still.read_neuron(0, 0, 0, 0) == 0


def test_restarting_the_clock_restarts_the_slow_clock_there() -> None:
    sim = ChipSimulator(
        chip({0: layer([[[[0]]]], biases=[3], leak_enable=True)}, slow_clock_hz=1000)
    )
    sim.advance_to(1200)  # one tick, at 1000
    sim.reset_clock(at_us=700)
    assert sim.time_us == 700
    sim.advance_to(1699)
    assert sim.read_neuron(0, 0, 0, 0) == 3  # the next tick is due at 1700, not 2000
    sim.advance_to(1700)
    assert sim.read_neuron(0, 0, 0, 0) == 6
    with pytest.raises(SimulatorError, match=">= 0"):
        sim.reset_clock(at_us=-1)


def test_shifting_the_clock_changes_only_the_time_base() -> None:
    config = chip(
        {
            0: layer([[[[4]]]], biases=[1], leak_enable=True, destinations=[to(1)]),
            1: layer([[[[20]]]]),
        },
        slow_clock_hz=1000,
    )
    inputs = [(t, 0, 0, 0, 0) for t in (100, 900, 1000, 2500, 2600)]
    plain = ChipSimulator(config)
    expected = plain.run(spikes(*inputs[:3])).spikes
    assert rows(expected) == [(1000, 0, 0, 0, 0), (1000, 1, 0, 0, 0)]  # tick 1000: 9, +4
    based = ChipSimulator(config)
    based.reset_clock(at_us=5000)
    late = based.run(spikes(*[(t + 5000, *rest) for t, *rest in inputs[:3]])).spikes
    assert late["t"].tolist() == (expected["t"] + 5000).tolist()
    based.shift_clock(-5000)
    assert based.time_us == plain.time_us
    after = rows(plain.run(spikes(*inputs[3:])).spikes)
    assert after == [(2600, 0, 0, 0, 0), (2600, 1, 0, 0, 0)]  # tick 2000: 4, +4, +4
    assert rows(based.run(spikes(*inputs[3:])).spikes) == after
    assert based.states(0).tolist() == plain.states(0).tolist()
    with pytest.raises(SimulatorError, match="negative"):
        based.shift_clock(-based.time_us - 1)


def test_a_tick_due_at_an_events_time_runs_before_it() -> None:
    config = chip(
        {0: layer([[[[15]]]], biases=[-20], leak_enable=True, high=10, low=-10)}, slow_clock_hz=1000
    )
    sim = ChipSimulator(config)
    out = sim.run(spikes((1000, 0, 0, 0, 0)))
    # Tick first: -10 (clamped), then +15 = 5: no spike (event first would have fired).
    assert len(out.spikes) == 0
    assert sim.read_neuron(0, 0, 0, 0) == 5


def test_run_leaves_ticks_after_the_last_event_to_advance_to() -> None:
    sim = ChipSimulator(
        chip({0: layer([[[[0]]]], biases=[3], leak_enable=True)}, slow_clock_hz=1000)
    )
    sim.run(spikes((1500, 0, 0, 0, 0)))
    assert sim.time_us == 1500
    assert sim.read_neuron(0, 0, 0, 0) == 3


def test_output_decimator_lets_one_spike_in_n_leave_the_core() -> None:
    source = layer(
        [[[[20]]]],
        output_decimator_enable=True,
        output_decimator_interval=3,
        destinations=[to(1)],
    )
    sim = ChipSimulator(chip({0: source, 1: layer([[[[20]]]])}))
    out = sim.run(spikes(*[(t, 0, 0, 0, 0) for t in range(1, 8)]))
    assert rows(out.spikes) == [(t, core, 0, 0, 0) for t in (3, 6) for core in (0, 1)]


def test_only_monitored_cores_leave_the_chip_with_model_layers_set() -> None:
    config = chip(
        {4: layer([[[[20]]]], monitor_enable=False, destinations=[to(7)]), 7: layer([[[[20]]]])}
    )
    out = ChipSimulator(config).run(spikes((1, 4, 0, 0, 0)))
    assert rows(out.spikes) == [(1, 7, 0, 0, 0)]
    assert out.spikes["layer"].tolist() == [1]


def readout_chip(**readout: object) -> ChipSimulator:
    # Nine output features; the input excites feature 4 (class 1) and feature 1 (not a class).
    weights = np.zeros((9, 1, 1, 1), dtype=int)
    weights[4] = weights[1] = 20
    spec = {"enable": True, "input_core": 2, "num_classes": 3, "average_window": 16, **readout}
    return ChipSimulator(
        chip({2: layer(weights, monitor_enable=False)}, readout=Readout(**spec), slow_clock_hz=1000)
    )


def test_readout_reports_the_class_with_the_highest_window_average_every_tick() -> None:
    sim = readout_chip()
    assert len(sim.run(spikes(*[(t, 2, 0, 0, 0) for t in range(100, 132)])).readout) == 0
    out = sim.advance_to(2000)
    # 32 spikes on feature 4 = class 1 (erratum: class k reads feature 4k); 32 // 16 = 2.
    assert out.readout.tolist() == [(1000, 1, 2), (2000, 1, 2)]
    out = sim.advance_to(17000)
    assert out.readout[-2].tolist() == (16000, 1, 2)
    assert out.readout[-1].tolist() == (17000, 0, 0)  # tick 1 left the 16-tick window


def test_readout_threshold_channel_stride_and_monitor() -> None:
    quiet = readout_chip(threshold=3)
    quiet.run(spikes(*[(t, 2, 0, 0, 0) for t in range(100, 132)]))
    assert len(quiet.advance_to(5000).readout) == 0  # average 2 < threshold 3
    dense = readout_chip(channel_stride=1, num_classes=9)
    dense.run(spikes(*[(t, 2, 0, 0, 0) for t in range(100, 132)]))
    assert dense.advance_to(1000).readout.tolist() == [(1000, 1, 2)]  # feature 1 before 4
    hidden = readout_chip(monitor_enable=False)
    hidden.run(spikes((100, 2, 0, 0, 0)))
    assert len(hidden.advance_to(5000).readout) == 0


def dvs_chip(**fields: object) -> ChipSimulator:
    return ChipSimulator(chip({}, dvs=DVSLayer(monitor_enable=True, **fields)))


def test_dvs_layer_merges_polarities() -> None:
    out = dvs_chip(merge=True).run(dvs=dvs_events((1, 3, 4, 1), (2, 3, 4, 0)))
    assert rows(out.spikes) == [(1, DVS_CORE, 0, 4, 3), (2, DVS_CORE, 0, 4, 3)]
    assert out.spikes["layer"].tolist() == [DVS_LAYER, DVS_LAYER]
    out = dvs_chip().run(dvs=dvs_events((1, 3, 4, 1)))
    assert rows(out.spikes) == [(1, DVS_CORE, 1, 4, 3)]


def test_dvs_layer_pools_then_crops_in_pooled_coordinates() -> None:
    sim = dvs_chip(pooling=XY(x=2, y=2), origin=XY(x=1, y=1), cut=XY(x=2, y=3))
    out = sim.run(
        dvs=dvs_events((1, 5, 3, 0), (2, 2, 2, 0), (3, 6, 2, 0), (4, 1, 2, 0), (5, 4, 7, 1))
    )
    # (5,3)->(2,1)->(1,0); (2,2)->(1,1)->(0,0); (6,2)->(3,1): x > cut;
    # (1,2)->(0,1): x < origin; (4,7)->(2,3)->(1,2)
    assert rows(out.spikes) == [
        (1, DVS_CORE, 0, 0, 1),
        (2, DVS_CORE, 0, 0, 0),
        (5, DVS_CORE, 1, 2, 1),
    ]


def test_dvs_layer_mirrors_then_swaps() -> None:
    crop = {"cut": XY(x=9, y=4)}
    assert rows(
        dvs_chip(mirror=Mirror(x=True), **crop).run(dvs=dvs_events((1, 2, 1, 0))).spikes
    ) == [(1, DVS_CORE, 0, 1, 7)]
    assert rows(
        dvs_chip(mirror=Mirror(y=True), **crop).run(dvs=dvs_events((1, 2, 1, 0))).spikes
    ) == [(1, DVS_CORE, 0, 3, 2)]
    assert rows(
        dvs_chip(mirror_diagonal=True, **crop).run(dvs=dvs_events((1, 2, 1, 0))).spikes
    ) == [(1, DVS_CORE, 0, 2, 1)]
    both = dvs_chip(mirror=Mirror(x=True), mirror_diagonal=True, **crop)
    assert rows(both.run(dvs=dvs_events((1, 2, 1, 0))).spikes) == [(1, DVS_CORE, 0, 7, 1)]


def test_raw_monitor_and_pass_sensor_events() -> None:
    events = dvs_events((1, 127, 0, 1), (2, 5, 6, 0))
    out = dvs_chip(raw_monitor_enable=True, pass_sensor_events=False, cut=XY(x=9, y=9)).run(
        dvs=events
    )
    assert np.array_equal(out.dvs, events)
    assert len(out.spikes) == 0


def test_dvs_layer_feeds_its_destination_cores() -> None:
    dvs = DVSLayer(merge=True, pooling=XY(x=4, y=4), cut=XY(x=1, y=1), destinations=[to(3)])
    sim = ChipSimulator(chip({3: layer([[[[20]]]], size=(2, 2))}, dvs=dvs))
    sim.run(dvs=dvs_events((9, 6, 5, 1)))
    assert rows(sim.run(dvs=dvs_events((10, 6, 5, 0))).spikes) == [(10, 3, 0, 1, 1)]


def test_initial_values_states_order_reset_and_read() -> None:
    initial = np.arange(12).reshape(2, 2, 3) - 3
    sim = ChipSimulator(
        chip(
            {
                5: layer(
                    np.full((2, 1, 1, 1), 1), size=(2, 3), neurons_initial_value=initial.tolist()
                )
            }
        )
    )
    assert np.array_equal(sim.states(5), initial)
    assert sim.read_neuron(5, 1, 0, 2) == initial[1, 0, 2]
    sim.run(spikes((1, 5, 0, 1, 2)))
    assert sim.read_neuron(5, 0, 1, 2) == initial[0, 1, 2] + 1
    sim.reset_states()
    assert np.array_equal(sim.states(5), initial)
    assert sim.time_us == 1  # the clock is not the chip's state
    sim.reset_clock()
    assert sim.time_us == 0


def test_reset_clears_decimator_and_readout_window() -> None:
    sim = ChipSimulator(
        chip({0: layer([[[[20]]]], output_decimator_enable=True, output_decimator_interval=2)})
    )
    sim.run(spikes((1, 0, 0, 0, 0)))
    sim.reset_states()
    assert len(sim.run(spikes((2, 0, 0, 0, 0))).spikes) == 0  # counting starts again
    readout = readout_chip()
    readout.run(spikes((100, 2, 0, 0, 0)))
    readout.advance_to(1000)
    readout.reset_states()
    assert readout.advance_to(2000).readout.tolist() == [(2000, 0, 0)]


def test_outputs_carry_the_causing_events_time_and_late_events_run_at_the_clock() -> None:
    sim = ChipSimulator(chip({0: layer([[[[20]]]], destinations=[to(1)]), 1: layer([[[[20]]]])}))
    assert {int(t) for t in sim.run(spikes((42, 0, 0, 0, 0))).spikes["t"]} == {42}
    sim.advance_to(100)
    assert sim.run(spikes((50, 0, 0, 0, 0))).spikes["t"].tolist() == [100, 100]


def test_unsorted_input_is_processed_in_time_order_spikes_before_dvs() -> None:
    dvs = DVSLayer(monitor_enable=True, cut=XY(x=3, y=3))
    sim = ChipSimulator(chip({0: layer([[[[20]]]])}, dvs=dvs))
    out = sim.run(spikes((5, 0, 0, 0, 0), (2, 0, 0, 0, 0)), dvs_events((2, 1, 1, 0)))
    assert [(r[0], r[1]) for r in rows(out.spikes)] == [(2, 0), (2, DVS_CORE), (5, 0)]


def test_events_outside_the_target_core_are_dropped_and_counted() -> None:
    source = layer([[[[20]]]], size=(3, 3), destinations=[to(1, pooling=2)])
    sim = ChipSimulator(chip({0: source, 1: layer([[[[20]]]], size=(1, 1))}))
    out = sim.run(spikes((1, 0, 0, 2, 2), (2, 0, 0, 0, 1)))
    assert [r[1] for r in rows(out.spikes)] == [0, 0, 1]  # (2,2) pools to (1,1): outside 1x1
    assert sim.counters == {"dropped_out_of_range": 1, "dropped_overflow": 0}


def test_a_runaway_recurrent_network_is_cut_off() -> None:
    loop = layer([[[[20]]]], monitor_enable=False, destinations=[to(0), to(0)])
    sim = ChipSimulator(chip({0: loop}))
    sim.run(spikes((1, 0, 0, 0, 0)))
    assert sim.counters["dropped_overflow"] > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"weights": [[[[200]]]]}, "weights must lie in"),
        ({"threshold_low": 10}, "threshold_low"),
        ({"biases": [40000]}, "biases must lie in"),
    ],
)
def test_configurations_the_chip_rejects(change: dict[str, object], message: str) -> None:
    config = chip({0: layer([[[[1]]]])})
    for key, value in change.items():
        setattr(config.cnn_layers[0], key, value)
    with pytest.raises(SimulatorError, match=message):
        ChipSimulator(config)


def test_dvs_pooling_must_be_one_the_chip_has() -> None:
    with pytest.raises(SimulatorError, match=r"pooling must be one of \(1, 2, 4\)"):
        dvs_chip(pooling=XY(x=3, y=3))


def test_output_size_must_match_the_convolution() -> None:
    config = chip({0: layer(np.ones((1, 1, 3, 3)), size=(5, 5))})
    config.cnn_layers[0].dimensions.output_shape.size = XY(x=4, y=4)
    with pytest.raises(SimulatorError, match="output size"):
        ChipSimulator(config)


def test_bad_input_events_are_refused() -> None:
    sim = ChipSimulator(chip({0: layer([[[[1]]]], size=(2, 2))}))
    with pytest.raises(SimulatorError, match="outside the inputs"):
        sim.run(spikes((1, 0, 0, 2, 0)))
    with pytest.raises(SimulatorError, match="outside the inputs"):
        sim.run(spikes((1, 3, 0, 0, 0)))
    with pytest.raises(SimulatorError, match="no DVS layer"):
        sim.run(dvs=dvs_events((1, 0, 0, 0)))
    with pytest.raises(SimulatorError, match="dtype"):
        sim.run(np.zeros(2, dtype=np.int64))
    with pytest.raises(SimulatorError, match="outside core"):
        sim.read_neuron(0, 1, 0, 0)
    with pytest.raises(SimulatorError, match="not configured"):
        sim.states(4)
    assert sim.run(np.zeros(0, SPIKE_DTYPE)).spikes.size == 0


def test_bad_dvs_events_are_refused() -> None:
    sim = dvs_chip()
    with pytest.raises(SimulatorError, match="outside the sensor"):
        sim.run(dvs=dvs_events((1, 128, 0, 0)))
    with pytest.raises(SimulatorError, match="outside the sensor"):
        sim.run(dvs=dvs_events((1, 0, 0, 2)))
