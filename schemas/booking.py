"""Bookings and leases: REST bodies shared by the daemon and the client."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator


class BookingStatus(StrEnum):
    UPCOMING = "upcoming"
    RUNNING = "running"
    #: Ran to its end.
    FINISHED = "finished"
    #: Cancelled before it started.
    CANCELLED = "cancelled"
    #: Ended early by its owner.
    RELEASED = "released"
    #: Ended early by an admin.
    PREEMPTED = "preempted"
    #: Ended early because its holder left it unused for the daemon's idle time.
    EXPIRED = "expired"


class BookingCreate(BaseModel):
    """Book ``device_id`` for a window, or the earliest free slot of any ``device_type``.

    The window starts at ``starts_at`` (default: now) and lasts ``minutes`` or until ``ends_at``.
    With ``device_type`` the daemon picks the device that is free soonest at or after the start;
    when every device of the type is busy then, it refuses (409 ``booking_conflict`` with the
    next free time) unless ``next_free`` asks for that later slot.
    """

    model_config = ConfigDict(extra="forbid")

    device_id: str | None = Field(default=None, min_length=1, max_length=128)
    device_type: str | None = Field(default=None, min_length=1, max_length=64)
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    minutes: int | None = Field(default=None, ge=1)
    #: Booking a type: take the earliest later slot when none is free at the start; the booking
    #: then starts earlier, on the first device of the type that frees before that slot.
    next_free: bool = False

    @model_validator(mode="after")
    def _one_of_each(self) -> Self:
        if (self.device_id is None) == (self.device_type is None):
            raise ValueError("give exactly one of device_id and device_type")
        if (self.ends_at is None) == (self.minutes is None):
            raise ValueError("give exactly one of ends_at and minutes")
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class BookingExtend(BaseModel):
    """Move a booking's end later, by ``minutes`` or to ``ends_at``."""

    model_config = ConfigDict(extra="forbid")

    minutes: int | None = Field(default=None, ge=1)
    ends_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.ends_at is None) == (self.minutes is None):
            raise ValueError("give exactly one of ends_at and minutes")
        return self


class BookingPreempt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=200)


class BookingPublic(BaseModel):
    id: int
    device_id: str
    user_id: int
    user_name: str
    starts_at: datetime
    ends_at: datetime
    status: BookingStatus
    created_at: datetime
    #: When a booking that ended early stopped (cancel, release, preemption, expiry).
    ended_at: datetime | None
    #: Why it is over, in words ("released by its holder", "preempted by root: maintenance",
    #: "idle for 30 minutes", "its window is over"); ``None`` while upcoming or running.
    end_reason: str | None = None
    #: The holder's last use (deploy, stream, heartbeat, a call naming the booking).
    last_used_at: datetime | None = None
    #: While running: when the booking is released as idle unless its holder uses it before.
    lease_expires_at: datetime | None
    #: Booked by type for the next free slot: the type whose first device to free early
    #: starts this booking at once, on that device (``None`` once it started or moved).
    waits_for_type: str | None = None


class LeasePublic(BaseModel):
    booking_id: int
    renewed_at: datetime
    #: When the booking is released as idle without another use.
    expires_at: datetime


class BookingSummary(BaseModel):
    """The booking holding a device now, as device listings show it."""

    id: int
    user_name: str
    starts_at: datetime
    ends_at: datetime


class ConflictDetail(BaseModel):
    """``detail`` of a 409 ``booking_conflict``: when the device can be had instead."""

    device_id: str
    #: The earliest start at which the requested length fits on this device.
    next_free: datetime
    #: For an extension: the latest end the booking can be extended to.
    free_until: datetime | None = None
