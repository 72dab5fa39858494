"""Reading uploads safely: format detection by content, size limits, zip bombs and pickles.

Every check here only parses bytes (zip directories, pickle opcodes via ``pickletools``); it
never unpickles or imports anything named by the upload. The loader that does unpickle
(``torch.jit.load``) runs after these checks, in the worker process only; torch.export
archives are read without any pickle (``pt2.py``).

The checks must see the bytes torch will read, and Python's ``zipfile`` and torch's reader
(miniz, ``PyTorchStreamReader``) disagree on malformed archives: ``zipfile`` shifts every
offset by data found before the archive and reads the last of two entries of one name,
miniz uses the offsets as written, finds names case-insensitively (by binary search, so
either of two equal names) and takes the zip64 record where its locator points. So a zip
upload is refused unless it is unambiguous: the end record ends the file, the central
directory ends where that record begins, it holds as many entries as the end record says,
each local header repeats its entry's name, and every name is canonical (no ``.``/``..``/empty
components, backslashes, NUL or control characters) and unique ignoring ASCII case. Then both
readers see the same entries at the same offsets, and the scan reads what torch reads.

Formats, by content:

- NIR: an HDF5 file (its signature at offset 0, or at 512, 1024, ... after a user block).
- TorchScript: a zip whose single top folder holds ``data.pkl``, ``constants.pkl`` and ``code/``.
- torch.export: a zip whose top folder holds ``archive_format`` and ``models/``.
"""

from __future__ import annotations

import io
import pickletools
import re
import struct
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


def open_zip(data: bytes) -> zipfile.ZipFile:
    """The zip, once it is known that torch's reader would see the same entries."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise CorruptArchive(f"the zip archive is truncated or damaged: {exc}") from exc
    _check_unambiguous(data, archive)
    return archive


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
    entries = _relative(open_zip(data).namelist())
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
    archive = open_zip(data)
    if fmt == "torchscript":
        _check_torchscript_layout(archive)
    check_sizes(archive, limits)
    for name, payload in _pickles(archive, limits, depth=0):
        scan_pickle(payload, name)
    if fmt == "torchscript":
        _check_torchscript_code(archive)


_EOCD = struct.Struct("<4sHHHHIIH")
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_EOCD_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP64_EOCD_SIGNATURE = b"PK\x06\x06"
#: Stored and deflated: the only methods torch's reader (miniz) inflates.
_TORCH_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
_ZIP64_EXTRA = 0x0001
_UTF8_FLAG = 0x800


def _ambiguous(what: str) -> UnsafeArchive:
    return UnsafeArchive(f"{what}: Python's zip reader and torch's would read different bytes")


def _central_directory(data: bytes) -> int:
    """The number of entries in the central directory, which must end where the end records
    begin: no bytes before the archive (zipfile shifts offsets by them, miniz does not)."""
    end = len(data) - _EOCD.size
    if end < 0 or data[end : end + 4] != _EOCD_SIGNATURE:
        raise _ambiguous("the zip's end record does not end the file (a comment or trailing data)")
    _, disk, cd_disk, disk_entries, entries, cd_size, cd_offset, comment = _EOCD.unpack_from(
        data, end
    )
    if disk or cd_disk or comment or disk_entries != entries:
        raise CorruptArchive("multi-disk zip archives and zip comments are not supported")
    locator = end - _ZIP64_LOCATOR.size
    if locator >= 0 and data[locator : locator + 4] == _ZIP64_LOCATOR_SIGNATURE:
        _, _, record, _ = _ZIP64_LOCATOR.unpack_from(data, locator)
        end = locator - _ZIP64_EOCD.size
        # zipfile reads the zip64 record just before the locator, miniz where the locator points
        if end < 0 or record != end or data[end : end + 4] != _ZIP64_EOCD_SIGNATURE:
            raise _ambiguous("the zip64 locator does not point to the record before it")
        fields = _ZIP64_EOCD.unpack_from(data, end)
        size, disk, cd_disk, disk_entries, entries64, size64, offset64 = fields[1:2] + fields[4:]
        if size != _ZIP64_EOCD.size - 12 or disk or cd_disk or disk_entries != entries64:
            raise CorruptArchive("the zip64 end record is malformed or spans disks")
        # a reader may take either record's values: each must be the other's or say "see zip64"
        agree = (
            entries in (0xFFFF, entries64)
            and cd_size in (0xFFFFFFFF, size64)
            and cd_offset in (0xFFFFFFFF, offset64)
        )
        if not agree:
            raise _ambiguous("the zip and zip64 end records describe different directories")
        entries, cd_size, cd_offset = entries64, size64, offset64
    if cd_offset + cd_size != end:
        raise _ambiguous(
            "the central directory does not end where the end record begins "
            "(data before the archive?)"
        )
    return entries


def _raw_name(info: zipfile.ZipInfo) -> bytes:
    return info.orig_filename.encode("utf-8" if info.flag_bits & _UTF8_FLAG else "cp437")


def _check_unambiguous(data: bytes, archive: zipfile.ZipFile) -> None:
    """Refuse a zip that torch's reader would read differently from Python's (see above)."""
    entries = _central_directory(data)
    infos = archive.infolist()
    if len(infos) != entries:
        raise _ambiguous(
            f"the central directory holds {len(infos)} entries, the end record says {entries}"
        )
    seen: dict[bytes, str] = {}
    for info in infos:
        raw = _raw_name(info)
        check_name(raw, info.filename)
        key = raw.lower()  # miniz compares names ignoring ASCII case
        if key in seen:
            raise UnsafeArchive(
                f"{info.filename}: the archive holds two entries named {seen[key]!r} and "
                f"{info.filename!r} (torch may read either, Python reads the last)",
                detail={"entry": info.filename},
            )
        seen[key] = info.filename
        _check_local_header(data, info, raw)


def check_name(raw: bytes, name: str) -> None:
    parts = raw.split(b"/")
    bad = (
        any(byte < 0x20 or byte == 0x7F for byte in raw)
        or b"\\" in raw
        or any(part in (b"", b".", b"..") for part in parts)
    )
    if bad:
        raise UnsafeArchive(
            f"{name!r}: an entry name that is absolute, has '.', '..' or empty parts, a "
            "backslash or control characters; torch and Python would name different files",
            detail={"entry": name},
        )


def _check_local_header(data: bytes, info: zipfile.ZipInfo, raw: bytes) -> None:
    start = info.header_offset
    if start + _LOCAL_HEADER.size > len(data):
        raise CorruptArchive(f"{info.filename}: its local header is past the end of the file")
    header = _LOCAL_HEADER.unpack_from(data, start)
    name_size = header[9]
    local_name = data[start + _LOCAL_HEADER.size : start + _LOCAL_HEADER.size + name_size]
    if header[0] != ZIP_SIGNATURE or local_name != raw:
        raise UnsafeArchive(
            f"{info.filename}: its local header names {local_name!r}, the central directory "
            f"{raw!r}",
            detail={"entry": info.filename},
        )
    if info.compress_type not in _TORCH_METHODS:
        raise CorruptArchive(
            f"{info.filename} uses zip compression method {info.compress_type}; torch reads "
            "stored and deflated entries only"
        )
    if _zip64_extras(info.extra) > 1:
        raise _ambiguous(f"{info.filename} has two zip64 size records")


def _zip64_extras(extra: bytes) -> int:
    count, offset = 0, 0
    while offset + 4 <= len(extra):
        kind, size = struct.unpack_from("<HH", extra, offset)
        count += kind == _ZIP64_EXTRA
        offset += 4 + size
    return count


#: What ``torch.jit.save`` writes below the archive's top folder (and nothing else is read by
#: ``torch.jit.load``): records, the two pickles and their tensors, the compiled code with its
#: debug tables, a traced module's inputs, and the user's extra files.
_TORCHSCRIPT_LAYOUT = re.compile(
    r"version|byteorder|\.data/version|\.data/serialization_id"
    r"|(?:data|constants|traced_inputs)\.pkl|(?:data|constants|traced_inputs)/[0-9]+"
    r"|code/__torch__(?:/[A-Za-z_][A-Za-z0-9_]*)*\.py(?:\.debug_pkl)?"
    r"|extra/.+"
)


def _check_torchscript_layout(archive: zipfile.ZipFile) -> None:
    names = archive.namelist()
    # torch looks every record up below the first entry's top folder
    root = names[0].split("/", 1)[0] + "/"
    for name in names:
        if not (name.startswith(root) and _TORCHSCRIPT_LAYOUT.fullmatch(name[len(root) :])):
            raise UnsafeArchive(
                f"{name}: not an entry torch.jit.save writes (data.pkl, constants.pkl, data/N, "
                "constants/N, code/__torch__/...py, version, byteorder, .data/..., extra/...)",
                detail={"entry": name},
            )


#: Text in TorchScript code that makes torch run code while loading: a class's
#: ``__setstate__`` (called with the unpickled state) or a custom C++ class.
_CODE_AT_LOAD = {
    b"__setstate__": "defines __setstate__, which TorchScript runs while loading",
    b"torch.classes.": "uses a custom C++ class (torch.classes), whose code runs while loading",
}


def _check_torchscript_code(archive: zipfile.ZipFile) -> None:
    for name in archive.namelist():
        if not name.endswith(".py"):
            continue
        code = read_entry(archive, name)
        for marker, reason in _CODE_AT_LOAD.items():
            if marker in code:
                raise UnsafeArchive(
                    f"{name} {reason}; specklab does not run model code",
                    detail={"entry": name},
                )


def check_sizes(archive: zipfile.ZipFile, limits: ArchiveLimits) -> None:
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


def read_entry(archive: zipfile.ZipFile, name: str) -> bytes:
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
        payload = read_entry(archive, name)
        if payload.startswith(ZIP_SIGNATURE):
            if depth >= limits.max_nesting:
                raise UnsafeArchive(f"{name}: archives nested deeper than {depth} levels")
            inner = open_zip(payload)
            check_sizes(inner, limits)
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


#: TorchScript classes: ``__torch__`` (a class of the user's script or notebook) or
#: ``__torch__.<module path>``, compiled from the archive's own code, not imported.
_TORCHSCRIPT_CLASS = re.compile(r"__torch__(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
#: Custom C++ classes (``torch.classes``), whose ``__setstate__`` runs while unpickling.
_CUSTOM_CLASS_MODULE = re.compile(r"(?:__torch__\.)?torch\.classes(?:\..*)?")


def _allowed(module: str, name: str) -> bool:
    if (module, name) in _ALLOWED_GLOBALS:
        return True
    if _TORCHSCRIPT_CLASS.fullmatch(module) and not _CUSTOM_CLASS_MODULE.fullmatch(module):
        return name.isidentifier()
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
    if _allowed(module, name):
        return
    reason = (
        "a custom C++ class (torch.classes), whose __setstate__ torch runs while loading"
        if _CUSTOM_CLASS_MODULE.fullmatch(module)
        else "loading it would import and call code outside torch's tensor serialization"
    )
    raise UnsafeArchive(
        f"{where} refers to {module}.{name}: {reason}",
        detail={"global": f"{module}.{name}", "entry": where},
    )
