"""REST bodies of uploaded models."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from .compile import CompileOptions, CompileReport


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
