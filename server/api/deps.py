"""``Annotated`` dependency aliases for route signatures (FastAPI full-stack-template style).

::

    @router.post("/things")
    def create(body: ThingCreate, session: SessionDep, user: WriterUser) -> ThingPublic: ...

Every router but ``meta`` already requires a valid token (the app adds ``require_user`` when it
includes them); ``CurrentUser`` hands the caller to the handler, ``WriterUser`` refuses
observers, ``AdminUser`` refuses everyone but admins.
"""

from __future__ import annotations

from typing import Annotated

from annotated_types import Interval
from fastapi import Depends
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from ..auth.dependencies import get_db, get_session, require_admin, require_user, require_writer
from ..auth.principal import Principal
from ..booking.notifications import BookingEvents
from ..booking.service import BookingPolicy
from ..datasets.service import DatasetService
from ..deployments import Deployments
from ..devices.manager import DeviceManager
from ..jobs.service import JobService
from ..models import ModelService
from ..recordings import RecordingService
from ..settings import Settings
from ..storage import Database


def _devices(conn: HTTPConnection) -> DeviceManager:
    return conn.app.state.devices


def _models(conn: HTTPConnection) -> ModelService:
    return conn.app.state.models


def _deployments(conn: HTTPConnection) -> Deployments:
    return conn.app.state.deployments


def _recordings(conn: HTTPConnection) -> RecordingService:
    return conn.app.state.recordings


def _datasets(conn: HTTPConnection) -> DatasetService:
    return conn.app.state.datasets


def _jobs(conn: HTTPConnection) -> JobService:
    return conn.app.state.jobs


def _settings(conn: HTTPConnection) -> Settings:
    return conn.app.state.settings


def _policy(conn: HTTPConnection) -> BookingPolicy:
    return conn.app.state.booking_policy


def _events(conn: HTTPConnection) -> BookingEvents:
    return conn.app.state.booking_events


#: A row id in a path or query: what the id columns hold (PostgreSQL's ``integer``), so an id
#: out of range is a 422 rather than an error from the database.
RowId = Annotated[int, Interval(ge=1, le=2**31 - 1)]
#: Closed when the handler returns, before the response is sent (no lock outlives a handler).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
#: For WebSocket handlers: open short sessions instead of holding one for the connection
#: (``db.session()`` to read, ``db.write_session()`` to write: it takes SQLite's lock first).
DatabaseDep = Annotated[Database, Depends(get_db)]
CurrentUser = Annotated[Principal, Depends(require_user)]
WriterUser = Annotated[Principal, Depends(require_writer)]
AdminUser = Annotated[Principal, Depends(require_admin)]
SettingsDep = Annotated[Settings, Depends(_settings)]
PolicyDep = Annotated[BookingPolicy, Depends(_policy)]
EventsDep = Annotated[BookingEvents, Depends(_events)]
ManagerDep = Annotated[DeviceManager, Depends(_devices)]
ModelsDep = Annotated[ModelService, Depends(_models)]
DeploymentsDep = Annotated[Deployments, Depends(_deployments)]
RecordingsDep = Annotated[RecordingService, Depends(_recordings)]
DatasetsDep = Annotated[DatasetService, Depends(_datasets)]
JobsDep = Annotated[JobService, Depends(_jobs)]
