"""Fixtures for device tests: the samna test double on sys.path, and hand-built configurations."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ..lab_client import Lab, running_lab

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


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[Any]:
    """Start in-process labs (the app with its lifespan) with the given settings."""
    labs = []

    def make(**settings: Any) -> Lab:
        context = running_lab(tmp_path / "data", f"sqlite:///{tmp_path / 'lab.db'}", **settings)
        labs.append(context)
        return context.__enter__()

    yield make
    for context in reversed(labs):
        context.__exit__(None, None, None)
