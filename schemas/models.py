"""REST bodies of uploaded models."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from .compile import CompileOptions, CompileReport, Problem


class ModelInfo(BaseModel):
    id: int
    name: str
    owner: str
    #: sha256 of the uploaded file: the same upload is stored and compiled once.
    sha256: str
    format: str
    size_bytes: int
    created_at: datetime
    options: CompileOptions
    report: CompileReport


class DoesNotFit(BaseModel):
    """``detail`` of a 422 ``model_does_not_fit`` answer to an upload."""

    #: The compiler's error code: ``no_placement``, ``hardware_limit``, ``unsupported_layer``...
    reason: str
    #: The problems that stop the model, each naming its layer and the rule it breaks.
    problems: list[Problem]
    #: The full report, placement table included (None when compiling stopped before it).
    report: CompileReport | None


class CompileStatus(BaseModel):
    """Where an upload in flight is (``GET /v1/models/compiles/{id}``, the id the client sent
    in ``X-Compile-Id``)."""

    id: str
    #: ``waiting``: arriving, or waiting for an identical compile; ``queued``: in the compile
    #: queue; ``compiling``: a worker has it.
    state: Literal["waiting", "queued", "compiling"]
    #: Compiles that start before this one (0: it is next); None unless ``queued``.
    position: int | None
    #: Compiles queued in all, every user's (running ones not counted).
    queued: int
    #: Compiles that run at once.
    workers: int
