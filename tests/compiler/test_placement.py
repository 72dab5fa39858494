"""Placement (docs/chip.md §7): the vendor's deterministic matching, checked explicit
orderings, and reports that explain a failure."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np
import pytest

from specklab.server.chips import CHIPS, kernel_memory
from specklab.server.compiler import HardwareLimit, PlacementFailed, compile_graph
from specklab.server.compiler.archive import ArchiveLimits
from specklab.server.compiler.graph import Flatten, Op, ReLU
from specklab.server.compiler.pipeline import import_model
from specklab.server.compiler.placement import hall_violator, max_matching

from .graphs import conv, linear, options, sequential

CHIP = CHIPS["speck2f"]
GUIDE_PLACEMENT = {0: 0, 1: 3, 2: 5, 3: 6, 4: 1}  # docs/chip.md §7


def test_the_guide_network_is_placed_as_the_vendor_places_it(
    guide_files: Mapping[str, bytes],
) -> None:
    result = compile_graph(import_model(guide_files["trace"], ArchiveLimits()), options())
    assert result.report.placement is not None
    assert result.report.placement.mapping == GUIDE_PLACEMENT
    assert result.config.core_of_layer == GUIDE_PLACEMENT
    assert [layer.core for layer in result.report.layers] == list(GUIDE_PLACEMENT.values())


def _largest_matching(fits: list[list[int]], cores: int) -> int:
    """Brute force: the size of a maximum matching."""
    for size in range(len(fits), 0, -1):
        for layers in itertools.combinations(range(len(fits)), size):
            choices = [fits[i] for i in layers]
            if any(len(set(p)) == size for p in itertools.product(*choices)):
                return size
    return 0


@pytest.mark.parametrize("seed", range(40))
def test_matching_is_maximum_and_valid(seed: int) -> None:
    rng = np.random.default_rng(seed)
    layers = int(rng.integers(1, 8))
    fits = [
        sorted(rng.choice(9, int(rng.integers(0, 4)), replace=False).tolist())
        for _ in range(layers)
    ]
    matched = max_matching(fits, 9)
    assert len(matched) == _largest_matching(fits, 9)
    assert len(set(matched.values())) == len(matched)
    assert all(core in fits[layer] for layer, core in matched.items())
    assert max_matching(fits, 9) == matched  # deterministic
    if len(matched) < layers:
        group, cores = hall_violator(fits, matched)
        assert len(cores) < len(group)
        assert set(cores) == set().union(*(fits[i] for i in group))


def test_the_smallest_conflicting_set_is_reported() -> None:
    fits = [[0, 1, 2, 3], [5, 6], [5, 6], [5, 6], [0, 1]]
    group, cores = hall_violator(fits, max_matching(fits, 9))
    assert (group, cores) == ([1, 2, 3], [5, 6])


def _three_big_layers() -> list[Op]:
    """Three layers that each need 64 Ki kernel memory: only cores 5 and 6 have it."""
    ops: list[Op] = [conv(1, 128, 3), ReLU()]
    for index, (c_in, c_out) in enumerate([(128, 32), (32, 128), (128, 32)]):
        ops += [conv(c_in, c_out, 3, padding=1, seed=index), ReLU()]
    return ops


def test_a_failed_placement_explains_itself() -> None:
    with pytest.raises(PlacementFailed) as caught:
        compile_graph(sequential(*_three_big_layers()), options((1, 10, 10)))
    placement = caught.value.report.placement
    assert not placement.ok and placement.mapping == {}
    assert (placement.conflict, placement.conflict_cores) == ([1, 2, 3], [5, 6])
    need = kernel_memory(32, 128, 3)
    assert need == kernel_memory(128, 32, 3) == CHIP.cores[5].kernel
    assert [fit.kernel_memory for fit in placement.layers[1:]] == [need] * 3
    assert placement.layers[1].exceeds[0] == ["kernel"] and placement.layers[1].exceeds[5] == []
    assert placement.cores[5].kernel == CHIP.cores[5].kernel
    # the largest channel count that fits the 32 Ki cores: 32 * 2**(4 + 6) = 32768
    assert any("at most 64 output channels (now 128)" in s for s in placement.suggestions)
    assert "only fit cores 5, 6" in caught.value.message


def test_an_explicit_ordering_is_used_when_it_fits(guide_files: Mapping[str, bytes]) -> None:
    graph = import_model(guide_files["script"], ArchiveLimits())
    ordering = [1, 4, 6, 5, 0]
    by_list = compile_graph(graph, options(chip_layers_ordering=ordering))
    by_dict = compile_graph(graph, options(chip_layers_ordering=dict(enumerate(ordering))))
    assert by_list.config.core_of_layer == dict(enumerate(ordering))
    assert by_list.config == by_dict.config
    assert by_list.report.placement.strategy == "explicit"


@pytest.mark.parametrize(
    ("ordering", "message"),
    [
        ([0, 1, 2, 3, 4], "model layer 1 needs 20480 kernel memory entries; core 1 has 16384"),
        ([0, 3, 5, 5, 1], "model layers [2, 3] are all placed on core 5"),
        ([0, 3, 5, 6], "the network has layers 0..4"),
    ],
)
def test_an_explicit_ordering_is_checked(
    guide_files: Mapping[str, bytes], ordering: list[int], message: str
) -> None:
    graph = import_model(guide_files["script"], ArchiveLimits())
    with pytest.raises(PlacementFailed) as caught:
        compile_graph(graph, options(chip_layers_ordering=ordering))
    report = caught.value.report
    assert any(message in p.message for p in report.errors)
    assert report.placement.suggestions == [f"auto placement would be {GUIDE_PLACEMENT}"]


def test_a_layer_that_fits_no_core_gets_a_concrete_fix() -> None:
    graph = sequential(conv(1, 8, 3), ReLU(), Flatten(), linear(8 * 62 * 62, 10), ReLU())
    with pytest.raises(HardwareLimit) as caught:  # a 62x62 kernel breaks the size limit too
        compile_graph(graph, options((1, 64, 64)))
    placement = caught.value.report.placement
    assert 1 in placement.conflict and placement.layers[1].fits == []
    assert any(s.startswith("layer 1:") for s in placement.suggestions)
