"""Fixtures for device tests: the samna test double on sys.path, and hand-built configurations."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

DOUBLE_PATH = Path(__file__).resolve().parent.parent / "samna_double"


@pytest.fixture
def samna(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The samna test double, importable as ``samna`` for this test only, with no devices."""
    monkeypatch.syspath_prepend(str(DOUBLE_PATH))
    import samna as double

    assert double.__file__ is not None and double.__file__.startswith(str(DOUBLE_PATH))
    double.STATE.reset(devices=[])
    try:
        yield double
    finally:
        double.STATE.release.set()  # free any thread a test left hanging in the double
        for name in [n for n in sys.modules if n == "samna" or n.startswith("samna.")]:
            del sys.modules[name]
