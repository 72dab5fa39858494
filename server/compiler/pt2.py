"""torch.export archives (``.pt2``, torch 2.13) read as data: JSON documents and raw tensor bytes.

``torch.export.load`` runs code from the archive: it unpickles pickled weights and constants
(``torch.load(weights_only=False)``), opaque objects (``pickle.loads``), custom objects, the
legacy pickled state dicts and the sample inputs, loads AOTInductor libraries, and evaluates
the program's shape expressions with sympy (``eval``). This reader reads only what a chip
network needs and never unpickles, imports or evaluates anything from the upload.

The layout, below the archive's single top folder (torch writes the program ``model``)::

    archive_format, archive_version        "pt2", "0"
    models/model.json                      the program: graph and signature (torch's serialized
                                           schema, JSON)
    data/weights/model_weights_config.json parameters and persistent buffers: name -> entry,
                                           dtype, sizes, strides, offset
    data/weights/weight_<n>                the raw bytes of one storage (tensors may share it)
    data/constants/model_constants_config.json  non-persistent buffers, lifted tensor constants
    data/constants/tensor_<n>              raw bytes
    data/sample_inputs/model.pt, extra/*   not needed: never read

Refused as :class:`UnsafeArchive`, naming the entry, because torch's loader would unpickle,
load or evaluate it: any config entry stored as a pickle (``use_pickle``) or as a custom or
opaque object, a ``path_name`` that is not a plain file name in its folder (``/``, ``\\``,
``..``, absolute), the legacy ``data/weights/model.pt`` / ``data/constants/model.pt``, a
second program under ``models/``, AOTInductor code, and a shape expression that is not plain
arithmetic. Malformed JSON, missing entries, tensors whose bytes do not match their metadata
and sizes over the limits are :class:`CorruptArchive`.
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from .archive import ArchiveLimits
from .errors import CorruptArchive, UnsafeArchive

MODEL = "models/model.json"
WEIGHTS = "data/weights/"
CONSTANTS = "data/constants/"
_CONFIGS = {
    WEIGHTS: "data/weights/model_weights_config.json",
    CONSTANTS: "data/constants/model_constants_config.json",
}
#: Loaded by torch in preference to the configs, with ``torch.load``.
_LEGACY_PICKLES = ("data/weights/model.pt", "data/constants/model.pt")
_AOTINDUCTOR = "data/aotinductor/"

#: Larger JSON documents than this are refused before parsing (Python objects take ~10x).
MAX_JSON_BYTES = 64 * 1024 * 1024
#: numpy's (and torch's) dimension limit.
MAX_DIMS = 64

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_PICKLED_OBJECTS = ("custom_obj_", "opaque_obj_")
_TENSOR_CONSTANT = "tensor_"

#: torch's serialized ScalarType -> (numpy dtype of the stored bytes, name).
_DTYPES: dict[int, tuple[str, str]] = {
    1: ("u1", "uint8"),
    2: ("i1", "int8"),
    3: ("<i2", "int16"),
    4: ("<i4", "int32"),
    5: ("<i8", "int64"),
    6: ("<f2", "float16"),
    7: ("<f4", "float32"),
    8: ("<f8", "float64"),
    12: ("?", "bool"),
    13: ("<u2", "bfloat16"),
    28: ("<u2", "uint16"),
    34: ("<u4", "uint32"),
    35: ("<u8", "uint64"),
}
_BFLOAT16 = 13

# Shape expressions torch would hand to sympy.sympify: numbers, size symbols (s0, u3, ...),
# operators and the functions torch prints. With no quotes, brackets or other names, eval
# could only do arithmetic.
_EXPR_TOKEN = re.compile(
    r"\s+|(?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>\*\*|//|<=|>=|==|!=|[-+*/%()<>,&|~^.])"
)
_EXPR_SYMBOL = re.compile(r"[a-z]+\d+")
_EXPR_FUNCTIONS = frozenset(
    {
        "Abs",
        "And",
        "CeilDiv",
        "CeilToInt",
        "CleanDiv",
        "Eq",
        "FloatPow",
        "FloatTrueDiv",
        "FloorDiv",
        "FloorToInt",
        "Ge",
        "Gt",
        "Identity",
        "IntTrueDiv",
        "IsNonOverlappingAndDenseIndicator",
        "LShift",
        "Le",
        "Lt",
        "Max",
        "Min",
        "Mod",
        "ModularIndexing",
        "Ne",
        "Not",
        "Or",
        "Piecewise",
        "PowByNatural",
        "PythonMod",
        "RShift",
        "RoundDecimal",
        "RoundToInt",
        "ToFloat",
        "TruncToFloat",
        "TruncToInt",
        "Where",
        "ceiling",
        "floor",
        "oo",
        "sqrt",
        "zoo",
        "True",
        "False",
    }
)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def member(obj: Any, key: str, kind: type, where: str) -> Any:
    """``obj[key]``, which must exist and be of ``kind`` (``int`` excludes ``bool``)."""
    if not isinstance(obj, dict):
        raise CorruptArchive(f"{where} is not a JSON object")
    if key not in obj:
        raise CorruptArchive(f"{where} has no '{key}'")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CorruptArchive(f"{where}.{key} is not {_kind_name(kind)}: {_short(value)}")
    return value


def union(obj: Any, where: str) -> tuple[str, Any]:
    """A serialized union: a JSON object with exactly one member, ``(kind, value)``."""
    if not isinstance(obj, dict) or len(obj) != 1:
        raise CorruptArchive(f"{where} is not a one-member JSON object: {_short(obj)}")
    [(kind, value)] = obj.items()
    return kind, value


def _kind_name(kind: type) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer", bool: "a bool"}
    return names.get(kind, kind.__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True, slots=True)
class _Payload:
    """One tensor of a payload config: a strided view of a raw storage entry."""

    entry: str
    dtype: int
    sizes: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int


class ExportArchive:
    """The program ``model`` of a torch.export archive; its tensors are read on demand.

    Opening it checks the layout, parses the program and both payload configs and refuses
    every entry torch would have to unpickle, load or evaluate; no tensor bytes are read yet.
    """

    def __init__(self, data: bytes, limits: ArchiveLimits) -> None:
        try:
            self._zip = zipfile.ZipFile(io.BytesIO(data))
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
            raise CorruptArchive(f"the zip archive is truncated or damaged: {exc}") from exc
        self._root, self._entries = _entries(self._zip)
        self._check_layout()
        program = self._json(MODEL)
        if not isinstance(program, dict):
            raise CorruptArchive(f"{MODEL} is not a JSON object")
        check_expressions(program, MODEL)
        self.program: dict[str, Any] = program
        self._payloads = {folder: self._config(folder) for folder in _CONFIGS}
        self._limit = limits.max_unpacked_bytes
        #: What the tensors read so far leave of the unpacked size limit, as float32.
        self._budget = limits.max_unpacked_bytes
        self._storages: dict[str, bytes] = {}

    def has(self, folder: str, name: str) -> bool:
        return name in self._payloads[folder]

    def tensor(self, folder: str, name: str) -> np.ndarray:
        """The tensor ``name`` of the ``folder`` config (:data:`WEIGHTS` or :data:`CONSTANTS`)
        as float32, as ``torch.as_strided`` over its storage entry would give it."""
        payload = self._payloads[folder].get(name)
        if payload is None:
            raise CorruptArchive(f"the program reads '{name}', which {_CONFIGS[folder]} lacks")
        where = f"'{name}' ({payload.entry})"
        numel = math.prod(payload.sizes)
        if numel * 4 > self._budget:
            raise CorruptArchive(
                f"{where}: {payload.sizes} is {numel} elements; the archive's tensors would "
                "take more than the unpacked size limit"
            )
        self._budget -= numel * 4
        if payload.entry not in self._storages:
            self._storages[payload.entry] = self._read(payload.entry, self._limit)
        return _decode(self._storages[payload.entry], payload, numel, where)

    def _check_layout(self) -> None:
        for name in ("archive_format", "archive_version", MODEL):
            if name not in self._entries:
                raise CorruptArchive(f"the torch.export archive has no {name}")
        if self._read("archive_format", 16) != b"pt2":
            raise CorruptArchive("archive_format is not 'pt2'")
        version = self._read("archive_version", 16)
        if version != b"0":
            raise CorruptArchive(f"archive version {_short(version)} is not 0 (torch 2.13's)")
        for name in self._entries:
            if name in _LEGACY_PICKLES:
                raise UnsafeArchive(
                    f"{self._root}{name} is a pickled state dict (the legacy export format), "
                    "which torch.export.load would unpickle; save the model again with "
                    "torch.export.save"
                )
            if name.startswith(_AOTINDUCTOR):
                raise UnsafeArchive(
                    f"{self._root}{name} is AOTInductor code, which torch.export.load would "
                    "load and run; specklab reads only the exported program"
                )
            if name.startswith("models/") and name != MODEL:
                raise UnsafeArchive(
                    f"{self._root}{name}: a second program, which torch.export.load would "
                    "load with its pickled inputs; specklab reads archives of one program "
                    "(models/model.json, as torch.export.save writes)"
                )

    def _read(self, name: str, limit: int) -> bytes:
        info = self._entries[name]
        if info.file_size > limit:
            raise CorruptArchive(
                f"{self._root}{name} unpacks to {info.file_size} bytes, over the limit of {limit}"
            )
        try:
            return self._zip.read(info)
        except Exception as exc:  # BadZipFile, zlib.error, EOFError, ... for a damaged entry
            raise CorruptArchive(f"{self._root}{name} cannot be unpacked: {exc}") from exc

    def _json(self, name: str) -> Any:
        raw = self._read(name, MAX_JSON_BYTES)
        try:
            return json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise CorruptArchive(f"{self._root}{name} is not valid JSON: {exc}") from exc

    def _config(self, folder: str) -> dict[str, _Payload]:
        name = _CONFIGS[folder]
        if name not in self._entries:
            raise CorruptArchive(f"the torch.export archive has no {name}")
        config = member(self._json(name), "config", dict, name)
        return {key: self._payload(folder, key, meta) for key, meta in config.items()}

    def _payload(self, folder: str, key: str, meta: Any) -> _Payload:
        where = f"{_CONFIGS[folder]} '{key}'"
        path = member(meta, "path_name", str, where)
        if folder == CONSTANTS and path.startswith(_PICKLED_OBJECTS):
            raise UnsafeArchive(
                f"{where} is a pickled Python object ({folder}{path}), which torch.export.load "
                "would unpickle; specklab reads tensors only"
            )
        if member(meta, "use_pickle", bool, where):
            raise UnsafeArchive(
                f"{where} is stored as a pickle ({folder}{path}), which torch.export.load "
                "would unpickle with torch.load(weights_only=False); specklab reads raw "
                "tensors only"
            )
        if not _PLAIN_NAME.fullmatch(path) or ".." in path:
            raise UnsafeArchive(
                f"{where}: path_name {_short(path)} is not a file name in {folder} "
                "(a '/', '\\', '..' or absolute path reaches other entries)"
            )
        if folder == CONSTANTS and not path.startswith(_TENSOR_CONSTANT):
            raise CorruptArchive(f"{where}: {path} is not a tensor constant entry (tensor_<n>)")
        if folder + path not in self._entries:
            raise CorruptArchive(f"{where} names {folder}{path}, which the archive lacks")
        tensor = member(meta, "tensor_meta", dict, where)
        dtype = member(tensor, "dtype", int, where)
        if dtype not in _DTYPES:
            known = ", ".join(name for _, name in _DTYPES.values())
            raise CorruptArchive(f"{where}: dtype {dtype} is not one of {known}")
        sizes = _ints(member(tensor, "sizes", list, where), f"{where} sizes")
        strides = _ints(member(tensor, "strides", list, where), f"{where} strides")
        [offset] = _ints([member(tensor, "storage_offset", dict, where)], f"{where} offset")
        if len(sizes) > MAX_DIMS or len(strides) != len(sizes):
            raise CorruptArchive(
                f"{where}: {len(sizes)} sizes and {len(strides)} strides "
                f"(at most {MAX_DIMS}, as many strides as sizes)"
            )
        return _Payload(folder + path, dtype, sizes, strides, offset)


def _entries(archive: zipfile.ZipFile) -> tuple[str, dict[str, zipfile.ZipInfo]]:
    """The archive's top folder (``"archive/"``) and its entries by name below it."""
    infos = archive.infolist()
    roots = {info.filename.split("/", 1)[0] for info in infos}
    if len(roots) != 1:
        raise CorruptArchive("a torch.export archive has one top folder")
    root = roots.pop() + "/"
    return root, {i.filename[len(root) :]: i for i in infos if i.filename.startswith(root)}


def _ints(items: list[Any], where: str) -> tuple[int, ...]:
    """Serialized ``SymInt`` sizes that must be plain non-negative integers."""
    values = []
    for item in items:
        kind, value = union(item, where)
        if kind != "as_int" or not is_int(value) or value < 0:
            raise CorruptArchive(f"{where}: {_short(item)} is not a non-negative integer")
        values.append(value)
    return tuple(values)


def _decode(raw: bytes, payload: _Payload, numel: int, where: str) -> np.ndarray:
    code, _ = _DTYPES[payload.dtype]
    itemsize = np.dtype(code).itemsize
    if len(raw) % itemsize:
        raise CorruptArchive(f"{where}: {len(raw)} bytes is not a whole number of elements")
    if numel == 0:
        return np.zeros(payload.sizes, np.float32)
    count = len(raw) // itemsize
    steps = list(zip(payload.sizes, payload.strides, strict=True))
    last = payload.offset + sum((n - 1) * s for n, s in steps)
    if last >= count:
        raise CorruptArchive(
            f"{where}: sizes {list(payload.sizes)}, strides {list(payload.strides)} and offset "
            f"{payload.offset} reach element {last}; the entry holds {count}"
        )
    storage = np.frombuffer(raw, dtype=code, count=count)[payload.offset :]
    # a dimension of size 1 never steps: its stride may be anything, even beyond numpy's range
    strides = [0 if n == 1 else s * itemsize for n, s in steps]
    view = np.lib.stride_tricks.as_strided(
        storage, shape=payload.sizes, strides=strides, writeable=False
    )
    if payload.dtype == _BFLOAT16:  # the upper half of a float32
        return (view.astype(np.uint32) << 16).view(np.float32)
    return view.astype(np.float32)


def check_expressions(document: Any, where: str) -> None:
    """Refuse any shape expression (``expr_str``) that is not plain arithmetic on sizes:
    torch's loader hands them to ``sympy.sympify``, which calls ``eval``."""
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            expression = value.get("expr_str")
            if expression is not None:
                _check_expression(expression, where)
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)


def _check_expression(expression: Any, where: str) -> None:
    if not isinstance(expression, str):
        raise CorruptArchive(f"{where}: a shape expression is not a string: {_short(expression)}")
    position = 0
    while position < len(expression):
        token = _EXPR_TOKEN.match(expression, position)
        name = token.group("name") if token else None
        allowed = name is None or name in _EXPR_FUNCTIONS or _EXPR_SYMBOL.fullmatch(name)
        if token is None or not allowed:
            raise UnsafeArchive(
                f"{where}: the shape expression {_short(expression)} is not arithmetic on "
                "sizes; torch.export.load would evaluate it as Python code (sympy.sympify)"
            )
        position = token.end()
