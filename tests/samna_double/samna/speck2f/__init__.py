"""samna.speck2f: configuration, events and the validator."""

from __future__ import annotations

from typing import Any

from .. import _chip
from . import configuration, event


def validate_configuration(config: Any) -> tuple[bool, str]:
    if not isinstance(config, configuration.SpeckConfiguration):
        return False, f"not a speck2f configuration: {type(config).__name__}"
    return _chip.validate(config)


__all__ = ["configuration", "event", "validate_configuration"]
