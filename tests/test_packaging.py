from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

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


def test_extras_keep_psycopg_out_of_a_single_host_install() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert not [d for d in extras["server"] if d.startswith("psycopg")]
    assert [d for d in extras["postgres"] if d.startswith("psycopg")]


# The daemon's app on SQLite, in a process where psycopg cannot be imported.
WITHOUT_PSYCOPG = """
import importlib.abc, sys, tempfile
from pathlib import Path


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "psycopg":
            raise ModuleNotFoundError(f"{name} is not installed (blocked by the test)")


sys.meta_path.insert(0, Blocker())
from fastapi.testclient import TestClient

from specklab.server.app import create_app
from specklab.server.settings import Settings
from specklab.server.storage import Database

data = Path(tempfile.mkdtemp())
token = "spk_" + "a" * 40
app = create_app(Settings(data_dir=data, virtual=["speck2fdevkit=1"], admin_token=token))
with TestClient(app) as client:
    health = client.get("/v1/health/live")
    assert health.status_code == 200, health.text
    devices = client.get("/v1/devices", headers={"Authorization": f"Bearer {token}"})
    assert devices.status_code == 200, devices.text
try:
    Database("postgresql://lab@db.invalid/specklab")
except ModuleNotFoundError as exc:
    print(exc)
"""


def test_daemon_runs_on_sqlite_without_psycopg(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", WITHOUT_PSYCOPG], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert "pip install 'specklab[postgres]'" in out.stdout


def test_torch_floor_is_the_version_ci_installs() -> None:
    """The floor is the torch the suite runs with: older ones fail the compiler's tests (an
    older ``torch.export`` archive format, CUDA libraries beyond the workers' ``RLIMIT_AS``)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floors = [
        Requirement(r).specifier
        for r in project["optional-dependencies"]["server"]
        if Requirement(r).name == "torch"
    ]
    assert len(floors) == 1 and len(floors[0]) == 1
    (floor,) = floors[0]
    installed = re.findall(r"pip install .*\btorch==([\w.+]+)", (ROOT / ".ci" / "run").read_text())
    assert len(installed) == 1, installed
    assert floor.operator == ">="
    assert Version(floor.version) == Version(installed[0])
