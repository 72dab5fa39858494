"""The one error the simulator raises for a configuration or input it cannot run."""

from __future__ import annotations


class SimulatorError(ValueError):
    """A chip configuration the chip would reject, or input events the chip cannot take."""
