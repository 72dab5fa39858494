"""A model compiled by the daemon, as the client hands it out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from specklab.schemas.compile import CompileOptions, CompileReport
from specklab.schemas.models import ModelInfo
from specklab.schemas.render import report_table


@dataclass(frozen=True, slots=True)
class RemoteModel:
    """An uploaded, compiled model: pass it (or its ``id``) to ``deploy``."""

    info: ModelInfo

    @property
    def id(self) -> int:
        return self.info.id

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def format(self) -> str:
        return self.info.format

    @property
    def owner(self) -> str:
        return self.info.owner

    @property
    def created_at(self) -> datetime:
        return self.info.created_at

    @property
    def options(self) -> CompileOptions:
        return self.info.options

    @property
    def report(self) -> CompileReport:
        return self.info.report

    def report_table(self) -> str:
        """The compile report as a table: each layer's core, shapes, memory; then problems."""
        return report_table(self.info.report)

    def __repr__(self) -> str:
        layers = len(self.report.layers)
        return f"<RemoteModel {self.id} {self.name!r} ({self.format}, {layers} layers)>"
