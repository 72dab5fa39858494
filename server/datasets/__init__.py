"""Labelled event datasets for evaluation jobs: formats, upload, storage."""

from .service import DatasetLimits, DatasetService

__all__ = ["DatasetLimits", "DatasetService"]
