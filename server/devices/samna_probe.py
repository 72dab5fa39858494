"""Find out what ``samna`` is installed WITHOUT importing it.

The PyPI package named ``samna`` is a stub whose ``__init__`` pip-installs the real package
from the vendor's index at import time (it marks itself with ``PYPI_SAMNA = True``). Importing
it offline fails, and online it rewrites the environment, so the daemon only ever reads files.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

_STUB_MARK = "PYPI_SAMNA = True"


class SamnaState(StrEnum):
    NOT_INSTALLED = "not installed"
    PYPI_STUB = "PyPI stub present, real package not installed"
    INSTALLED = "installed"


@dataclass(frozen=True, slots=True)
class SamnaStatus:
    state: SamnaState
    version: str | None = None

    @property
    def usable(self) -> bool:
        return self.state is SamnaState.INSTALLED

    def describe(self) -> str:
        if self.state is SamnaState.INSTALLED:
            return self.version or "installed (version unknown)"
        return self.state.value


def probe_samna() -> SamnaStatus:
    spec = importlib.util.find_spec("samna")
    if spec is None:
        return SamnaStatus(SamnaState.NOT_INSTALLED)
    try:
        version: str | None = importlib.metadata.version("samna")
    except importlib.metadata.PackageNotFoundError:
        version = None
    if spec.origin and spec.origin.endswith(".py") and _is_stub(Path(spec.origin)):
        return SamnaStatus(SamnaState.PYPI_STUB, version)
    return SamnaStatus(SamnaState.INSTALLED, version)


def _is_stub(init_file: Path) -> bool:
    try:
        return _STUB_MARK in init_file.read_text(errors="replace")
    except OSError:
        return False
