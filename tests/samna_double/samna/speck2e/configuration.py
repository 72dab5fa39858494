"""samna.speck2e.configuration."""

from __future__ import annotations

from .. import _chip


class SpeckConfiguration(_chip.SpeckConfiguration):
    FIELDS = _chip.SpeckConfiguration.FIELDS
