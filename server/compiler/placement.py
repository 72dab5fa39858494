"""Placing model layers on cores by memory (docs/chip.md §7), and explaining when it fails.

``auto`` is a maximum bipartite matching of layers to the cores they fit, found as the vendor
finds it: Edmonds-Karp on source -> layers -> cores -> sink with unit capacities, breadth
first, layers and cores visited in ascending order, so the result is deterministic (the
guide's network gives ``{0: 0, 1: 3, 2: 5, 3: 6, 4: 1}``). An explicit ordering is checked
against the same memories (the vendor accepts it blindly).

When no placement exists the report says, per layer, which memory is too small on which core,
gives a smallest set of layers that cannot all be placed (a Hall violator: ``k`` layers that
together fit fewer than ``k`` cores) and concrete fixes such as the largest channel count that
would make a layer fit other cores.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from itertools import combinations
from typing import Literal

from specklab.schemas.compile import CoreCapacity, LayerFit, PlacementReport, Problem
from specklab.server.chips import Chip, CoreMemory, bias_memory, kernel_memory, neuron_memory

from .convert import ChipLayer

Memory = Literal["kernel", "neuron", "bias"]
#: Above this many layers the smallest conflicting set is not searched exhaustively.
EXHAUSTIVE_LIMIT = 16


@dataclass(frozen=True, slots=True)
class Need:
    """What one model layer needs, and the shape the needs come from (for suggestions)."""

    c_in: int
    c_out: int
    kernel_size: int
    height: int
    width: int
    has_bias: bool

    @property
    def kernel(self) -> int:
        return kernel_memory(self.c_in, self.c_out, self.kernel_size)

    @property
    def neuron(self) -> int:
        return neuron_memory(self.c_out, self.height, self.width)

    @property
    def bias(self) -> int:
        return bias_memory(self.c_out, self.has_bias)

    def exceeds(self, core: CoreMemory) -> list[Memory]:
        over: list[Memory] = []
        if self.kernel > core.kernel:
            over.append("kernel")
        if self.neuron > core.neuron:
            over.append("neuron")
        if self.bias > core.bias:
            over.append("bias")
        return over


def need_of(layer: ChipLayer) -> Need:
    c_in = layer.input_shape[0]
    c_out, height, width = layer.output_shape
    return Need(c_in, c_out, max(layer.kernel_size), height, width, layer.bias is not None)


def max_matching(fits: list[list[int]], num_cores: int) -> dict[int, int]:
    """Edmonds-Karp on the layer/core graph; ``fits[layer]`` = cores it fits, ascending."""
    core_of: dict[int, int] = {}
    layer_of: dict[int, int] = {}
    while True:
        parent: dict[tuple[str, int], tuple[str, int] | None] = {}
        queue: deque[tuple[str, int]] = deque()
        for layer in range(len(fits)):
            if layer not in core_of:  # residual capacity source -> layer
                parent[("layer", layer)] = None
                queue.append(("layer", layer))
        end: tuple[str, int] | None = None
        while queue and end is None:
            kind, index = queue.popleft()
            if kind == "layer":
                for core in fits[index]:
                    if core_of.get(index) != core and ("core", core) not in parent:
                        parent[("core", core)] = (kind, index)
                        queue.append(("core", core))
            elif index not in layer_of:  # residual capacity core -> sink: a path
                end = (kind, index)
            elif ("layer", layer_of[index]) not in parent:  # undo that layer's match
                parent[("layer", layer_of[index])] = (kind, index)
                queue.append(("layer", layer_of[index]))
        if end is None:
            return dict(sorted(core_of.items()))
        node: tuple[str, int] | None = end
        while node is not None:
            previous = parent[node]
            if node[0] == "core" and previous is not None:
                core_of[previous[1]] = node[1]
                layer_of[node[1]] = previous[1]
            node = previous


def hall_violator(fits: list[list[int]], matched: dict[int, int]) -> tuple[list[int], list[int]]:
    """A smallest set of layers that fit fewer cores than their number, and those cores."""
    n = len(fits)
    if n <= EXHAUSTIVE_LIMIT:
        for size in range(1, n + 1):
            for group in combinations(range(n), size):
                cores = set().union(*(fits[i] for i in group))
                if len(cores) < size:
                    return list(group), sorted(cores)
    # Konig: layers reachable from an unmatched layer by alternating paths, and their cores
    start = next(i for i in range(n) if i not in matched)
    layer_of = {core: layer for layer, core in matched.items()}
    layers, cores, frontier = {start}, set(), [start]
    while frontier:
        layer = frontier.pop()
        for core in fits[layer]:
            if core not in cores:
                cores.add(core)
                if core in layer_of and layer_of[core] not in layers:
                    layers.add(layer_of[core])
                    frontier.append(layer_of[core])
    return sorted(layers), sorted(cores)


def _core_classes(chip: Chip) -> list[tuple[CoreMemory, list[int]]]:
    classes: dict[CoreMemory, list[int]] = {}
    for core, memory in enumerate(chip.cores):
        classes.setdefault(memory, []).append(core)
    return list(classes.items())


def _largest(need: Need, memory: CoreMemory, field: Literal["c_in", "c_out"]) -> int:
    """The largest channel count (below the current one) that fits ``memory``; 0 if none."""
    current = need.c_in if field == "c_in" else need.c_out
    for count in range(current - 1, 0, -1):
        if not replace(need, **{field: count}).exceeds(memory):
            return count
    return 0


def _cores(cores: list[int]) -> str:
    return ("core " if len(cores) == 1 else "cores ") + ", ".join(map(str, cores))


def suggestions(
    needs: list[Need], fits: list[list[int]], conflict: list[int], chip: Chip
) -> list[str]:
    """Concrete fixes: per conflicting layer, the smallest shrink that opens other cores."""
    found: list[str] = []
    if len(needs) > chip.num_cores:
        found.append(
            f"the network has {len(needs)} layers and {chip.name} has {chip.num_cores} cores: "
            f"remove or merge {len(needs) - chip.num_cores} layers"
        )
    for layer in conflict:
        need = needs[layer]
        others = [
            (m, cores) for m, cores in _core_classes(chip) if not set(cores) <= set(fits[layer])
        ]
        for field, what in (("c_out", "output channels"), ("c_in", "input channels")):
            current = need.c_out if field == "c_out" else need.c_in
            options = [(_largest(need, m, field), m, cores) for m, cores in others]
            count, memory, cores = max(options, key=lambda o: o[0], default=(0, None, []))
            if memory is None or count == 0:
                continue
            origin = ", the previous layer's outputs" if field == "c_in" else ""
            found.append(
                f"layer {layer}: with at most {count} {what} (now {current}{origin}) it would "
                f"fit {_cores(cores)} (kernel {memory.kernel}, neuron {memory.neuron})"
            )
        largest_map = max((m.neuron for m, _ in others), default=0)
        per_channel = neuron_memory(1, need.height, need.width)
        if others and per_channel > largest_map:
            found.append(
                f"layer {layer}: its {need.height}x{need.width} output map alone needs "
                f"{per_channel} neuron entries per channel, more than any other core has "
                f"({largest_map}): shrink the map (stride, pooling)"
            )
    return found


def place(
    layers: list[ChipLayer],
    chip: Chip,
    ordering: Literal["auto"] | list[int] | dict[int, int],
) -> tuple[PlacementReport, list[Problem]]:
    needs = [need_of(layer) for layer in layers]
    exceeds = [[need.exceeds(core) for core in chip.cores] for need in needs]
    fits = [[core for core, over in enumerate(row) if not over] for row in exceeds]
    report = PlacementReport(
        strategy="auto" if ordering == "auto" else "explicit",
        ok=False,
        mapping={},
        cores=[
            CoreCapacity(core=i, kernel=c.kernel, neuron=c.neuron, bias=c.bias)
            for i, c in enumerate(chip.cores)
        ],
        layers=[
            LayerFit(
                layer=i,
                kernel_memory=need.kernel,
                neuron_memory=need.neuron,
                bias_memory=need.bias,
                fits=fits[i],
                exceeds=exceeds[i],
            )
            for i, need in enumerate(needs)
        ],
    )
    matched = max_matching(fits, chip.num_cores)
    if ordering == "auto":
        if len(matched) == len(layers):
            return report.model_copy(update={"ok": True, "mapping": matched}), []
        conflict, conflict_cores = hall_violator(fits, matched)
        report = report.model_copy(
            update={
                "conflict": conflict,
                "conflict_cores": conflict_cores,
                "suggestions": suggestions(needs, fits, conflict, chip),
            }
        )
        return report, [_conflict_problem(conflict, conflict_cores, needs)]
    mapping = ordering if isinstance(ordering, dict) else dict(enumerate(ordering))
    problems = _check_explicit(mapping, needs, exceeds, chip)
    if not problems:
        return report.model_copy(update={"ok": True, "mapping": dict(sorted(mapping.items()))}), []
    hint = (
        [f"auto placement would be {matched}"]
        if len(matched) == len(layers)
        else suggestions(needs, fits, hall_violator(fits, matched)[0], chip)
    )
    return report.model_copy(update={"suggestions": hint}), problems


def _conflict_problem(conflict: list[int], cores: list[int], needs: list[Need]) -> Problem:
    layers = ", ".join(
        f"{i} (kernel {needs[i].kernel}, neuron {needs[i].neuron})" for i in conflict
    )
    where = f"only fit {_cores(cores)}" if cores else "fit no core"
    return Problem(
        severity="error",
        code="no_placement",
        message=f"no placement: model layers {layers} {where}",
        rule="each layer needs its own core with enough kernel, neuron and bias memory",
        layer=conflict[0] if len(conflict) == 1 else None,
    )


def _check_explicit(
    mapping: dict[int, int], needs: list[Need], exceeds: list[list[list[Memory]]], chip: Chip
) -> list[Problem]:
    rule = "chip_layers_ordering gives each model layer its own core with enough memory"
    problems: list[Problem] = []

    def problem(message: str, layer: int | None = None) -> None:
        problems.append(
            Problem(severity="error", code="bad_placement", message=message, rule=rule, layer=layer)
        )

    if sorted(mapping) != list(range(len(needs))):
        problem(
            f"chip_layers_ordering places model layers {sorted(mapping)}; the network has "
            f"layers 0..{len(needs) - 1}"
        )
        return problems
    for layer, core in sorted(mapping.items()):
        others = [other for other, c in mapping.items() if c == core and other != layer]
        if others and layer < others[0]:
            problem(f"model layers {[layer, *others]} are all placed on core {core}")
        if not 0 <= core < chip.num_cores:
            problem(f"model layer {layer}: core {core} does not exist", layer)
            continue
        memory = chip.cores[core]
        for what in exceeds[layer][core]:
            need = getattr(needs[layer], what)
            have = getattr(memory, what)
            problem(
                f"model layer {layer} needs {need} {what} memory entries; core {core} has {have}",
                layer,
            )
    return problems
