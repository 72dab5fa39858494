"""Recordings: events captured from a device, stored as ``.npy`` files, exported, replayed."""

from .service import RecordingService

__all__ = ["RecordingService"]
