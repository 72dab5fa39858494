"""samna is imported lazily, on a thread, with a timeout; the PyPI stub never."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from specklab.server.devices.samna_loader import SamnaLoad, SamnaLoader
from specklab.server.devices.samna_probe import SamnaState, SamnaStatus


def _package(root: Path, name: str, source: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text(source)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


async def test_the_pypi_stub_is_never_imported(site: Path) -> None:
    # The real probe reads the file: this stub would raise if it were ever imported.
    _package(site, "samna", "PYPI_SAMNA = True\nraise SystemExit('imported the stub')\n")
    loader = SamnaLoader(timeout_s=1.0)
    assert await loader.module() is None
    assert "samna" not in sys.modules
    assert loader.report().state is SamnaLoad.PYPI_STUB


async def test_not_installed() -> None:
    loader = SamnaLoader(timeout_s=1.0, probe=lambda: SamnaStatus(SamnaState.NOT_INSTALLED))
    assert await loader.module() is None
    assert loader.report().state is SamnaLoad.NOT_INSTALLED


def _installed() -> SamnaStatus:
    return SamnaStatus(SamnaState.INSTALLED, "9.9")


async def test_import_failure_is_reported(site: Path) -> None:
    _package(site, "samna_broken_x", "raise ImportError('libusb missing')\n")
    loader = SamnaLoader(timeout_s=5.0, module_name="samna_broken_x", probe=_installed)
    assert loader.report().state is SamnaLoad.NOT_LOADED
    assert await loader.module() is None
    report = loader.report()
    assert report.state is SamnaLoad.FAILED
    assert "libusb missing" in (report.detail or "")
    assert await loader.module() is None  # not retried


async def test_slow_import_times_out_then_is_picked_up(site: Path) -> None:
    _package(site, "samna_slow_x", "import time\ntime.sleep(0.4)\n__version__ = '1.2'\n")
    loader = SamnaLoader(timeout_s=0.05, module_name="samna_slow_x", probe=_installed)
    assert await loader.module() is None
    assert loader.report().state is SamnaLoad.IMPORTING
    assert await loader.module() is None  # does not wait again
    await asyncio.sleep(0.6)
    module = await loader.module()
    assert module is not None and module.__name__ == "samna_slow_x"
    report = loader.report()
    assert (report.state, report.version) == (SamnaLoad.LOADED, "1.2")
