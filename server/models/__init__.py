"""Uploaded models: stored once by content, compiled once per set of options."""

from .service import ModelService

__all__ = ["ModelService"]
