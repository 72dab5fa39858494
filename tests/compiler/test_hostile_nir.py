"""Hostile NIR files, built here with h5py: graphs nested too deep, too many nodes or edges,
links to other files or paths are refused before ``nir.read`` builds anything, in process,
over REST and by ``specklab compile``."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import h5py
import nir
import numpy as np
import pytest

from specklab.server.compiler import ArchiveBomb, ArchiveLimits, UnsafeArchive
from specklab.server.compiler.nirgraph import MAX_DEPTH, MAX_EDGES, MAX_NODES, load_nir

from ..lab_client import Lab
from .hostile import assert_refused
from .hostile import hostile_lab as hostile_lab  # the module's daemon (a fixture)

#: The depth that took nir.read 32 s before the bound.
DEEP = 300


def _hdf5(build: Callable[[h5py.File], None]) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        build(handle)
    return buffer.getvalue()


def _nested(levels: int) -> Callable[[h5py.File], None]:
    def build(handle: h5py.File) -> None:
        group = handle.create_group("node")
        for _ in range(levels):
            group["type"] = b"NIRGraph"
            group = group.create_group("nodes").create_group("inner")
        group["type"] = b"Input"

    return build


def _flat(nodes: int, edges: int = 0) -> Callable[[h5py.File], None]:
    def build(handle: h5py.File) -> None:
        graph = handle.create_group("node")
        graph["type"] = b"NIRGraph"
        graph["edges"] = np.array([[b"a", b"b"]] * edges).reshape(edges, 2)
        for i in range(nodes):
            graph.create_group(f"nodes/n{i}")["type"] = b"Input"

    return build


def _linked(link: object) -> Callable[[h5py.File], None]:
    def build(handle: h5py.File) -> None:
        _flat(2)(handle)
        handle["node/nodes/elsewhere"] = link

    return build


CASES = {
    f"graphs nested {DEEP} deep": (_nested(DEEP), ArchiveBomb, f"more than {MAX_DEPTH} levels"),
    "too many nodes": (_flat(MAX_NODES + 1), ArchiveBomb, f"more than {MAX_NODES} nodes"),
    "too many edges": (_flat(3, MAX_EDGES + 1), ArchiveBomb, f"more than {MAX_EDGES} edges"),
    "an external link": (_linked(h5py.ExternalLink("/etc/passwd", "/")), UnsafeArchive, "file"),
    "a soft link (a graph inside itself)": (
        _linked(h5py.SoftLink("/node")),
        UnsafeArchive,
        "another path",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_hostile_nir_files_are_refused_before_they_are_read(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    build, error, match = CASES[case]

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("nir.read was called")

    monkeypatch.setattr(nir, "read", never)
    with pytest.raises(error, match=match):
        load_nir(_hdf5(build), ArchiveLimits().max_unpacked_bytes)


@pytest.mark.parametrize("case", CASES)
def test_hostile_nir_files_are_refused_everywhere(
    case: str, hostile_lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build, error, match = CASES[case]
    cli = case.startswith("graphs nested")  # one CLI run: each starts a worker process
    assert_refused(
        _hdf5(build),
        error,
        match,
        lab=hostile_lab,
        marker=tmp_path / "pwned",
        cli_dir=tmp_path if cli else None,
        capsys=capsys if cli else None,
    )


def test_graphs_nested_within_the_bound_are_read() -> None:
    def graph(inner: nir.NIRNode) -> nir.NIRGraph:
        return nir.NIRGraph(
            nodes={
                "input": nir.Input(input_type={"input": np.array([2])}),
                "inner": inner,
                "output": nir.Output(output_type={"output": np.array([2])}),
            },
            edges=[("input", "inner"), ("inner", "output")],
            type_check=False,
        )

    nested: nir.NIRNode = nir.Linear(weight=np.eye(2))
    for _ in range(MAX_DEPTH):
        nested = graph(nested)
    buffer = io.BytesIO()
    nir.write(buffer, nested)
    read = load_nir(buffer.getvalue(), ArchiveLimits().max_unpacked_bytes)
    assert [node.name for node in read.nodes] == [".".join(["inner"] * MAX_DEPTH)]
