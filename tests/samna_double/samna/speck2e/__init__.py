"""samna.speck2e: configuration, events and the validator."""

from __future__ import annotations

from .. import _chip
from . import configuration

event = _chip.event_module(f"{__name__}.event")
validate_configuration = _chip.validator("speck2e", configuration.SpeckConfiguration)

__all__ = ["configuration", "event", "validate_configuration"]
