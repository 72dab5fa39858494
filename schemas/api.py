"""REST bodies shared by the daemon and the client."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every error response: a stable machine-readable ``code`` and a human ``message``."""

    code: str
    message: str
    detail: Any = None


class HealthCheck(BaseModel):
    ok: bool
    detail: str = ""


class Health(BaseModel):
    """``status``: ``ok``, ``failing`` (a check failed: answered with 503) or ``stopping``."""

    status: str = "ok"
    checks: dict[str, HealthCheck] = Field(default_factory=dict)


class Version(BaseModel):
    specklab: str
    python: str
    numpy: str
    torch: str | None
    samna: str
    #: Each layer of the compile workers' sandbox and whether it is on (docs/security.md).
    compile_sandbox: dict[str, bool] = {}
