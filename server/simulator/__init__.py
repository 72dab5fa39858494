"""The virtual devkit: a compiled, event-driven model of a Speck chip and a virtual DVS sensor.

Semantics, order of processing and timing: docs/simulator.md.
"""

from .engine import ChipSimulator, SimOutput
from .errors import SimulatorError
from .sensor import DvsSensor, Pattern, ReplaySensor, SyntheticSensor

__all__ = [
    "ChipSimulator",
    "DvsSensor",
    "Pattern",
    "ReplaySensor",
    "SimOutput",
    "SimulatorError",
    "SyntheticSensor",
]
