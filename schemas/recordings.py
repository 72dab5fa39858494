"""REST bodies of recordings: event streams captured from a device and stored by the daemon."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from .events import EventKind

RecordingSource = Literal["dvs", "monitor"]


class RecordingRequest(BaseModel):
    device_id: str
    duration_s: float = Field(gt=0, le=3600)
    #: "dvs": the sensor's raw events; "monitor": the monitored layers' spikes of the deployment.
    source: RecordingSource = "dvs"
    name: str = Field(default="", max_length=200)


class Recording(BaseModel):
    id: int
    name: str
    owner: str
    device_id: str
    source: RecordingSource
    kind: EventKind
    created_at: datetime
    duration_s: float
    event_count: int
    size_bytes: int


class ReplayRequest(BaseModel):
    device_id: str
    #: Replay speed: 1 is real time.
    speed: float = Field(default=1.0, gt=0, le=1000)
