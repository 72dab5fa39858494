"""samna.speck2f.event: distinct classes per chip, as in samna."""

from __future__ import annotations

from .. import _chip

_classes = _chip.chip_events(__name__)
Spike = _classes["Spike"]
DvsEvent = _classes["DvsEvent"]
ReadoutValue = _classes["ReadoutValue"]
ReadoutPinValue = _classes["ReadoutPinValue"]
ReadNeuronValue = _classes["ReadNeuronValue"]
NeuronValue = _classes["NeuronValue"]
WriteNeuronValue = _classes["WriteNeuronValue"]

#: What the host may write into this chip.
INPUT_TYPES = (Spike, DvsEvent, ReadNeuronValue, WriteNeuronValue)
