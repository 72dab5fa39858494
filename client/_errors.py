"""Every error the client raises, as one tree. Third-party errors are translated at the edge.

::

    SpecklabError
    ├── ClientClosed            the client (or a stream) was closed and cannot be used again
    ├── TransportError          the daemon could not be reached or the connection broke
    │   └── Timeout             the daemon did not answer in time
    ├── ProtocolError           the daemon sent something this client cannot read (bad frame)
    ├── WaitTimeout             a booking did not start within ``timeout`` (it was cancelled)
    ├── StreamError             an ``error`` frame on an event stream (``fatal`` ends the stream)
    └── ApiError                an error response: ``status``, ``code``, ``message``, ``detail``
        ├── AuthenticationError 401: no token, or an unknown, expired or revoked one
        ├── PermissionDenied    403: the token's user may not do this
        ├── NotFound            404: no such device, model, booking or recording
        ├── Conflict            409: the request clashes with the state of things
        │   └── BookingConflict the slot is taken, or the device is not yours now; ``next_free``
        ├── InvalidRequest      400 / 413 / 415 / 422: the request itself is wrong
        │   └── ModelDoesNotFit 422 ``model_does_not_fit``: the compile ``report`` says why
        ├── DeviceError         the device failed or cannot serve now (``device_*`` codes)
        │   ├── DeviceOffline   ``device_offline``: unplugged or vanished
        │   └── DeviceBusy      ``device_busy``: another deployment holds it
        └── ServerError         5xx: the daemon failed; its log says more

    SpecklabWarning (a UserWarning, issued with ``warnings.warn``)
        what works but not as one may expect: a compile report's warnings (weights that
        quantize to zero, biases that need a slow clock), a deployment's
"""

from __future__ import annotations

import warnings
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from specklab.schemas.api import ErrorBody
from specklab.schemas.booking import ConflictDetail
from specklab.schemas.compile import CompileReport, Problem


class SpecklabError(Exception):
    """Base of every error this package raises."""


class SpecklabWarning(UserWarning):
    """A compile report's or a deployment's warning: the call worked, but the network may not
    behave as trained (filter with ``warnings.simplefilter("error", SpecklabWarning)``)."""


def warn_all(messages: list[str]) -> None:
    # stacklevel 1: the call chain through the operation generators has no user frame at a
    # fixed depth; the message itself says where the problem is.
    for message in messages:
        warnings.warn(message, SpecklabWarning, stacklevel=1)


class ClientClosed(SpecklabError):
    """The client, or a stream, was closed; make a new one."""


class TransportError(SpecklabError):
    """The daemon could not be reached, or the connection broke."""


class Timeout(TransportError):
    """The daemon did not answer in time."""


class ProtocolError(SpecklabError):
    """The daemon sent something this client cannot read (a bad frame or body)."""


class WaitTimeout(SpecklabError):
    """A booking waited for (``book(..., wait=True, timeout=...)``) did not start in time;
    the booking was cancelled."""


class StreamError(SpecklabError):
    """An ``error`` frame. A fatal one (booking ended, device unplugged) closed the stream."""

    def __init__(self, code: str, message: str, *, fatal: bool) -> None:
        super().__init__(f"{message} [{code}{', fatal' if fatal else ''}]")
        self.code = code
        self.message = message
        self.fatal = fatal


class ApiError(SpecklabError):
    """An error response of the REST API; ``message`` is the daemon's own words."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None) -> None:
        super().__init__(f"{message} [{status} {code}]")
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail


class AuthenticationError(ApiError):
    """401: no token, or an unknown, expired or revoked one."""


class PermissionDenied(ApiError):
    """403: the token's user may not do this (not an admin, an observer ...)."""


class NotFound(ApiError):
    """404: no such device, model, booking, recording or deployment."""


class Conflict(ApiError):
    """409: the request clashes with the state of things (e.g. nothing deployed)."""


class BookingConflict(Conflict):
    """The slot is taken (``booking_conflict``), or the device is someone else's now
    (``device_booked``) or nobody's (``not_booked``). ``next_free`` is when it can be had."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None) -> None:
        super().__init__(status, code, message, detail)
        try:
            conflict: ConflictDetail | None = ConflictDetail.model_validate(detail)
        except ValidationError:
            conflict = None
        self.device_id: str | None = conflict.device_id if conflict else None
        self.next_free: datetime | None = conflict.next_free if conflict else None
        #: For an extension: the latest end the booking can be extended to.
        self.free_until: datetime | None = conflict.free_until if conflict else None


class InvalidRequest(ApiError):
    """400 / 413 / 415 / 422: the request itself is wrong; ``message`` says how."""


class ModelDoesNotFit(InvalidRequest):
    """The compiler could not fit the model on the chip: ``problems`` say why, ``report`` (when
    the compiler got that far) shows the whole network (:func:`~specklab.client.report_table`).
    """

    def __init__(self, status: int, code: str, message: str, detail: Any = None) -> None:
        super().__init__(status, code, message, detail)
        # The daemon sends {reason, problems, report}; a bare report is read as well.
        wrapped = detail if isinstance(detail, dict) and "report" in detail else {"report": detail}
        #: The compiler's reason code (e.g. ``hardware_limit``), when the daemon gives one.
        self.reason: str | None = wrapped.get("reason")
        self.report: CompileReport | None = _parsed(CompileReport, wrapped["report"])
        problems = _parsed(list[Problem], wrapped.get("problems"))
        self.problems: list[Problem] = problems or (self.report.problems if self.report else [])


class DeviceError(ApiError):
    """The device failed or cannot serve now (a ``device_*`` code)."""


class DeviceOffline(DeviceError):
    """The device is unplugged, or vanished."""


class DeviceBusy(DeviceError):
    """Another deployment holds the device."""


class ServerError(ApiError):
    """5xx: the daemon failed; its log says more."""


def _parsed(model: Any, value: Any) -> Any:
    """``value`` as ``model``, or None when it is missing or not of that shape."""
    try:
        return None if value is None else TypeAdapter(model).validate_python(value)
    except ValidationError:
        return None


_BY_CODE: dict[str, type[ApiError]] = {
    "booking_conflict": BookingConflict,
    "device_booked": BookingConflict,
    "not_booked": BookingConflict,
    "model_does_not_fit": ModelDoesNotFit,
    "device_offline": DeviceOffline,
    "device_busy": DeviceBusy,
    "device_not_found": NotFound,
}
_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
}


def api_error(status: int, body: ErrorBody) -> ApiError:
    """The typed exception for an error response."""
    cls = _BY_CODE.get(body.code)
    if cls is None and body.code.startswith("device_"):
        cls = DeviceError
    if cls is None:
        cls = _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    return cls(status, body.code, body.message, body.detail)
