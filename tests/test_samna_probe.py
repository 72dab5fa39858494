"""samna's state is read from files: the PyPI stub must never be imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .samna_stub import PYPI_STUB, write_samna_dist

PROBE = (
    "from specklab.server.devices.samna_probe import probe_samna; import sys; "
    "print(probe_samna().describe()); print('samna' in sys.modules)"
)


def _probe(site: Path | None) -> list[str]:
    env_path = [str(site)] if site else []
    code = f"import sys; sys.path[:0] = {env_path!r}; {PROBE}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split("\n")[:2]


def test_not_installed() -> None:
    if subprocess.run(
        [sys.executable, "-c", "import importlib.util as u; exit(u.find_spec('samna') is None)"]
    ).returncode:
        assert _probe(None) == ["not installed", "False"]
    else:
        pytest.skip("a samna package is installed in this environment")


def test_pypi_stub_is_recognised_without_importing_it(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    write_samna_dist(tmp_path / "site", PYPI_STUB.format(marker=str(marker)), "0.48.6")
    assert _probe(tmp_path / "site") == ["PyPI stub present, real package not installed", "False"]
    assert not marker.exists()


def test_real_package_reports_its_version_without_being_imported(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    write_samna_dist(tmp_path / "site", f"open({str(marker)!r}, 'w').close()\n", "0.48.6")
    assert _probe(tmp_path / "site") == ["0.48.6", "False"]
    assert not marker.exists()
