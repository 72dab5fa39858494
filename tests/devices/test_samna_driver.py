"""The samna driver against the samna test double, which records every call."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from specklab.schemas.chipconfig import XY, Destination, DVSLayer, Mirror, Readout
from specklab.schemas.events import DVS_LAYER, spikes
from specklab.server.devices.base import DeviceDescription
from specklab.server.devices.errors import (
    ConfigRejected,
    DeviceIOError,
    DeviceStateError,
    DeviceTimeout,
    InvalidArgument,
    InvalidEvents,
)
from specklab.server.devices.samna_driver import SamnaDevkit
from specklab.server.devices.samna_events import neuron_address

from .networks import GUIDE_LAYERS, GUIDE_PLACEMENT, guide_network, tiny_network


def _description(chip: str = "speck2f") -> DeviceDescription:
    return DeviceDescription(
        id=f"{chip}devkit:0", type=f"{chip}devkit", chip=chip, virtual=False, serial_number="S1"
    )


def _open(samna: ModuleType, chip: str = "speck2f", **options: Any) -> SamnaDevkit:
    name = {"speck2f": "Speck2fDevKit", "speck2e": "Speck2eDevKit"}[chip]
    info = samna.device.DeviceInfo(name, "S1", 1, 4)
    samna.STATE.devices = [info]
    options = {"quiet_s": 0.02, "poll_s": 0.002, **options}
    driver = SamnaDevkit(samna, info, _description(chip), **options)
    driver.open()
    return driver


@pytest.fixture
def devkit(samna: ModuleType) -> Iterator[SamnaDevkit]:
    driver = _open(samna)
    yield driver
    driver.close()


def _applied(samna: ModuleType) -> Any:
    configs = [call[1] for call in samna.STATE.calls if call[0] == "apply_configuration"]
    assert configs, "nothing was applied"
    return configs[-1]


def _since(samna: ModuleType, name: str) -> list[tuple[Any, ...]]:
    """The calls after the last call named ``name`` (inclusive)."""
    names = samna.STATE.names()
    start = len(names) - 1 - names[::-1].index(name)
    return samna.STATE.calls[start:]


def test_open_wires_graphs_and_enables_timestamps(samna: ModuleType) -> None:
    driver = _open(samna)
    names = samna.STATE.names()
    assert names[0] == "open_device"
    assert samna.STATE.calls[names.index("graph.sequential")][1] == [
        "BasicSourceNode_speck2f_event_input_event",
        "_ModelInput",
    ]
    sequentials = [c[1] for c in samna.STATE.calls if c[0] == "graph.sequential"]
    assert sequentials[1] == ["_ModelOutput", "BasicSinkNode_speck2f_event_output_event"]
    assert ("stopwatch.set_enable_value", True) in samna.STATE.calls
    assert names.index("graph.start") > names.index("graph.sequential")
    driver.open()  # idempotent
    assert samna.STATE.names().count("open_device") == 1
    driver.close()
    assert samna.STATE.names()[-2:] == ["graph.stop", "close_device"]
    driver.close()
    assert samna.STATE.names().count("close_device") == 1


def test_guide_network_is_written_field_by_field(samna: ModuleType, devkit: SamnaDevkit) -> None:
    config = guide_network()
    devkit.apply(config)
    written = _applied(samna)
    names = samna.STATE.names()
    assert names.index("validate_configuration") < names.index("apply_configuration")
    assert isinstance(written, samna.speck2f.configuration.SpeckConfiguration)
    used = set(GUIDE_PLACEMENT.values())
    for index, (c_in, size_in, kernel, c_out, pooling) in enumerate(GUIDE_LAYERS):
        core = GUIDE_PLACEMENT[index]
        source, target = config.cnn_layers[core], written.cnn_layers[core]
        size_out = size_in - kernel + 1
        dims = target.dimensions
        assert (dims.input_shape.size.x, dims.input_shape.size.y) == (size_in, size_in)
        assert dims.input_shape.feature_count == c_in
        assert (dims.output_shape.size.x, dims.output_shape.size.y) == (size_out, size_out)
        assert dims.output_shape.feature_count == c_out
        assert (dims.padding.x, dims.padding.y, dims.stride.x, dims.stride.y) == (0, 0, 1, 1)
        assert dims.kernel_size == kernel
        # samna's [out][in][kx][ky] is torch's [out][in][ky][kx] with the last two axes swapped.
        torch_order = np.asarray(source.weights)
        assert np.array_equal(np.asarray(target.weights), torch_order.transpose(0, 1, 3, 2))
        assert np.asarray(target.weights).shape == (c_out, c_in, kernel, kernel)
        assert all(type(w) is int for w in target.weights[0][0][0])
        assert target.biases == source.biases
        assert target.threshold_high == source.threshold_high
        assert target.threshold_low == source.threshold_low
        assert target.return_to_zero is False and target.leak_enable is False
        assert target.leak_internal_slow_clk_enable is False
        initial = np.asarray(source.neurons_initial_value)  # [f][y][x]
        assert np.array_equal(np.asarray(target.neurons_initial_value), initial.transpose(0, 2, 1))
        assert target.monitor_enable is (index == len(GUIDE_LAYERS) - 1)
        assert target.output_decimator_enable is False
        first, second = target.destinations
        if index + 1 < len(GUIDE_LAYERS):
            assert (first.layer, first.enable, first.pooling) == (
                GUIDE_PLACEMENT[index + 1],
                True,
                pooling,
            )
            assert first.feature_shift == 0
        else:
            assert first.enable is False
        assert second.enable is False
    for core in set(range(9)) - used:
        untouched = written.cnn_layers[core]
        assert untouched.weights == [] and untouched.monitor_enable is False
        assert not any(d.enable for d in untouched.destinations)
    dvs = written.dvs_layer
    assert dvs.pass_sensor_events is False and dvs.monitor_enable is False
    assert dvs.raw_monitor_enable is False and not any(d.enable for d in dvs.destinations)
    assert written.readout.enable is False
    assert ("io.set_slow_clk", False) in _since(samna, "apply_configuration")


def test_dvs_layer_readout_slow_clock_and_decimator(samna: ModuleType, devkit: SamnaDevkit) -> None:
    config = tiny_network()
    core = config.cnn_layers[2]
    core.leak_enable = True
    core.return_to_zero = True
    core.output_decimator_enable = True
    core.output_decimator_interval = 8
    core.destinations = [Destination(layer=2, pooling=1, feature_shift=0, enable=False)]
    config.dvs_layer = DVSLayer(
        merge=False,
        pooling=XY(x=2, y=2),
        origin=XY(x=10, y=12),
        cut=XY(x=13, y=15),
        mirror=Mirror(x=True, y=False),
        mirror_diagonal=True,
        pass_sensor_events=True,
        destinations=[Destination(layer=2, pooling=1, feature_shift=0)],
        monitor_enable=True,
        raw_monitor_enable=True,
    )
    config.readout = Readout(
        enable=True, input_core=2, num_classes=3, average_window=16, threshold=5
    )
    config.slow_clock_hz = 1000.0
    devkit.apply(config)
    written = _applied(samna)
    target = written.cnn_layers[2]
    assert target.leak_enable is True and target.return_to_zero is True
    assert target.output_decimator_enable is True
    assert target.output_decimator_interval == 2  # 1 of 8 passes: samna's code log2(8) - 1
    own, readout_route = target.destinations
    assert (own.layer, own.enable) == (2, False)
    assert (readout_route.layer, readout_route.enable, readout_route.pooling) == (12, True, 1)
    dvs = written.dvs_layer
    assert dvs.merge is False
    assert (dvs.pooling.x, dvs.pooling.y, dvs.origin.x, dvs.origin.y) == (2, 2, 10, 12)
    assert (dvs.cut.x, dvs.cut.y, dvs.mirror.x, dvs.mirror.y) == (13, 15, True, False)
    assert dvs.mirror_diagonal is True and dvs.monitor_enable is True
    # The sensor is off until set_sensor(True): its events are kept out whatever the document says.
    assert dvs.pass_sensor_events is False and dvs.raw_monitor_enable is False
    assert (dvs.destinations[0].layer, dvs.destinations[0].enable) == (2, True)
    assert dvs.destinations[1].enable is False
    readout = written.readout
    assert readout.enable is True and readout.threshold == 5
    assert readout.low_pass_filter_disable is False and readout.low_pass_filter32_not16 is False
    assert readout.readout_configuration_sel == 3 and readout.output_mode_sel == 3
    assert readout.override_threshold_max is False and readout.monitor_enable is True
    after = _since(samna, "apply_configuration")
    assert ("io.set_slow_clk_rate", 1000) in after
    assert after.index(("io.set_slow_clk_rate", 1000)) < after.index(("io.set_slow_clk", True))

    devkit.set_sensor(True)
    dvs = _applied(samna).dvs_layer
    assert dvs.pass_sensor_events is True and dvs.raw_monitor_enable is True
    devkit.set_sensor(False)
    assert _applied(samna).dvs_layer.pass_sensor_events is False


def test_readout_needs_a_free_destination(devkit: SamnaDevkit) -> None:
    config = tiny_network()
    config.cnn_layers[2].destinations = [Destination(layer=2), Destination(layer=2)]
    config.readout = Readout(enable=True, input_core=2)
    with pytest.raises(ConfigRejected, match="already has 2 destinations"):
        devkit.apply(config)


def test_decimator_must_be_a_power_of_two(devkit: SamnaDevkit) -> None:
    config = tiny_network()
    config.cnn_layers[2].output_decimator_interval = 6
    with pytest.raises(ConfigRejected, match="power of two"):
        devkit.apply(config)


def test_validator_message_is_reported_and_nothing_applied(
    samna: ModuleType, devkit: SamnaDevkit
) -> None:
    samna.STATE.validation = (False, "layer 3: kernel memory exceeded")
    with pytest.raises(ConfigRejected, match="layer 3: kernel memory exceeded"):
        devkit.apply(tiny_network())
    assert "apply_configuration" not in samna.STATE.names()


def test_wrong_chip_is_rejected(devkit: SamnaDevkit) -> None:
    with pytest.raises(ConfigRejected, match="speck2e"):
        devkit.apply(tiny_network("speck2e"))


def test_apply_timeout_soft_resets_and_retries_once(samna: ModuleType) -> None:
    driver = _open(samna, apply_timeout_s=0.1, soft_reset_settle_s=0.0)
    samna.STATE.apply_hangs = 1
    driver.apply(tiny_network())
    after = [n for n in samna.STATE.names() if n in ("apply_configuration", "reset_board_soft")]
    assert after == ["apply_configuration", "reset_board_soft", "apply_configuration"]
    assert ("reset_board_soft", True) in samna.STATE.calls
    assert driver.health().counters["soft_resets"] == 1

    samna.STATE.apply_hangs = 2
    with pytest.raises(DeviceTimeout, match="also after a soft reset"):
        driver.apply(tiny_network())
    samna.STATE.release.set()
    driver.close()


def _echo(samna: ModuleType, delay_us: int = 5) -> None:
    """The chip answers each input spike with a core-2 spike, ``delay_us`` later."""
    event = samna.speck2f.event

    def respond(inputs: list[Any]) -> list[Any]:
        return [
            event.Spike(layer=2, x=e.x, y=e.y, feature=e.feature, timestamp=e.timestamp + delay_us)
            for e in inputs
            if type(e) is event.Spike
        ]

    samna.STATE.responder = respond


def test_forward_times_the_batch_with_the_stopwatch(samna: ModuleType, devkit: SamnaDevkit) -> None:
    devkit.apply(tiny_network())
    _echo(samna)
    spikes_in = spikes(t=[1000, 1200, 1100], layer=0, core=2, feature=[0, 1, 1], x=[1, 2, 3], y=3)
    out = devkit.forward(spikes_in, timeout=1.0)
    assert out.complete
    calls = _since(samna, "stopwatch.stop")
    names = [c[0] for c in calls]
    # stop, reset, drain the output, write everything, and only then start the stopwatch.
    assert names[:5] == [
        "stopwatch.stop",
        "stopwatch.reset",
        "sink.get_events",
        "source.write",
        "stopwatch.start",
    ]
    written = calls[3][1]
    assert [e.timestamp for e in written] == [0, 100, 200]  # shifted to 0, in time order
    assert [(e.layer, e.x, e.feature) for e in written] == [(2, 1, 0), (2, 3, 1), (2, 2, 1)]
    assert out.spikes["t"].tolist() == [1005, 1105, 1205]  # back in the inputs' time base
    assert out.spikes["core"].tolist() == [2, 2, 2]
    assert out.spikes["layer"].tolist() == [0, 0, 0]
    assert out.spikes["x"].tolist() == [1, 3, 2]
    assert len(out.dvs) == 0 and len(out.readout) == 0


def test_forward_is_cut_at_its_bound_when_output_never_stops(
    samna: ModuleType, devkit: SamnaDevkit
) -> None:
    devkit.apply(tiny_network())
    event = samna.speck2f.event
    samna.STATE.live = lambda: [event.DvsEvent(x=1, y=2, p=True, timestamp=50)]
    out = devkit.forward(spikes(t=[0], layer=0, core=2, feature=0, x=0, y=0), timeout=0.1)
    assert not out.complete
    assert len(out.dvs) > 0
    assert devkit.health().counters["forwards_cut_at_bound"] == 1


def test_inputs_need_a_configuration_and_an_event_array(devkit: SamnaDevkit) -> None:
    # Their contents were checked before they reach a device (schemas/inputs.py).
    with pytest.raises(DeviceStateError, match="apply a configuration"):
        devkit.write(spikes(t=[0], layer=0, core=2, feature=0, x=0, y=0))
    devkit.apply(tiny_network())
    with pytest.raises(InvalidEvents, match="must be a 1-d array"):
        devkit.write(np.zeros(3, dtype=np.int64))


def test_continuous_write_and_read(samna: ModuleType, devkit: SamnaDevkit) -> None:
    devkit.apply(tiny_network())
    _echo(samna, delay_us=1)
    assert devkit.read(0.02).count == 0
    devkit.write(spikes(t=[10, 20], layer=0, core=2, feature=1, x=0, y=[1, 2]))
    assert devkit.read(0.02).count == 0  # the stopwatch has not started: inputs wait
    devkit.start_stopwatch()
    out = devkit.read(0.5)
    assert out.spikes["t"].tolist() == [11, 21]
    assert out.spikes["y"].tolist() == [1, 2]
    assert devkit.read(0.01).count == 0
    devkit.stop_stopwatch()
    devkit.reset_stopwatch()
    assert samna.STATE.names()[-2:] == ["stopwatch.stop", "stopwatch.reset"]


def test_read_states_asks_every_neuron_and_keeps_other_outputs_for_the_next_read(
    samna: ModuleType, devkit: SamnaDevkit
) -> None:
    config = tiny_network()
    devkit.apply(config)
    _echo(samna)
    devkit.start_stopwatch()
    devkit.write(spikes(t=[0], layer=0, core=2, feature=1, x=2, y=3))
    shape = config.cnn_layers[2].neuron_shape
    expected = np.arange(np.prod(shape), dtype=np.int32).reshape(shape) - 20
    for feature, y, x in np.ndindex(shape):
        address = neuron_address(shape, feature, y, x)
        samna.STATE.neuron_states[(2, address)] = int(expected[feature, y, x])
    states = devkit.read_states(2)
    np.testing.assert_array_equal(states, expected)
    assert states.dtype == np.int32
    request = [c for c in samna.STATE.calls if c[0] == "source.write"][-1][1]
    assert sorted((e.layer, e.address) for e in request) == sorted(
        (2, address) for address in {neuron_address(shape, *n) for n in np.ndindex(shape)}
    )
    assert devkit.read(0.01).spikes["x"].tolist() == [2]
    with pytest.raises(InvalidArgument, match="core 5"):
        devkit.read_states(5)


def test_read_states_times_out_when_neurons_stay_silent(samna: ModuleType) -> None:
    driver = _open(samna, neuron_timeout_s=0.05)
    driver.apply(tiny_network())
    # The stopwatch is stopped: the double holds the requests back, as a board that never
    # answers would.
    with pytest.raises(DeviceTimeout, match="48 neuron addresses"):
        driver.read_states(2)


@pytest.mark.parametrize(
    ("shape", "feature", "y", "x", "address"),
    [
        # (features, height, width): pinned from sinabs 3.1.3's io.calculate_neuron_address.
        ((3, 5, 6), 0, 0, 0, 0),
        ((3, 5, 6), 1, 0, 0, 1),
        ((3, 5, 6), 0, 0, 1, 4),
        ((3, 5, 6), 0, 1, 0, 32),
        ((3, 5, 6), 2, 1, 5, 54),
        ((16, 32, 32), 7, 31, 3, 15927),
        ((8, 64, 16), 5, 40, 15, 20605),
        ((5, 3, 17), 4, 2, 16, 196),
        ((1, 1, 1), 0, 0, 0, 0),
    ],
)
def test_neuron_address_packs_as_the_vendor_library(
    shape: tuple[int, int, int], feature: int, y: int, x: int, address: int
) -> None:
    assert neuron_address(shape, feature=feature, y=y, x=x) == address


def test_reset_states_and_clear_rewrite_the_configuration(
    samna: ModuleType, devkit: SamnaDevkit
) -> None:
    config = tiny_network()
    devkit.apply(config)
    devkit.reset_states()
    assert samna.STATE.names().count("apply_configuration") == 2
    assert np.asarray(_applied(samna).cnn_layers[2].weights).shape == (3, 2, 1, 1)
    devkit.clear()
    cleared = _applied(samna)
    assert all(layer.weights == [] for layer in cleared.cnn_layers)
    assert cleared.dvs_layer.pass_sensor_events is False
    with pytest.raises(DeviceStateError):
        devkit.read_states(2)


def test_unplugged_device_raises_io_errors(samna: ModuleType, devkit: SamnaDevkit) -> None:
    devkit.apply(tiny_network())
    samna.STATE.unplug("S1")
    with pytest.raises(DeviceIOError, match="disconnected"):
        devkit.read(0.01)
    devkit.close()  # releasing a dead device does not raise


def test_open_failure_is_an_io_error(samna: ModuleType) -> None:
    info = samna.device.DeviceInfo("Speck2fDevKit", "GONE", 1, 9)
    driver = SamnaDevkit(samna, info, _description())
    with pytest.raises(DeviceIOError, match="could not open"):
        driver.open()
    with pytest.raises(DeviceStateError, match="not open"):
        driver.apply(tiny_network())


def test_speck2e_uses_its_own_nodes_and_events(samna: ModuleType) -> None:
    driver = _open(samna, "speck2e")
    sequentials = [c[1] for c in samna.STATE.calls if c[0] == "graph.sequential"]
    assert sequentials[0][0] == "BasicSourceNode_speck2e_event_speck2e_input_event"
    assert sequentials[1][1] == "BasicSinkNode_speck2e_event_output_event"
    driver.apply(tiny_network("speck2e"))
    assert isinstance(_applied(samna), samna.speck2e.configuration.SpeckConfiguration)
    driver.write(spikes(t=[3], layer=0, core=2, feature=0, x=0, y=0))
    written = [c for c in samna.STATE.calls if c[0] == "source.write"][-1][1]
    assert type(written[0]) is samna.speck2e.event.Spike
    driver.close()


def test_dvs_spikes_map_to_the_dvs_layer(samna: ModuleType, devkit: SamnaDevkit) -> None:
    devkit.apply(tiny_network())
    event = samna.speck2f.event
    samna.STATE.live = lambda: [event.Spike(layer=13, x=4, y=5, feature=1, timestamp=77)]
    out = devkit.read(0.01)
    assert out.spikes["core"].tolist()[0] == 13
    assert out.spikes["layer"].tolist()[0] == DVS_LAYER
