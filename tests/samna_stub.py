"""Fake installed ``samna`` distributions, to check that the daemon reads them without importing.

Each fake ``__init__`` touches ``marker`` when imported, so a test can tell it never ran.
"""

from __future__ import annotations

from pathlib import Path

#: Like the PyPI stub: marked, and installing from the internet when imported.
PYPI_STUB = "PYPI_SAMNA = True\nopen({marker!r}, 'w').close()\nraise SystemExit('installs')\n"


def write_samna_dist(site: Path, init_source: str, version: str) -> Path:
    package = site / "samna"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(init_source)
    info = site / f"samna-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: samna\nVersion: {version}\n")
    return package
