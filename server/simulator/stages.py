"""Where to cut a chip into two pipeline stages: upstream cores and downstream cores.

Only feed-forward chips are cut (decided once, when the simulator is made), after a prefix of
their cores in topological order. Where in that order never changes a spike (see
``pipeline``), only how evenly the two threads share the work, so the first estimate is rough
and the pipeline corrects it from the stages' measured times.
"""

from __future__ import annotations

import numpy as np

from specklab.schemas.chipconfig import NUM_CORES
from specklab.schemas.events import DVS_CORE

from .packing import ACTIVE, DEST, N_DEST, RF_NEURONS, PackedChip

#: The fixed cost of one input event into a core, in synaptic operations (about 50 ns against
#: 3-5 ns per vector block of 32 operations, docs/simulator.md "Where the time goes").
EVENT_COST_OPS = 400


def _destinations(packed: PackedChip, core: int) -> list[int]:
    row = packed.cores[core]
    return [int(row[DEST + 3 * d]) for d in range(int(row[N_DEST]))]


def topological_order(packed: PackedChip) -> list[int] | None:
    """The active cores, each after every core that sends to it; None when some core reaches
    itself (a recurrent network)."""
    cores = [c for c in range(NUM_CORES) if packed.cores[c, ACTIVE]]
    senders = dict.fromkeys(cores, 0)
    for c in cores:
        for target in _destinations(packed, c):
            senders[target] += 1
    order: list[int] = []
    ready = sorted(c for c in cores if senders[c] == 0)
    while ready:
        c = ready.pop(0)
        order.append(c)
        for target in _destinations(packed, c):
            senders[target] -= 1
            if senders[target] == 0:
                ready.append(target)
                ready.sort()
    return order if len(order) == len(cores) else None


def downstream_mask(order: list[int], cut: int) -> int:
    """The bit mask of the cores after the first ``cut`` of ``order``."""
    return sum(1 << c for c in order[cut:])


def estimated_cut(packed: PackedChip, order: list[int]) -> int:
    """How many of ``order``'s first cores make the upstream stage, by a rough estimate.

    Cuts after a prefix of the cores in topological order (so no downstream core sends to an
    upstream one), where the two stages' estimated work is most even: every core emits about
    one spike per input event, and an input event costs its receptive field's synaptic
    operations plus ``EVENT_COST_OPS``. ``pipeline`` then moves the cut by measurement.
    """
    arriving = dict.fromkeys(order, 0.0)
    for c in [DVS_CORE, *order]:
        if c == DVS_CORE and not packed.cores[DVS_CORE, ACTIVE]:
            continue
        if c != DVS_CORE and arriving[c] == 0.0:
            arriving[c] = 1.0  # an input core
        for target in _destinations(packed, c):
            arriving[target] += 1.0 if c == DVS_CORE else arriving[c]
    work = np.array([arriving[c] * (packed.cores[c, RF_NEURONS] + EVENT_COST_OPS) for c in order])
    upstream_work = np.cumsum(work)[:-1]
    imbalance = np.maximum(upstream_work, work.sum() - upstream_work)
    return int(np.argmin(imbalance)) + 1
