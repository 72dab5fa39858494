from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for package, folder in config["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *relative)))
    assert listed == found


@pytest.mark.parametrize("module", ["specklab.client", "specklab.schemas", "specklab.client.cli"])
def test_client_side_imports_no_server_stack(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "heavy = {'fastapi', 'uvicorn', 'sqlalchemy', 'torch', 'samna', 'numba',"
        " 'specklab.server'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_server_module_imports_the_client() -> None:
    """Shared rendering lives in ``specklab.schemas``; the daemon never reaches into the client."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "server").rglob("*.py")
        if "specklab.client" in path.read_text()
    ]
    assert offenders == []
