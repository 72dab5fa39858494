"""The one error the daemon's services raise, framework-free: a stable ``code``, the HTTP
``status`` a REST answer carries, a human ``message``, an optional ``detail`` and optional
response ``headers`` (``Retry-After``, ``WWW-Authenticate``).

It lives in ``schemas`` because two of its families (patches and frames) are shared with the
client; the REST handler and the stream-frame mapper that render it are in
``specklab.server.api.errors``, the only place that knows HTTP or WebSockets::

    DomainError                    raised as is by services for one-off refusals
    ├── PatchError                 invalid_patch   422  (schemas/patch.py)
    ├── FrameError                 its code        400  (schemas/frames.py)
    ├── DeviceError                its code, status     (server/devices/errors.py)
    ├── CompileError               its code, status     (server/compiler/errors.py)
    ├── BookingRuleError           its code        422/409 (server/booking/rules.py)
    └── ExportFailed               export_failed   500  (server/recordings/aedat.py)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .api import ErrorBody


class DomainError(Exception):
    #: Defaults of a family whose members set them as class attributes.
    code: str = "error"
    status: int = 500

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = dict(headers) if headers else None

    @property
    def body(self) -> ErrorBody:
        """The error as the wire carries it (a REST body, a stream's error frame)."""
        return ErrorBody(code=self.code, message=self.message, detail=self.detail)
