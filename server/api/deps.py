"""``Annotated`` dependency aliases for route signatures (FastAPI full-stack-template style).

::

    @router.post("/things")
    def create(body: ThingCreate, session: SessionDep, user: WriterUser) -> ThingPublic: ...

Every router but ``meta`` already requires a valid token (the app adds ``require_user`` when it
includes them); ``CurrentUser`` hands the caller to the handler, ``WriterUser`` refuses
observers, ``AdminUser`` refuses everyone but admins.
"""

from __future__ import annotations

from typing import Annotated, Any

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


def _state(name: str) -> Any:
    """A dependency on ``app.state.<name>``, one of the services the lifespans set up."""

    def service(conn: HTTPConnection) -> Any:
        return getattr(conn.app.state, name)

    return Depends(service)


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
SettingsDep = Annotated[Settings, _state("settings")]
PolicyDep = Annotated[BookingPolicy, _state("booking_policy")]
EventsDep = Annotated[BookingEvents, _state("booking_events")]
ManagerDep = Annotated[DeviceManager, _state("devices")]
ModelsDep = Annotated[ModelService, _state("models")]
DeploymentsDep = Annotated[Deployments, _state("deployments")]
RecordingsDep = Annotated[RecordingService, _state("recordings")]
DatasetsDep = Annotated[DatasetService, _state("datasets")]
JobsDep = Annotated[JobService, _state("jobs")]
