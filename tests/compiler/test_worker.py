"""The isolated worker pool: the three formats agree through it, every bad upload gets its
typed error, and the pool keeps working after each."""

from __future__ import annotations

import io
import os
import pickle
import signal
import time
import zipfile
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import pytest

from specklab.client.cli import main
from specklab.server.compiler import (
    ArchiveBomb,
    ArchiveLimits,
    CompileError,
    CompilerPool,
    CompileTimeout,
    CorruptArchive,
    UnknownFormat,
    UnsafeArchive,
    UploadTooLarge,
    compile_graph,
)
from specklab.server.compiler.archive import check_archive
from specklab.server.compiler.nirgraph import load_nir
from specklab.server.compiler.pipeline import import_model

from .conftest import TEST_UPLOAD_LIMIT
from .graphs import options
from .sandbox_probe import worker_process

GUIDE_PLACEMENT = {0: 0, 1: 3, 2: 5, 3: 6, 4: 1}


def _assert_works(pool: CompilerPool, guide_files: Mapping[str, bytes]) -> None:
    result = pool.compile(guide_files["trace"], options())
    assert result.report.ok and result.report.placement.mapping == GUIDE_PLACEMENT


def test_the_three_formats_compile_identically(
    pool: CompilerPool, guide_files: Mapping[str, bytes]
) -> None:
    results = {kind: pool.compile(data, options()) for kind, data in guide_files.items()}
    documents = [result.config_json for result in results.values()]
    assert all(document == documents[0] for document in documents)  # byte for byte
    config = results["nir"].config
    assert config.core_of_layer == GUIDE_PLACEMENT
    reports = [r.report.model_dump(exclude={"format", "nodes"}) for r in results.values()]
    for report in reports:
        for layer in report["layers"]:
            layer.pop("sources")
    assert all(report == reports[0] for report in reports)
    assert {r.report.format for r in results.values()} == {"torchscript", "torch_export", "nir"}
    in_process = compile_graph(import_model(guide_files["nir"], ArchiveLimits()), options())
    assert in_process.config_json == documents[0]


class _Payload:
    """Unpickling this runs a shell command: what a hostile upload would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _replace_entry(archive: bytes, suffix: str, content: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = content if info.filename.endswith(suffix) else source.read(info)
            target.writestr(info, data)
    return out.getvalue()


def _zip_bomb() -> bytes:
    """A TorchScript-shaped archive with an entry that inflates a thousandfold."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model/data.pkl", pickle.dumps({}, protocol=2))
        archive.writestr("model/constants.pkl", pickle.dumps((), protocol=2))
        archive.writestr("model/code/__torch__.py", "")
        archive.writestr("model/data/0", bytes(16 * 1024 * 1024))
    return out.getvalue()


def _bad_upload(case: str, guide: Mapping[str, bytes], marker: Path) -> tuple[bytes, type]:
    script = guide["script"]
    payload = pickle.dumps(_Payload(marker), protocol=4 if "STACK" in case else 2)
    if case.startswith("pickle payload"):
        return _replace_entry(script, "/data.pkl", payload), UnsafeArchive
    if case == "nested payload in a torch.export archive":
        sample = _replace_entry(_nested_sample(guide["export"]), "data.pkl", payload)
        return _replace_entry(guide["export"], "sample_inputs/model.pt", sample), UnsafeArchive
    if case == "code run at load":
        code = b"class Conv2d(Module):\n  def __setstate__(self, state):\n    pass\n"
        # Conv2d's code file is conv.py, or conv/___torch_mangle_N.py when this process has
        # scripted another Conv2d before (torch mangles the later class names).
        with zipfile.ZipFile(io.BytesIO(script)) as archive:
            conv = next(n for n in archive.namelist() if "/modules/conv" in n)
        return _replace_entry(script, conv, code), UnsafeArchive
    if case == "zip bomb":
        return _zip_bomb(), ArchiveBomb
    if case == "truncated archive":
        return script[: len(script) // 3], CorruptArchive
    if case == "truncated NIR file":
        return guide["nir"][:4096], CorruptArchive
    if case == "not an archive":
        return b"#!/bin/sh\nrm -rf /\n", UnknownFormat
    assert case == "over the size limit"
    return bytes(TEST_UPLOAD_LIMIT + 1), UploadTooLarge


def _nested_sample(export_archive: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(export_archive)) as archive:
        name = next(n for n in archive.namelist() if n.endswith("sample_inputs/model.pt"))
        return archive.read(name)


CASES = [
    "pickle payload (GLOBAL)",
    "pickle payload (STACK_GLOBAL)",
    "nested payload in a torch.export archive",
    "code run at load",
    "zip bomb",
    "truncated archive",
    "truncated NIR file",
    "not an archive",
    "over the size limit",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_uploads_get_typed_errors_and_the_pool_keeps_working(
    pool: CompilerPool, guide_files: Mapping[str, bytes], tmp_path: Path, case: str
) -> None:
    marker = tmp_path / "pwned"
    data, error = _bad_upload(case, guide_files, marker)
    with pytest.raises(error) as caught:
        pool.compile(data, options())
    assert caught.value.code == error.code and caught.value.message
    assert not marker.exists()
    _assert_works(pool, guide_files)


def test_the_unpacked_size_limit_is_enforced(guide_files: Mapping[str, bytes]) -> None:
    small = ArchiveLimits(max_unpacked_bytes=100_000)
    with pytest.raises(ArchiveBomb, match="unpacks to"):
        check_archive(guide_files["script"], "torchscript", small)
    with pytest.raises(ArchiveBomb, match="datasets unpack to"):
        load_nir(guide_files["nir"], small.max_unpacked_bytes)


def _limits(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]
    return {line[:26].strip(): line[26:47].strip() for line in lines}


def test_workers_run_under_resource_limits(
    pool: CompilerPool, guide_files: Mapping[str, bytes]
) -> None:
    _assert_works(pool, guide_files)
    [pid] = pool.pids
    limits = _limits(worker_process(pid))
    assert limits["Max address space"] == str(pool.limits.memory_bytes)
    assert limits["Max file size"] == "0"
    assert limits["Max core file size"] == "0"
    assert limits["Max cpu time"] != "unlimited"  # moved up by the budget at each compile


def test_a_timed_out_worker_is_replaced(
    pool: CompilerPool, guide_files: Mapping[str, bytes]
) -> None:
    """A worker that never answers (stopped here; a hostile loop would do the same) is killed
    at the deadline, its sandboxed process included, and replaced."""
    pool.warm_up()
    [started] = pool.pids
    worker = worker_process(started)
    os.kill(worker, signal.SIGSTOP)
    with pytest.raises(CompileTimeout):
        pool.compile(guide_files["export"], options(), timeout=1)
    assert pool.pids != [started]
    _wait_until_gone(worker)
    _assert_works(pool, guide_files)


def _wait_until_gone(pid: int) -> None:
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}/stat").exists() and "Z" not in _state(pid):
        assert time.monotonic() < deadline, f"process {pid} outlived its worker"
        time.sleep(0.05)


def test_a_stuck_worker_does_not_hold_up_the_others(guide_files: Mapping[str, bytes]) -> None:
    """What a hostile upload holding its worker looks like to everyone else: the other worker
    serves them meanwhile."""
    with CompilerPool(2) as pool, ThreadPoolExecutor(2) as threads:
        pool.warm_up()
        stuck = worker_process(pool.pids[0])
        os.kill(stuck, signal.SIGSTOP)
        try:
            compiles = [
                threads.submit(pool.compile, guide_files["trace"], options(), timeout=600)
                for _ in range(2)
            ]
            done, waiting = wait(compiles, timeout=300, return_when=FIRST_COMPLETED)
            assert len(done) == 1 and len(waiting) == 1
            assert next(iter(done)).result().report.ok
        finally:
            os.kill(stuck, signal.SIGCONT)
        assert next(iter(waiting)).result(timeout=300).report.ok


def test_specklab_compile_reads_a_pt2_file(
    guide_files: Mapping[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The one-off worker imports torch inside the sandbox, where no temporary directory is
    writable; it once failed there with "No usable temporary directory"."""
    path = tmp_path / "model.pt2"
    path.write_bytes(guide_files["export"])
    assert main(["compile", str(path), "--input-shape", "1,28,28"]) == 0, capsys.readouterr()


def test_a_worker_killed_while_idle_is_replaced(
    pool: CompilerPool, guide_files: Mapping[str, bytes]
) -> None:
    _assert_works(pool, guide_files)
    [pid] = pool.pids
    os.kill(pid, signal.SIGKILL)
    _wait_until_gone(pid)
    _assert_works(pool, guide_files)
    assert pool.pids != [pid]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return "Z"


def test_model_errors_carry_their_report_across_the_process_boundary(
    pool: CompilerPool, guide_files: Mapping[str, bytes]
) -> None:
    with pytest.raises(CompileError) as caught:
        pool.compile(guide_files["script"], options(chip_layers_ordering=[0, 1, 2, 3, 4]))
    assert caught.value.code == "no_placement"
    report = caught.value.report
    assert report is not None and not report.ok
    assert report.placement is not None and report.placement.layers[2].exceeds[2] == ["kernel"]
