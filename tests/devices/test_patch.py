"""Configuration patches: validated on their own, applied to a ChipConfig as a new one."""

from __future__ import annotations

from types import ModuleType

import pytest
from pydantic import ValidationError

from specklab.schemas.chipconfig import XY, ChipConfig, Destination, DVSLayer, Readout
from specklab.schemas.patch import ConfigPatch, PatchError, apply_patch
from specklab.server.devices.base import DeviceDescription
from specklab.server.devices.samna_driver import SamnaDevkit

from .networks import GUIDE_PLACEMENT, guide_network, tiny_network


def _with_dvs_and_readout() -> ChipConfig:
    config = tiny_network()
    config.dvs_layer = DVSLayer(
        pooling=XY(x=2, y=2), cut=XY(x=63, y=63), destinations=[Destination(layer=2)]
    )
    config.readout = Readout(enable=True, input_core=2, num_classes=3)
    return ChipConfig.model_validate(config.model_dump())


def _loc(error: ValidationError) -> list[str]:
    return [".".join(str(part) for part in e["loc"]) for e in error.errors()]


@pytest.mark.parametrize(
    ("document", "loc"),
    [
        ({"cores": {"2": {"leek_enable": True}}}, "cores.2.leek_enable"),
        ({"cores": {"9": {"leak_enable": True}}}, "cores.9.[key]"),
        (
            {"layers": {"0": {"output_decimator_interval": 1024}}},
            "layers.0.output_decimator_interval",
        ),
        ({"dvs": {"pooling": {"x": 3, "y": 1}}}, "dvs.pooling.x"),
        ({"dvs": {"cut": {"x": 200, "y": 1}}}, "dvs.cut.x"),
        ({"readout": {"threshold": -1}}, "readout.threshold"),
        ({"readout": {"average_window": 8}}, "readout.average_window"),
        ({"slow_clock_hz": 0}, "slow_clock_hz"),
        ({"weights": []}, "weights"),
        ({"monitor_layers": ["sensor"]}, "monitor_layers.0.int"),
    ],
)
def test_unknown_or_out_of_range_fields_are_named(document: dict, loc: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ConfigPatch.model_validate(document)
    assert loc in _loc(caught.value), _loc(caught.value)


def test_layer_patches_reach_their_cores_and_the_original_is_kept() -> None:
    config = guide_network()
    patch = ConfigPatch.model_validate_json(
        '{"monitor_layers": [0, -1], "layers": {"-1": {"leak_enable": true}, '
        '"1": {"output_decimator_enable": true, "output_decimator_interval": 16}}, '
        '"cores": {"5": {"monitor_enable": true}}, "slow_clock_hz": 500}'
    )
    patched = apply_patch(config, patch)
    cores = patched.cnn_layers
    assert [core for core, layer in sorted(cores.items()) if layer.monitor_enable] == [0, 1, 5]
    assert cores[GUIDE_PLACEMENT[4]].leak_enable is True
    assert cores[GUIDE_PLACEMENT[1]].output_decimator_enable is True
    assert cores[GUIDE_PLACEMENT[1]].output_decimator_interval == 16
    assert patched.slow_clock_hz == 500
    # Untouched: the original document, and everything the patch does not name.
    assert config.slow_clock_hz is None
    assert [core for core, layer in config.cnn_layers.items() if layer.monitor_enable] == [1]
    assert cores[0].weights is config.cnn_layers[0].weights  # shared, not copied
    assert (
        apply_patch(patched, ConfigPatch.model_validate({"slow_clock_hz": None})).slow_clock_hz
        is None
    )
    assert apply_patch(patched, ConfigPatch()).slow_clock_hz == 500


def test_dvs_and_readout_patches() -> None:
    config = _with_dvs_and_readout()
    patch = ConfigPatch.model_validate(
        {
            "monitor_layers": ["dvs"],
            "dvs": {
                "merge": True,
                "pooling": {"x": 4, "y": 4},
                "origin": {"x": 1, "y": 2},
                "cut": {"x": 30, "y": 31},
                "mirror": {"y": True},
                "mirror_diagonal": True,
                "pass_sensor_events": False,
                "raw_monitor_enable": True,
                "destinations": {"0": {"enable": False}},
            },
            "readout": {"average_window": 16, "threshold": 3},
        }
    )
    patched = apply_patch(config, patch)
    dvs = patched.dvs_layer
    assert dvs is not None
    assert (dvs.merge, dvs.pooling, dvs.origin, dvs.cut) == (
        True,
        XY(x=4, y=4),
        XY(x=1, y=2),
        XY(x=30, y=31),
    )
    assert (dvs.mirror.x, dvs.mirror.y, dvs.mirror_diagonal) == (False, True, True)
    assert (dvs.pass_sensor_events, dvs.raw_monitor_enable, dvs.monitor_enable) == (
        False,
        True,
        True,
    )
    assert [(d.layer, d.enable) for d in dvs.destinations] == [(2, False)]
    assert config.dvs_layer is not None and config.dvs_layer.destinations[0].enable
    assert not patched.cnn_layers[2].monitor_enable
    assert patched.readout is not None
    assert (patched.readout.average_window, patched.readout.threshold) == (16, 3)
    assert patched.readout.num_classes == 3


@pytest.mark.parametrize(
    ("document", "loc"),
    [
        ({"cores": {"4": {"leak_enable": True}}}, "cores.4"),
        ({"layers": {"3": {"leak_enable": True}}}, "layers.3"),
        ({"monitor_layers": [0, 5]}, "monitor_layers.1"),
        ({"dvs": {"cut": {"x": 64, "y": 10}}}, "dvs.cut.x"),
        ({"dvs": {"pooling": {"x": 4, "y": 4}}}, "dvs.cut.x"),  # the old cut no longer fits
        ({"dvs": {"origin": {"x": 0, "y": 70}, "cut": {"x": 5, "y": 60}}}, "dvs.origin.y"),
        ({"dvs": {"destinations": {"1": {"enable": True}}}}, "dvs.destinations.1"),
    ],
)
def test_patches_that_do_not_fit_the_network_are_named(document: dict, loc: str) -> None:
    with pytest.raises(PatchError) as caught:
        apply_patch(_with_dvs_and_readout(), ConfigPatch.model_validate(document))
    assert caught.value.loc == loc
    assert str(caught.value).startswith(f"{loc}: ")


def test_dvs_and_readout_patches_need_those_layers() -> None:
    with pytest.raises(PatchError, match=r"^dvs: this network has no DVS layer"):
        apply_patch(tiny_network(), ConfigPatch.model_validate({"dvs": {"merge": True}}))
    with pytest.raises(PatchError, match=r"^readout: "):
        apply_patch(tiny_network(), ConfigPatch.model_validate({"readout": {"threshold": 2}}))
    with pytest.raises(PatchError, match=r"^monitor_layers\.0: "):
        apply_patch(tiny_network(), ConfigPatch.model_validate({"monitor_layers": ["dvs"]}))


def test_a_patched_configuration_reaches_the_samna_driver(samna: ModuleType) -> None:
    info = samna.device.DeviceInfo("Speck2fDevKit", "S", 1, 2)
    samna.STATE.devices = [info]
    description = DeviceDescription("speck2fdevkit:0", "speck2fdevkit", "speck2f", False)
    driver = SamnaDevkit(samna, info, description)
    driver.open()
    patch = ConfigPatch.model_validate(
        {
            "cores": {"2": {"output_decimator_enable": True, "output_decimator_interval": 4}},
            "slow_clock_hz": 250,
        }
    )
    driver.apply(apply_patch(tiny_network(), patch))
    written = [c[1] for c in samna.STATE.calls if c[0] == "apply_configuration"][-1]
    assert written.cnn_layers[2].output_decimator_enable is True
    assert written.cnn_layers[2].output_decimator_interval == 1
    assert ("io.set_slow_clk_rate", 250) in samna.STATE.calls
    driver.close()
