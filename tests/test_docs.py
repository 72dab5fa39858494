"""Every ```python and ```bash block of README.md and docs/*.md, run against a real daemon.

A block is skipped only when the line right before its fence is ``<!-- not-run: REASON -->``
(see "Executed docs" in docs/architecture.md). The blocks of one file run in order, the Python
ones in one namespace (so a later block uses what an earlier one made), after a prelude that
gives the names the docs leave to the reader: ``lab`` (a Client), ``ann`` (the guide's
network), ``events_in``, ``batches``, ``upload_bytes``, and ``device`` (a virtual devkit booked
and deployed with ``ann``). Shell blocks see ``SPECKLAB_URL``, ``SPECKLAB_TOKEN``,
``SPECKLAB_DATA_DIR`` (the daemon's), ``$MODEL_ID`` and ``$DEVICE_ID``. Both run in a folder
holding ``lenet.pt`` (the guide's network, TorchScript), ``events.npy`` and ``./data`` (the
daemon's data dir).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .daemon import Daemon, run_daemon
from .guide_inputs import guide_spikes

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(?P<reason>\S.*?)\s*-->$")
FENCE = re.compile(r"^```(?P<lang>\w*)\s*$")
ADMIN_TOKEN = "spk_" + "d" * 43
RUN_LANGUAGES = {"python", "bash"}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    code: str
    #: Why the block is not run, from its marker; None: it runs.
    not_run: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, with the not-run marker right above each."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        marker = NOT_RUN.match(lines[index - 1].strip()) if index else None
        found.append(
            Block(
                path,
                index + 1,
                fence["lang"],
                "\n".join(lines[index + 1 : end]) + "\n",
                marker["reason"] if marker else None,
            )
        )
        index = end + 1
    return found


ALL_BLOCKS = [b for path in DOCS for b in blocks(path) if b.lang in RUN_LANGUAGES]


def test_every_shell_or_python_block_is_fenced_with_its_language() -> None:
    # ```sh, ```console or an unlabeled fence holding commands would escape this module.
    for path in DOCS:
        for block in blocks(path):
            assert block.lang in RUN_LANGUAGES | {"", "text", "json", "toml", "ini"}, block.id
            if block.lang == "":
                assert not block.code.lstrip().startswith(("specklab ", "pip ", "from ")), (
                    f"{block.id} looks like a command or code: fence it as bash or python"
                )


@dataclass
class DocsLab:
    daemon: Daemon
    folder: Path
    env: dict[str, str]
    namespaces: dict[Path, dict[str, Any]]


@pytest.fixture(scope="module")
def docs_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocsLab]:
    from specklab.client import Client

    from .fixtures_models import guide_network, torchscript_bytes

    folder = tmp_path_factory.mktemp("docs")
    ann = guide_network()
    upload_bytes = torchscript_bytes(ann)
    (folder / "lenet.pt").write_bytes(upload_bytes)
    rng = np.random.default_rng(0)
    events_in = guide_spikes(rng, 300, 20_000)
    np.save(folder / "events.npy", events_in)
    env = {"SPECKLAB_ADMIN_TOKEN": ADMIN_TOKEN}
    # Devices: one for the Python blocks, one for the shell blocks, and two the docs book.
    with run_daemon(folder / "data", "--virtual", "speck2fdevkit=4", env=env) as daemon:
        env = {
            **os.environ,
            "SPECKLAB_URL": daemon.url,
            "SPECKLAB_TOKEN": ADMIN_TOKEN,
            "SPECKLAB_DATA_DIR": str(folder / "data"),
        }
        with Client(daemon.url, ADMIN_TOKEN) as lab, contextlib.ExitStack() as stack:
            model = lab.compile(upload_bytes, input_shape=(1, 28, 28), name="lenet")
            devices = {}
            for name in ("python", "bash"):
                booking = stack.enter_context(
                    lab.lease(lab.create_booking("speck2fdevkit", minutes=60))
                )
                lab.deploy(model, booking.device_id)
                devices[name] = booking.device_id
            env |= {"MODEL_ID": str(model.id), "DEVICE_ID": devices["bash"]}
            prelude = {
                "lab": lab,
                "ann": ann,
                "events_in": events_in,
                "batches": [events_in[i::3] for i in range(3)],
                "upload_bytes": upload_bytes,
                "device": devices["python"],
            }
            namespaces = {path: dict(prelude) for path in DOCS}
            yield DocsLab(daemon, folder, env, namespaces)


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.id for b in ALL_BLOCKS])
def test_doc_block_runs(block: Block, docs_lab: DocsLab, monkeypatch: pytest.MonkeyPatch) -> None:
    if block.not_run is not None:
        pytest.skip(f"marked not-run: {block.not_run}")
    monkeypatch.chdir(docs_lab.folder)
    if block.lang == "python":
        for name in ("SPECKLAB_URL", "SPECKLAB_TOKEN", "SPECKLAB_DATA_DIR"):
            monkeypatch.setenv(name, docs_lab.env[name])
        exec(compile(block.code, block.id, "exec"), docs_lab.namespaces[block.path])
        return
    bin_dir = str(Path(sys.executable).parent)
    env = {**docs_lab.env, "PATH": os.pathsep.join([bin_dir, docs_lab.env.get("PATH", "")])}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.code],
        cwd=docs_lab.folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{block.id} failed:\n{done.stdout}\n{done.stderr}"
