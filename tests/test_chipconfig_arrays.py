"""ChipConfig's weights and initial states: numpy arrays inside, nested lists of ints outside."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pydantic_core
import pytest
from pydantic import ValidationError

from specklab.schemas.arrays import lift_arrays
from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.patch import ConfigPatch, apply_patch
from tests.chip_configs import guide_network

ARRAY_KEYS = ("weights", "neurons_initial_value")


@cache
def _reference_json(seed: int) -> bytes:
    """The guide network with initial states over the whole int32 range, as pydantic writes
    its nested lists (a reference independent of the array fields' own JSON writing)."""
    config = guide_network(seed, dvs_input=True)
    rng = np.random.default_rng(seed)
    layer = config.cnn_layers[3]
    layer.neurons_initial_value = rng.integers(-(2**31), 2**31, size=layer.neuron_shape)
    return pydantic_core.to_json(config.model_dump())


def _with_states(seed: int = 0) -> ChipConfig:
    return ChipConfig.model_validate_json(_reference_json(seed))


def _one_core_document(weights: str) -> bytes:
    """A one-core document whose weights are the JSON text ``weights`` (declared 2x1x1x1)."""
    one = {"size": {"x": 1, "y": 1}, "feature_count": 1}
    layer = {
        "dimensions": {
            "input_shape": one,
            "output_shape": {**one, "feature_count": 2},
            "padding": {"x": 0, "y": 0},
            "stride": {"x": 1, "y": 1},
            "kernel_size": 1,
        },
        "weights": "WEIGHTS",
        "biases": [0, 0],
        "threshold_high": 10,
        "threshold_low": -10,
    }
    document = {"cnn_layers": {"0": layer}, "layers": [{"layer": 0, "core": 0}]}
    return json.dumps(document, separators=(",", ":")).replace('"WEIGHTS"', weights).encode()


def test_json_output_is_the_nested_lists_byte_for_byte() -> None:
    # validated the ordinary way (no lifting), so the arrays are written as they were read
    config = ChipConfig.model_validate(json.loads(_reference_json(0)))
    text = config.model_dump_json()
    # pydantic's own serializer of the plain nested lists: the form before arrays came in
    assert text.encode() == _reference_json(0)
    for core, layer in config.cnn_layers.items():
        assert json.loads(text)["cnn_layers"][str(core)]["weights"] == layer.weights.tolist()
    assert config.model_dump()["cnn_layers"][3]["neurons_initial_value"] == (
        config.cnn_layers[3].neurons_initial_value.tolist()
    )
    assert ChipConfig.model_validate_json(text).model_dump_json() == text
    assert config.model_dump_json(indent=2) == json.dumps(json.loads(text), indent=2)


def test_json_arrays_are_parsed_straight_into_numpy() -> None:
    config = _with_states()
    text = config.model_dump_json().encode()
    lifted, context = lift_arrays(text, ARRAY_KEYS)
    prefix, arrays = context["specklab.lifted_arrays"]
    assert len(arrays) == len(config.cnn_layers) + 1  # every weight array and the states
    assert b'"weights":[' not in lifted and lifted.count(prefix.encode()) == len(arrays)
    fast = ChipConfig.model_validate_json(text)
    slow = ChipConfig.model_validate(json.loads(text))  # no lifting: the ordinary path
    assert fast == slow
    for core, layer in fast.cnn_layers.items():
        assert layer.weights.dtype == np.int16 and not layer.weights.flags.writeable
        assert np.array_equal(layer.weights, config.cnn_layers[core].weights)
    states = fast.cnn_layers[3].neurons_initial_value
    assert states.dtype == np.int32 and np.array_equal(states, config.cnn_layers[3].initial_state())


@pytest.mark.parametrize(
    "weights",
    [
        "[[[[3]]],[[[-4]]]]",
        "[[[[0]]],[[[-0]]]]",
        "[ [[[3]]], [[[-4]]] ]",  # not compact: the ordinary path
        "[[[[3.0]]],[[[-4]]]]",  # integral floats and booleans, as pydantic's int takes them
        "[[[[true]]],[[[false]]]]",
        "[[[[32767]]],[[[-32768]]]]",
    ],
)
def test_weights_in_any_json_form_of_integers_are_accepted(weights: str) -> None:
    layer = ChipConfig.model_validate_json(_one_core_document(weights)).cnn_layers[0]
    assert np.array_equal(layer.weights, np.array(json.loads(weights), dtype=np.int16))


@pytest.mark.parametrize(
    "weights",
    [
        "[[[[01]]],[[[2]]]]",
        "[[[[-]]],[[[2]]]]",
        "[[[[--1]]],[[[2]]]]",
        "[[[[1-1]]],[[[2]]]]",
        "[[[[1,]]],[[[2]]]]",
        "[[[[,1]]],[[[2]]]]",
        "[[[[1]],]],[[[2]]]]",
        "[[[[1]]],[[[2]]]",
        "[[[[1]]],[[[2]]]]]",
        "[[[[1 2]]],[[[2]]]]",
        "[[[[1]]],[[[2],[3]]]]",  # ragged
        "[[[[1]]],[[2]]]",  # a number where a list belongs
        "[[[1]],[[2]]]",  # three dimensions
        "[[[[1,2]]],[[[3,4]]]]",  # regular, but not the declared shape
        "[[[[99999999999999999999999]]],[[[2]]]]",
        "[[[[-99999999999999999999999]]],[[[2]]]]",
        "[[[[40000]]],[[[2]]]]",  # outside int16
        "[[[[1.5]]],[[[2]]]]",
        '[[[["1"]]],[[[2]]]]',
        "[[[[null]]],[[[2]]]]",
        "[]",
        "7",
    ],
)
def test_malformed_weights_are_a_validation_error(weights: str) -> None:
    with pytest.raises(ValidationError):
        ChipConfig.model_validate_json(_one_core_document(weights))


def test_a_placeholder_cannot_be_forged() -> None:
    text = _with_states().model_dump_json().encode()
    _, context = lift_arrays(text, ARRAY_KEYS)
    prefix = context["specklab.lifted_arrays"][0]
    forged = _one_core_document(json.dumps(prefix + "0"))
    with pytest.raises(ValidationError):
        ChipConfig.model_validate_json(forged)


def test_states_outside_int32_are_refused() -> None:
    config = _with_states().model_dump(mode="json")
    config["cnn_layers"]["3"]["neurons_initial_value"][0][0][0] = 2**31
    with pytest.raises(ValidationError, match="must lie in"):
        ChipConfig.model_validate_json(json.dumps(config))


def test_arrays_are_read_only_and_shared_by_patched_configurations() -> None:
    config = _with_states()
    patched = apply_patch(config, ConfigPatch(monitor_layers=[0]))
    assert patched.cnn_layers[0].weights is config.cnn_layers[0].weights
    with pytest.raises(ValueError, match="read-only"):
        patched.cnn_layers[0].weights[0, 0, 0, 0] = 1


def test_a_list_assigned_after_validation_is_read_as_an_array() -> None:
    layer = _with_states().cnn_layers[0]
    layer.weights = np.ones(layer.weights.shape, dtype=np.int64).tolist()
    assert layer.weight_array().dtype == np.int16 and layer.weight_array().sum() == 20 * 25


def test_layers_compare_by_value() -> None:
    assert _with_states(0) == _with_states(0)
    assert _with_states(0) != _with_states(1)
