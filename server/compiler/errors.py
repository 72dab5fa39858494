"""Every way a compile can fail, each with a stable ``code`` (for clients) and a suggested
HTTP status (for the REST layer)::

    CompileError
    ├── InputError               the upload cannot be read (CLI exit 2)
    │   ├── UploadTooLarge       upload_too_large   413
    │   ├── UnknownFormat        unknown_format     415
    │   ├── CorruptArchive       corrupt_archive    400  truncated, damaged or unloadable
    │   ├── UnsafeArchive        unsafe_archive     400  would run code when loaded
    │   ├── ArchiveBomb          archive_bomb       413  unpacks to more than the limit
    │   └── WorkerError                                  the isolated worker gave up
    │       ├── CompileTimeout   compile_timeout    504
    │       ├── ResourceLimit    resource_limit     413  CPU time or memory limit hit
    │       └── WorkerCrashed    worker_crashed     500
    └── ModelError               read fine, cannot run on the chip (CLI exit 1); carries a report
        ├── UnsupportedLayer     unsupported_layer  422
        ├── IllegalSequence      illegal_sequence   422
        ├── ShapeMismatch        shape_mismatch     422
        ├── InvalidOptions       invalid_options    422
        ├── QuantizationError    quantization       422
        ├── HardwareLimit        hardware_limit     422
        └── PlacementFailed      no_placement       422

The worker sends errors to the daemon as ``(code, message, detail, report)``;
:func:`error_from_code` rebuilds the same class on the other side.
"""

from __future__ import annotations

from typing import Any, ClassVar

from specklab.schemas.compile import CompileReport, Problem


class CompileError(Exception):
    code: ClassVar[str] = "compile_error"
    http_status: ClassVar[int] = 400

    def __init__(
        self,
        message: str,
        *,
        detail: Any = None,
        problems: list[Problem] | None = None,
        report: CompileReport | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.problems = problems or []
        self.report = report


class InputError(CompileError):
    code = "input_error"


class UploadTooLarge(InputError):
    code = "upload_too_large"
    http_status = 413


class UnknownFormat(InputError):
    code = "unknown_format"
    http_status = 415


class CorruptArchive(InputError):
    code = "corrupt_archive"


class UnsafeArchive(InputError):
    code = "unsafe_archive"


class ArchiveBomb(InputError):
    code = "archive_bomb"
    http_status = 413


class WorkerError(InputError):
    code = "worker_error"
    http_status = 500


class CompileTimeout(WorkerError):
    code = "compile_timeout"
    http_status = 504


class ResourceLimit(WorkerError):
    code = "resource_limit"
    http_status = 413


class WorkerCrashed(WorkerError):
    code = "worker_crashed"


class ModelError(CompileError):
    code = "model_error"
    http_status = 422


class UnsupportedLayer(ModelError):
    code = "unsupported_layer"


class IllegalSequence(ModelError):
    code = "illegal_sequence"


class ShapeMismatch(ModelError):
    code = "shape_mismatch"


class InvalidOptions(ModelError):
    code = "invalid_options"


class QuantizationError(ModelError):
    code = "quantization"


class HardwareLimit(ModelError):
    code = "hardware_limit"


class PlacementFailed(ModelError):
    code = "no_placement"


def _all_subclasses(cls: type[CompileError]) -> list[type[CompileError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_subclasses(sub))
    return found


_BY_CODE: dict[str, type[CompileError]] = {c.code: c for c in _all_subclasses(CompileError)}


def error_from_code(
    code: str, message: str, detail: Any = None, report: CompileReport | None = None
) -> CompileError:
    """The error a worker reported, as the same class (unknown codes become WorkerCrashed)."""
    cls = _BY_CODE.get(code, WorkerCrashed)
    problems = report.errors if report is not None else None
    return cls(message, detail=detail, problems=problems, report=report)
