"""Evaluation jobs: a compiled model run over a labelled dataset, in chunks, on the lab's
virtual devkits (``docs/jobs.md``)."""

from .service import JobService

__all__ = ["JobService"]
