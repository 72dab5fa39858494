"""Reading uploads safely: format detection by content, size limits, zip bombs and pickles.

Every check here only parses bytes (zip directories, pickle opcodes via ``pickletools``); it
never unpickles or imports anything named by the upload. The loader that does unpickle
(``torch.jit.load``) runs after these checks, in the worker process only; torch.export
archives are read without any pickle (``pt2.py``).

Formats, by content:

- NIR: an HDF5 file (its signature at offset 0, or at 512, 1024, ... after a user block).
- TorchScript: a zip whose single top folder holds ``data.pkl``, ``constants.pkl`` and ``code/``.
- torch.export: a zip whose top folder holds ``archive_format`` and ``models/``.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

from specklab.schemas.compile import ModelFormat

from .errors import ArchiveBomb, CorruptArchive, UnknownFormat, UnsafeArchive, UploadTooLarge

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    max_upload_bytes: int = 64 * _MIB
    max_unpacked_bytes: int = 512 * _MIB
    #: Above 1 MiB, an entry may not unpack to more than this many times its packed size.
    max_compression_ratio: float = 100.0
    max_nesting: int = 2


def check_upload_size(size: int, limits: ArchiveLimits) -> None:
    if size > limits.max_upload_bytes:
        raise UploadTooLarge(
            f"the upload is {size} bytes, over the limit of {limits.max_upload_bytes}",
            detail={"size": size, "limit": limits.max_upload_bytes},
        )


def _is_hdf5(data: bytes) -> bool:
    offset = 0
    while offset + len(HDF5_SIGNATURE) <= len(data):
        if data[offset : offset + len(HDF5_SIGNATURE)] == HDF5_SIGNATURE:
            return True
        offset = 512 if offset == 0 else offset * 2
    return False


def _open_zip(data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise CorruptArchive(f"the zip archive is truncated or damaged: {exc}") from exc


def _relative(names: list[str]) -> set[str]:
    """Entry names below the archive's single top folder."""
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1:
        return set()
    return {name.split("/", 1)[1] for name in names if "/" in name}


def detect_format(data: bytes) -> ModelFormat:
    if not data:
        raise UnknownFormat("the upload is empty")
    if _is_hdf5(data):
        return "nir"
    if not data.startswith(ZIP_SIGNATURE):
        raise UnknownFormat(
            "not a TorchScript archive, a torch.export archive or a NIR file "
            f"(it starts with {data[:8]!r})"
        )
    entries = _relative(_open_zip(data).namelist())
    if "archive_format" in entries and any(e.startswith("models/") for e in entries):
        return "torch_export"
    has_code = any(e.startswith("code/") for e in entries)
    if {"data.pkl", "constants.pkl"} <= entries and has_code:
        return "torchscript"
    if "data.pkl" in entries:
        raise UnknownFormat(
            "this is a torch.save checkpoint (a pickled state dict or module), which cannot be "
            "read without running its code: save the model with torch.jit.script/trace + save, "
            "torch.export.save, or as NIR"
        )
    raise UnknownFormat("a zip archive that is neither a TorchScript nor a torch.export archive")


def check_archive(data: bytes, fmt: ModelFormat, limits: ArchiveLimits) -> None:
    """Refuse zip bombs and archives whose loading would import or run anything unexpected."""
    if fmt == "nir":
        return  # HDF5 sizes are checked by the NIR reader before any dataset is read
    archive = _open_zip(data)
    _check_sizes(archive, limits)
    for name, payload in _pickles(archive, limits, depth=0):
        scan_pickle(payload, name)
    if fmt == "torchscript":
        for info in archive.infolist():
            is_code = "/code/" in info.filename and info.filename.endswith(".py")
            if is_code and b"__setstate__" in _read(archive, info.filename):
                raise UnsafeArchive(
                    f"{info.filename} defines __setstate__, which TorchScript runs while "
                    "loading; specklab does not run model code"
                )


def _check_sizes(archive: zipfile.ZipFile, limits: ArchiveLimits) -> None:
    total = 0
    for info in archive.infolist():
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _MIB and ratio > limits.max_compression_ratio:
            raise ArchiveBomb(
                f"{info.filename} unpacks {ratio:.0f} times its packed size "
                f"({info.file_size} bytes), over the limit of {limits.max_compression_ratio:.0f}"
            )
    if total > limits.max_unpacked_bytes:
        raise ArchiveBomb(
            f"the archive unpacks to {total} bytes, over the limit of {limits.max_unpacked_bytes}"
        )


def _read(archive: zipfile.ZipFile, name: str) -> bytes:
    try:
        return archive.read(name)
    except Exception as exc:  # BadZipFile, zlib.error, EOFError, ... for a damaged entry
        raise CorruptArchive(f"{name} cannot be unpacked: {exc}") from exc


def _pickles(
    archive: zipfile.ZipFile, limits: ArchiveLimits, depth: int
) -> Iterator[tuple[str, bytes]]:
    """Every pickle in the archive, including those inside nested torch.save zips."""
    for name in archive.namelist():
        if not name.endswith(("pkl", ".pt")):
            continue
        payload = _read(archive, name)
        if payload.startswith(ZIP_SIGNATURE):
            if depth >= limits.max_nesting:
                raise UnsafeArchive(f"{name}: archives nested deeper than {depth} levels")
            inner = _open_zip(payload)
            _check_sizes(inner, limits)
            for inner_name, inner_payload in _pickles(inner, limits, depth + 1):
                yield f"{name}!{inner_name}", inner_payload
        else:
            yield name, payload


#: Globals a TorchScript / torch.save pickle legitimately names (module, name).
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "Size"),
    ("torch", "device"),
}
_TORCH_DTYPES = {
    "float16",
    "float32",
    "float64",
    "bfloat16",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "bool",
}


def _allowed(module: str, name: str) -> bool:
    if (module, name) in _ALLOWED_GLOBALS:
        return True
    if module.startswith("__torch__."):
        return True  # TorchScript classes, compiled from the archive's own code, not imported
    if module == "torch.jit._pickle":
        return name.startswith("build_") or name == "restore_type_tag"
    return module == "torch" and (name.endswith("Storage") or name in _TORCH_DTYPES)


_STRING_OPS = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "SHORT_BINSTRING",
    "BINSTRING",
    "STRING",
}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}


def scan_pickle(payload: bytes, where: str) -> None:
    """Refuse a pickle that names any global outside the torch serialization allow-list.

    Follows the opcodes without executing them. ``STACK_GLOBAL`` takes its names from the two
    values pushed just before it, which a pickler writes as strings (possibly via the memo);
    anything else is refused as unresolvable.
    """
    memo: dict[int, str | None] = {}
    pushed: list[str | None] = []
    try:
        for opcode, arg, _ in pickletools.genops(payload):
            op = opcode.name
            if op in ("GLOBAL", "INST"):
                module, _, name = str(arg).partition(" ")
                _check_global(module, name, where)
                pushed.append(None)
            elif op == "STACK_GLOBAL":
                module, name = pushed if len(pushed) == 2 else (None, None)
                if module is None or name is None:
                    raise UnsafeArchive(f"{where}: a pickle global whose name cannot be resolved")
                _check_global(module, name, where)
                pushed.append(None)
            elif op in ("EXT1", "EXT2", "EXT4"):
                raise UnsafeArchive(f"{where}: pickle extension codes are not allowed")
            elif op in _STRING_OPS:
                pushed.append(arg.decode("latin-1") if isinstance(arg, bytes) else str(arg))
            elif op in _GET_OPS:
                pushed.append(memo.get(int(arg)))
            elif op in _PUT_OPS:
                memo[int(arg)] = pushed[-1] if pushed else None
            elif op == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            else:
                pushed.append(None)
            del pushed[:-2]
    except UnsafeArchive:
        raise
    except Exception as exc:  # pickletools raises ValueError and others on garbage
        raise CorruptArchive(f"{where} is not a valid pickle: {exc}") from exc


def _check_global(module: str, name: str, where: str) -> None:
    if not _allowed(module, name):
        raise UnsafeArchive(
            f"{where} refers to {module}.{name}: loading it would import and call code "
            "outside torch's tensor serialization",
            detail={"global": f"{module}.{name}", "entry": where},
        )
