r"""Every way a compile can fail: :class:`~specklab.schemas.errors.DomainError`\ s whose class
sets a stable ``code`` (for clients) and the HTTP ``status`` (for the REST layer)::

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
        │                        on the wire: model_does_not_fit 422, its code as the reason
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

from typing import Any

from specklab.schemas.api import ErrorBody
from specklab.schemas.compile import CompileReport, Problem
from specklab.schemas.errors import DomainError
from specklab.schemas.models import DoesNotFit


class CompileError(DomainError):
    code = "compile_error"
    status = 400

    def __init__(
        self,
        message: str,
        *,
        detail: Any = None,
        problems: list[Problem] | None = None,
        report: CompileReport | None = None,
    ) -> None:
        super().__init__(self.status, self.code, message, detail)
        self.problems = problems or []
        self.report = report


class InputError(CompileError):
    code = "input_error"


class UploadTooLarge(InputError):
    code = "upload_too_large"
    status = 413


class UnknownFormat(InputError):
    code = "unknown_format"
    status = 415


class CorruptArchive(InputError):
    code = "corrupt_archive"


class UnsafeArchive(InputError):
    code = "unsafe_archive"


class ArchiveBomb(InputError):
    code = "archive_bomb"
    status = 413


class WorkerError(InputError):
    code = "worker_error"
    status = 500


class CompileTimeout(WorkerError):
    code = "compile_timeout"
    status = 504


class ResourceLimit(WorkerError):
    code = "resource_limit"
    status = 413


class WorkerCrashed(WorkerError):
    code = "worker_crashed"


class ModelError(CompileError):
    code = "model_error"
    status = 422

    @property
    def body(self) -> ErrorBody:
        # Clients tell one failure apart, "does not fit", and read which from the reason.
        detail = DoesNotFit(reason=self.code, problems=self.problems, report=self.report)
        return ErrorBody(
            code="model_does_not_fit", message=self.message, detail=detail.model_dump(mode="json")
        )


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
