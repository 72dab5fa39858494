"""Hostile TorchScript uploads, built here from archives torch writes: every zip that torch's
reader (miniz) would read differently from Python's, every entry outside torch.jit.save's
layout and all code torch would run while loading (or freezing) is refused, in process, over
REST and by ``specklab compile``, and no payload ever runs."""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from torch import Tensor, nn

from specklab.server.compiler import ArchiveLimits, CorruptArchive, UnsafeArchive, UnsupportedLayer
from specklab.server.compiler.pipeline import compile_upload

from ..fixtures_models import torchscript_bytes
from ..lab_client import Lab, bearer
from .graphs import options
from .hostile import OPTIONS_JSON, Payload, assert_refused, rewrite
from .hostile import hostile_lab as hostile_lab  # the module's daemon (a fixture)

SHAPE = (1, 8, 8)


class Stateful(nn.Module):
    """A module whose ``__setstate__``, which torch runs while loading, never returns."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.conv(x))

    @torch.jit.export
    def __getstate__(self) -> tuple[bool, int]:
        return (self.training, 0)

    @torch.jit.export
    def __setstate__(self, state: tuple[bool, int]) -> None:
        self.training = state[0]
        i = state[1]
        while i >= 0:
            i += 1


@pytest.fixture(scope="module")
def base() -> bytes:
    """What torch.jit.save writes for a network that compiles."""
    return torchscript_bytes(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()), SHAPE)


class Case(NamedTuple):
    build: Callable[[bytes, bytes], bytes]  # (base archive, pickle payload) -> upload
    error: type
    match: str


def _entry(name: str, content: bytes | None = None) -> Callable[[bytes, bytes], bytes]:
    """An entry (by default the payload) written just before ``data.pkl``."""

    def build(archive: bytes, payload: bytes) -> bytes:
        def change(info: zipfile.ZipInfo, data: bytes) -> list[tuple[str, bytes]]:
            added = [(name, payload if content is None else content)]
            ours = [(info.filename, data)]
            return added + ours if info.filename.endswith("/data.pkl") else ours

        return rewrite(archive, change)

    return build


def _setstate_hidden_by_a_duplicate(_: bytes, __: bytes) -> bytes:
    """The issue's case: the first entry (torch's) loops in ``__setstate__``, the last (what
    Python's zipfile reads) does not define it."""
    archive = torchscript_bytes(Stateful(), SHAPE)

    def change(info: zipfile.ZipInfo, content: bytes) -> list[tuple[str, bytes]]:
        if b"def __setstate__" not in content:
            return [(info.filename, content)]
        return [(info.filename, content), (info.filename, content.replace(b"__setstate__", b"s"))]

    return rewrite(archive, change)


def _stateful(_: bytes, __: bytes) -> bytes:
    return torchscript_bytes(Stateful(), SHAPE)


def _replace_code(old: bytes, new: bytes) -> Callable[[bytes, bytes], bytes]:
    def build(archive: bytes, _: bytes) -> bytes:
        def change(info: zipfile.ZipInfo, content: bytes) -> list[tuple[str, bytes]]:
            return [(info.filename, content.replace(old, new))]

        return rewrite(archive, change)

    return build


#: A pickle creating a custom C++ class, whose __setstate__ torch runs while unpickling.
_CUSTOM_CLASS_PICKLE = b"\x80\x02c__torch__.torch.classes.quantized\nConv2dPackedParamsBase\n)\x81."


def _custom_class_object(archive: bytes, _: bytes) -> bytes:
    def change(info: zipfile.ZipInfo, content: bytes) -> list[tuple[str, bytes]]:
        is_data = info.filename.endswith("/data.pkl")
        return [(info.filename, _CUSTOM_CLASS_PICKLE if is_data else content)]

    return rewrite(archive, change)


def _nul_in_a_name(archive: bytes, payload: bytes) -> bytes:
    """``data.pkl\\0.txt``: Python's zipfile cuts the name at the NUL (zipfile cannot write it)."""
    written = _entry("archive/data.pklX.txt")(archive, payload)
    return written.replace(b"archive/data.pklX.txt", b"archive/data.pkl\0.txt")


def _local_name_differs(archive: bytes, _: bytes) -> bytes:
    # the first occurrence is the local header (the central directory comes last)
    return archive.replace(b"archive/constants.pkl", b"archive/constantz.pkl", 1)


def _plain(archive: bytes) -> bytes:
    """The archive rewritten by Python's zipfile: no zip64 records."""
    return rewrite(archive, lambda info, content: [(info.filename, content)])


def _prepended(archive: bytes, _: bytes) -> bytes:
    # zipfile shifts every offset by the bytes before the archive; miniz does not
    return b"PK\x03\x04" + bytes(60) + _plain(archive)


def _zip64_prepended(archive: bytes, _: bytes) -> bytes:
    return b"PK\x03\x04" + bytes(60) + archive


def _appended(archive: bytes, _: bytes) -> bytes:
    return archive + b"\0" * 64


def _one_entry_fewer(archive: bytes) -> bytes:
    """The archive with its (32-bit) end record counting one entry fewer."""
    end = len(archive) - 22
    on_disk, total = struct.unpack_from("<HH", archive, end + 8)
    return archive[: end + 8] + struct.pack("<HH", on_disk - 1, total - 1) + archive[end + 12 :]


def _entry_count_off_by_one(archive: bytes, _: bytes) -> bytes:
    return _one_entry_fewer(_plain(archive))


def _zip64_records_disagree(archive: bytes, _: bytes) -> bytes:
    return _one_entry_fewer(archive)  # torch writes both records; the zip64 one is unchanged


CASES = {
    "duplicate data.pkl, the first a payload": Case(
        _entry("archive/data.pkl"), UnsafeArchive, "two entries"
    ),
    "duplicate code, the first looping in __setstate__": Case(
        _setstate_hidden_by_a_duplicate, UnsafeArchive, "two entries"
    ),
    "names differing in case only": Case(_entry("archive/DATA.pkl"), UnsafeArchive, "two entries"),
    "a ./ name": Case(_entry("archive/./data.pkl"), UnsafeArchive, "'\\.'"),
    "a // name": Case(_entry("archive//data.pkl"), UnsafeArchive, "empty parts"),
    "a backslash name": Case(_entry("archive\\data.pkl"), UnsafeArchive, "backslash"),
    "an absolute name": Case(_entry("/archive/data.pkl"), UnsafeArchive, "absolute"),
    "a .. name": Case(_entry("archive/code/../data.pkl"), UnsafeArchive, "'\\.\\.'"),
    "a NUL in a name": Case(_nul_in_a_name, UnsafeArchive, "control characters"),
    "a legacy model.json": Case(
        _entry("archive/model.json", b"{}"), UnsafeArchive, "torch.jit.save"
    ),
    "a pickle outside the layout": Case(
        _entry("archive/bytecode.pkl"), UnsafeArchive, "torch.jit.save"
    ),
    "a pickle named in upper case": Case(
        _entry("archive/TRACED_INPUTS.PKL"), UnsafeArchive, "torch.jit.save"
    ),
    "local header and central directory disagree": Case(
        _local_name_differs, UnsafeArchive, "local header"
    ),
    "data before the archive": Case(_prepended, UnsafeArchive, "data before the archive"),
    "data before a zip64 archive": Case(_zip64_prepended, UnsafeArchive, "zip64 locator"),
    "data after the archive": Case(_appended, UnsafeArchive, "does not end the file"),
    "an entry count that is off by one": Case(
        _entry_count_off_by_one, UnsafeArchive, "the end record says"
    ),
    "zip and zip64 end records that disagree": Case(
        _zip64_records_disagree, UnsafeArchive, "describe different directories"
    ),
    "__setstate__": Case(_stateful, UnsafeArchive, "defines __setstate__"),
    "a custom class object": Case(_custom_class_object, UnsafeArchive, "custom C\\+\\+ class"),
    "a custom class in the code": Case(
        _replace_code(
            b"  training : bool\n",
            b"  training : bool\n"
            b"  packed : __torch__.torch.classes.quantized.LinearPackedParamsBase\n",
        ),
        UnsafeArchive,
        "custom C\\+\\+ class",
    ),
    "a file read in the code": Case(
        _replace_code(  # the file's bytes would become constants when frozen
            b"    return (_1).forward(input0, )\n",
            b'    _9 = torch.sum(torch.from_file("/etc/hostname", False, 4))\n'
            b"    return torch.add((_1).forward(input0, ), _9)\n",
        ),
        UnsafeArchive,
        "aten::from_file",
    ),
    "an unknown operator namespace": Case(
        _replace_code(
            b'    _0 = getattr(self, "0")\n',
            b'    _9 = ops.profiler._record_function_enter("x", None)\n'
            b'    _0 = getattr(self, "0")\n',
        ),
        UnsafeArchive,
        "profiler::",
    ),
}
#: One case of each kind through the CLI too (each run starts a worker process).
CLI_CASES = {
    "duplicate code, the first looping in __setstate__",
    "a ./ name",
    "a legacy model.json",
    "__setstate__",
    "a custom class object",
}


@pytest.mark.parametrize("case", CASES)
def test_hostile_archives_are_refused_everywhere(
    case: str,
    base: bytes,
    hostile_lab: Lab,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    marker = tmp_path / "pwned"
    build, error, match = CASES[case]
    data = build(base, pickle.dumps(Payload(marker), protocol=2))
    cli = case in CLI_CASES
    assert_refused(
        data,
        error,
        match,
        lab=hostile_lab,
        marker=marker,
        cli_dir=tmp_path if cli else None,
        capsys=capsys if cli else None,
    )


def test_code_that_would_write_a_file_is_refused_before_freezing(
    base: bytes, hostile_lab: Lab, tmp_path: Path
) -> None:
    marker = tmp_path / "written"
    save = f'    torch.save(torch.ones([1]), "{marker}")\n    _0 = getattr(self, "0")\n'
    data = _replace_code(b'    _0 = getattr(self, "0")\n', save.encode())(base, b"")
    assert_refused(data, UnsafeArchive, "aten::save", lab=hostile_lab, marker=marker)


def test_a_truncated_entry_is_a_corrupt_archive(base: bytes) -> None:
    with zipfile.ZipFile(io.BytesIO(base)) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("/data.pkl"))
    name_size, extra_size = struct.unpack_from("<HH", base, info.header_offset + 26)
    start = info.header_offset + 30 + name_size + extra_size
    damaged = base[:start] + bytes(info.compress_size) + base[start + info.compress_size :]
    with pytest.raises(CorruptArchive, match=r"data\.pkl cannot be unpacked"):
        compile_upload(damaged, options(input_shape=SHAPE), ArchiveLimits())


def test_the_archives_the_cases_start_from_compile_everywhere(
    base: bytes, hostile_lab: Lab
) -> None:
    assert compile_upload(base, options(input_shape=SHAPE), ArchiveLimits()).report.ok
    _, token = hostile_lab.add_user("control")
    response = hostile_lab.client.post(
        "/v1/models",
        files={"file": ("model.pt", base)},
        data={"options": OPTIONS_JSON},
        headers=bearer(token),
    )
    assert response.status_code == 201, response.text


def test_a_module_without_forward_is_a_model_error_not_a_crash(base: bytes) -> None:
    rename = _replace_code(
        b"  def forward(self: __torch__.torch.nn.modules.container.",
        b"  def other(self: __torch__.torch.nn.modules.container.",
    )
    with pytest.raises(UnsupportedLayer, match="no forward method"):
        compile_upload(rename(base, b""), options(input_shape=SHAPE), ArchiveLimits())
