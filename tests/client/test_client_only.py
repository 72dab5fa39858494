"""A whole remote workflow with files and arrays where the daemon's stack cannot be imported.

``pip install specklab`` brings no fastapi, torch or sqlalchemy; this runs the client in a
subprocess whose import system refuses them (and the server package), as on such a machine.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from .conftest import ALL_ONES_SHAPE, GRID_OUTPUTS, Account

BLOCKER = """
import importlib.abc
import sys

BLOCKED = {"fastapi", "starlette", "uvicorn", "torch", "sqlalchemy", "alembic", "numba", "nir"}


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED or name.startswith("specklab.server"):
            raise ModuleNotFoundError(f"{name} is not installed (blocked by the test)")
        return None


sys.meta_path.insert(0, Blocker())
"""

WORKFLOW = """
import io
import sys

import numpy as np

from specklab.client import Client, to_spikes
from specklab.schemas.events import spikes

url, token, model_path, shape = sys.argv[1], sys.argv[2], sys.argv[3], eval(sys.argv[4])
with Client(url, token) as lab:
    model = lab.compile(model_path, input_shape=shape, progress=True)
    assert model.report.ok, model.report_table()
    with lab.book("speck2fdevkit", minutes=5) as booking:
        hw_model = lab.deploy(model, booking.device_id)
        ys, xs = np.divmod(np.arange(64), 8)
        events_out = hw_model(spikes(t=10 * np.arange(64), layer=0, feature=0, x=xs, y=ys))
        print("outputs", len(events_out), len(to_spikes(events_out)))
        with hw_model.stream() as stream:
            stream.send(np.zeros((2, 1, 8, 8), dtype=np.int64) + 1, dt=1000)
            print("streamed", sum(len(e) for e in stream.outputs(idle=1.0)))
        hw_model.close()
        recording = lab.record(booking.device_id, 0.2, source="monitor")
        buffer = io.BytesIO()
        lab.download_recording(recording, buffer, progress=True)
        print("recording", recording.kind, buffer.getvalue()[:6])
blocked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "fastapi", "sqlalchemy"))
print("imported", blocked)
"""


def test_the_client_works_without_the_server_stack(
    tmp_path: Path, account: Account, model_file: Path
) -> None:
    script = tmp_path / "client_only.py"
    script.write_text(textwrap.dedent(BLOCKER) + textwrap.dedent(WORKFLOW))
    argv = [account.url, account.token, str(model_file), repr(ALL_ONES_SHAPE)]
    result = subprocess.run(
        [sys.executable, str(script), *argv], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [
        f"outputs {GRID_OUTPUTS} {GRID_OUTPUTS}",
        f"streamed {2 * GRID_OUTPUTS}",
        "recording spike b'\\x93NUMPY'",
        "imported []",
    ]


def test_the_blocker_really_blocks(tmp_path: Path) -> None:
    script = tmp_path / "blocked.py"
    script.write_text(textwrap.dedent(BLOCKER) + "import torch\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert result.returncode == 1 and "blocked by the test" in result.stderr
