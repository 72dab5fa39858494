"""``GET /v1/lab/overview``: what a lab watcher sees at a glance and the dashboard's Lab page
draws: every booking of every device in a time window (whoever holds it; the device list
already names each running booking's holder), and what runs on this host's devices."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..api.deps import CurrentUser, DatabaseDep, DeploymentsDep, ManagerDep
from ..storage import utcnow
from ..storage.tables import Booking, BookingState

router = APIRouter(prefix="/v1/lab", tags=["lab"])

#: The timeline shows at most a week.
MAX_HOURS = 7 * 24


class TimelineBooking(BaseModel):
    id: int
    device_id: str
    user_name: str
    starts_at: datetime
    ends_at: datetime
    #: The caller's own booking (they may extend or cancel it).
    mine: bool


class DeploymentView(BaseModel):
    device_id: str
    owner: str
    model_id: int | None
    summary: str
    monitored: list[int]
    #: Consumers of the device's output right now (streams, DVS views, recordings, spectators):
    #: spectators see frames while this is above zero.
    consumers: int


class LabOverview(BaseModel):
    now: datetime
    start: datetime
    end: datetime
    bookings: list[TimelineBooking]
    deployments: list[DeploymentView]


@router.get("/overview", response_model=LabOverview)
async def overview(
    user: CurrentUser,
    db: DatabaseDep,
    manager: ManagerDep,
    deployments: DeploymentsDep,
    start: AwareDatetime | None = None,
    hours: Annotated[int, Query(ge=1, le=MAX_HOURS)] = 24,
) -> LabOverview:
    """Active bookings overlapping ``[start, start + hours)`` (default: from now), oldest first."""
    now = utcnow()
    begin = start or now
    end = begin + timedelta(hours=hours)

    def bookings(session: Session) -> list[TimelineBooking]:
        rows = session.scalars(
            select(Booking)
            .where(
                Booking.state == BookingState.ACTIVE,
                Booking.starts_at < end,
                Booking.ends_at > begin,
            )
            .order_by(Booking.starts_at, Booking.id)
        )
        return [
            TimelineBooking(
                id=b.id,
                device_id=b.device_id,
                user_name=b.user.name,
                starts_at=b.starts_at,
                ends_at=b.ends_at,
                mine=b.user_id == user.id,
            )
            for b in rows
        ]

    running = []
    for state in manager.states():
        hub = deployments.live_hub(state.description.id)
        if hub is not None:
            running.append(
                DeploymentView(
                    device_id=hub.device_id,
                    owner=hub.deployment.owner,
                    model_id=hub.deployment.model_id,
                    summary=hub.deployment.summary,
                    monitored=hub.deployment.monitored,
                    consumers=hub.stats()["consumers"],
                )
            )
    return LabOverview(
        now=now, start=begin, end=end, bookings=await db.run(bookings), deployments=running
    )
