"""The model compiler: TorchScript / torch.export / NIR models -> a Speck chip configuration.

One entry point, :func:`compile_model` (or :meth:`CompilerPool.compile` with a long-lived
pool): it reads the upload in an isolated worker process and returns a :class:`CompileResult`
(``config``: :class:`~specklab.schemas.chipconfig.ChipConfig`, ``report``:
:class:`~specklab.schemas.compile.CompileReport`), or raises a :class:`CompileError`.
:func:`compile_graph` compiles a :class:`LayerGraph` already in memory, in process.
See ``docs/compiler.md``.
"""

from .archive import ArchiveLimits
from .errors import (
    ArchiveBomb,
    CompileError,
    CompileTimeout,
    CorruptArchive,
    HardwareLimit,
    IllegalSequence,
    InputError,
    InvalidOptions,
    ModelError,
    PlacementFailed,
    QuantizationError,
    ResourceLimit,
    ShapeMismatch,
    UnknownFormat,
    UnsafeArchive,
    UnsupportedLayer,
    UploadTooLarge,
    WorkerCrashed,
    WorkerError,
)
from .graph import LayerGraph
from .pipeline import CompileResult, compile_graph
from .pool import CompilerPool, WorkerLimits, compile_model

__all__ = [
    "ArchiveBomb",
    "ArchiveLimits",
    "CompileError",
    "CompileResult",
    "CompileTimeout",
    "CompilerPool",
    "CorruptArchive",
    "HardwareLimit",
    "IllegalSequence",
    "InputError",
    "InvalidOptions",
    "LayerGraph",
    "ModelError",
    "PlacementFailed",
    "QuantizationError",
    "ResourceLimit",
    "ShapeMismatch",
    "UnknownFormat",
    "UnsafeArchive",
    "UnsupportedLayer",
    "UploadTooLarge",
    "WorkerCrashed",
    "WorkerError",
    "WorkerLimits",
    "compile_graph",
    "compile_model",
]
