"""A test double of samna: the documented API surface (docs/chip.md §8), recording every call.

Not samna: no code of it, only its public names. ``samna._double.STATE`` controls the devices
it lists and what the chip answers; ``STATE.calls`` holds every call, in order.
"""

from __future__ import annotations

from . import device, graph, speck2e, speck2f
from ._double import STATE

__version__ = "0.0.0+double"


class BasicSourceNode_speck2f_event_input_event(graph.BasicSourceNode):
    INPUT_TYPES = speck2f.event.INPUT_TYPES


class BasicSinkNode_speck2f_event_output_event(graph.BasicSinkNode):
    pass


class BasicSourceNode_speck2e_event_speck2e_input_event(graph.BasicSourceNode):
    INPUT_TYPES = speck2e.event.INPUT_TYPES


class BasicSinkNode_speck2e_event_output_event(graph.BasicSinkNode):
    pass


__all__ = ["STATE", "device", "graph", "speck2e", "speck2f"]
