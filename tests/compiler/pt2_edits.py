"""Build altered torch.export archives from real ones, for the reader's and the hostile tests.

Entry names are relative to the archive's top folder (``models/model.json``), as torch names
them; JSON entries are edited by functions that change the parsed document in place.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

MODEL = "models/model.json"
WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
CONSTANTS_CONFIG = "data/constants/model_constants_config.json"

JsonEdit = Callable[[Any], None]


class Payload:
    """Unpickling this runs a shell command that creates ``marker``: a hostile upload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def edit(
    archive: bytes,
    *,
    json_edits: Mapping[str, JsonEdit] | None = None,
    replace: Mapping[str, bytes] | None = None,
    add: Mapping[str, bytes] | None = None,
    drop: frozenset[str] = frozenset(),
) -> bytes:
    """``archive`` with entries edited, replaced, added or dropped."""
    json_edits = json_edits or {}
    replace = replace or {}
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as source, zipfile.ZipFile(out, "w") as target:
        root = source.namelist()[0].split("/", 1)[0] + "/"
        for info in source.infolist():
            name = info.filename[len(root) :]
            if name in drop:
                continue
            data = replace.get(name, source.read(info))
            if name in json_edits:
                document = json.loads(data)
                json_edits[name](document)
                data = json.dumps(document).encode()
            target.writestr(info, data)
        for name, data in (add or {}).items():
            target.writestr(root + name, data)
    return out.getvalue()


def read_entry(archive: bytes, name: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(archive)) as source:
        root = source.namelist()[0].split("/", 1)[0] + "/"
        return source.read(root + name)


def tensor_meta(sizes: list[int], strides: list[int], offset: int = 0, dtype: int = 7) -> Any:
    """A serialized TensorMeta (dtype 7 is float32)."""
    return {
        "dtype": dtype,
        "sizes": [{"as_int": n} for n in sizes],
        "requires_grad": False,
        "device": {"type": "cpu", "index": None},
        "strides": [{"as_int": s} for s in strides],
        "storage_offset": {"as_int": offset},
        "layout": 7,
    }


def config_entry(path: str, meta: Any, *, use_pickle: bool = False) -> Any:
    return {"path_name": path, "is_param": False, "use_pickle": use_pickle, "tensor_meta": meta}


def set_config(name: str, entry: Any) -> JsonEdit:
    """An edit of a payload config that sets (adds or replaces) the entry ``name``."""

    def apply(document: Any) -> None:
        document["config"][name] = entry

    return apply


def graph(document: Any) -> Any:
    """The graph of a parsed ``models/model.json``."""
    return document["graph_module"]["graph"]
