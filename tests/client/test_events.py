"""Event conversions between the forms users hold and the wire's structured arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from specklab.client import DvsEvent, Spike, as_events, raster_to_events, to_raster, to_spikes
from specklab.schemas.events import DVS_DTYPE, READOUT_DTYPE, SPIKE_DTYPE, dvs_events, spikes


@dataclass
class SamnaLikeSpike:
    """Duck-typed like samna's Spike: only the attributes matter."""

    layer: int
    x: int
    y: int
    feature: int
    timestamp: int


def test_spike_objects_become_a_sorted_spike_array() -> None:
    objects = [SamnaLikeSpike(0, 3, 4, 1, 20), SamnaLikeSpike(0, 1, 2, 0, 10)]
    events = as_events(objects)
    assert events.dtype == SPIKE_DTYPE
    assert events["t"].tolist() == [10, 20]
    assert events["x"].tolist() == [1, 3]
    assert events["feature"].tolist() == [0, 1]


def test_dvs_objects_become_a_dvs_array() -> None:
    events = as_events([DvsEvent(x=5, y=6, p=1, timestamp=7)])
    assert events.dtype == DVS_DTYPE
    assert events.tolist() == [(7, 5, 6, 1)]


def test_wire_arrays_pass_through_untouched() -> None:
    array = spikes(t=[1, 2], layer=0, feature=[3, 4], x=5, y=6)
    assert as_events(array) is array


def test_foreign_structured_arrays_are_cast_by_field_name() -> None:
    tonic_like = np.array(
        [(100, 3, 4, True), (50, 1, 2, False)],
        dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "?")],
    )
    events = as_events(tonic_like)
    assert events.dtype == DVS_DTYPE
    assert events.tolist() == [(50, 1, 2, 0), (100, 3, 4, 1)]


def test_values_that_would_wrap_are_refused() -> None:
    with pytest.raises(ValueError, match="'x' holds 300"):
        as_events([SamnaLikeSpike(0, 300, 0, 0, 0)])
    with pytest.raises(ValueError, match="'t' holds -1"):
        as_events([SamnaLikeSpike(0, 0, 0, 0, -1)])
    with pytest.raises(ValueError, match="whole numbers"):
        as_events([SamnaLikeSpike(0, 0.5, 0, 0, 0)])


def test_objects_without_the_attributes_are_refused() -> None:
    @dataclass
    class Partial:
        layer: int
        feature: int

    with pytest.raises(TypeError, match="attributes timestamp, layer, feature, x, y"):
        as_events([Partial(0, 0)])


def test_raster_counts_become_that_many_events_at_step_times() -> None:
    raster = np.zeros((3, 2, 4, 5), dtype=np.int64)
    raster[0, 1, 2, 3] = 2
    raster[2, 0, 0, 4] = 1
    events = raster_to_events(raster, dt=1000, layer=2)
    assert events.dtype == SPIKE_DTYPE
    assert events[["t", "layer", "feature", "x", "y"]].tolist() == [
        (0, 2, 1, 3, 2),
        (0, 2, 1, 3, 2),
        (2000, 2, 0, 4, 0),
    ]


def test_raster_needs_dt_and_counts() -> None:
    with pytest.raises(ValueError, match="needs dt"):
        as_events(np.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="no negative"):
        raster_to_events(-np.ones((1, 1, 2, 2)), dt=1)
    with pytest.raises(ValueError, match="whole numbers"):
        raster_to_events(np.full((1, 1, 2, 2), 0.5), dt=1)
    with pytest.raises(ValueError, match=r"\[T, C, H, W\]"):
        raster_to_events(np.zeros((2, 2)), dt=1)


def test_dvs_raster_channels_are_polarities() -> None:
    raster = np.zeros((1, 2, 3, 3), dtype=np.uint8)
    raster[0, 1, 1, 2] = 1
    events = as_events(raster, dt=10, kind="dvs")
    assert events.tolist() == [(0, 2, 1, 1)]


def test_torch_rasters_convert_like_numpy_ones() -> None:
    torch = pytest.importorskip("torch")
    raster = torch.zeros(2, 1, 2, 2)
    raster[1, 0, 1, 0] = 3
    events = as_events(raster, dt=5)
    assert events["t"].tolist() == [5, 5, 5]


def test_raster_round_trip() -> None:
    rng = np.random.default_rng(1)
    raster = rng.integers(0, 3, size=(6, 3, 5, 4))
    events = raster_to_events(raster, dt=100)
    assert np.array_equal(to_raster(events, dt=100, shape=(3, 5, 4), t_start=0, steps=6), raster)


def test_to_raster_refuses_events_outside_the_given_shape() -> None:
    events = spikes(t=0, layer=0, feature=0, x=9, y=0)
    with pytest.raises(ValueError, match="x=9"):
        to_raster(events, dt=1, shape=(1, 1, 4))
    with pytest.raises(TypeError, match="readout"):
        to_raster(np.zeros(1, READOUT_DTYPE), dt=1)


def test_to_spikes_gives_guide_style_objects() -> None:
    events = spikes(t=[7], layer=4, feature=[9], x=1, y=2)
    assert to_spikes(events) == [Spike(layer=4, x=1, y=2, feature=9, timestamp=7)]
    with pytest.raises(TypeError):
        to_spikes(dvs_events(t=0, x=0, y=0, p=0))


def test_readout_events_cannot_be_inputs() -> None:
    with pytest.raises(ValueError, match="outputs"):
        as_events(np.zeros(1, READOUT_DTYPE), kind="readout")


def test_to_raster_as_the_docs_show_it() -> None:
    # numpy 2 once refused the default shape's computation on the unsigned columns
    events = spikes(t=[0, 1500, 2100], layer=0, feature=[1, 0, 2], x=[3, 0, 1], y=[4, 2, 0])
    raster = to_raster(events, dt=1000)
    assert raster.shape == (3, 3, 5, 4)
    assert raster.sum() == 3 and raster[1, 0, 2, 0] == 1
    empty = to_raster(spikes(t=[], layer=[], feature=[], x=[], y=[]), dt=1000)
    assert empty.shape == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [("x", 300, "300"), ("t", -5, "-5"), ("feature", 70000, "70000"), ("y", 1.5, "whole")],
)
def test_the_schemas_builders_refuse_values_that_would_wrap(
    field: str, value: float, shown: str
) -> None:
    columns: dict[str, float] = {"t": 0, "layer": 0, "feature": 0, "x": 0, "y": 0}
    columns[field] = value
    with pytest.raises(ValueError, match=shown):
        spikes(**columns)
    with pytest.raises(ValueError, match="'x' holds 70000"):
        dvs_events(t=[0], x=[70000], y=[0], p=[1])
