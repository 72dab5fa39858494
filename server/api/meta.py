"""Health, liveness, version and metrics: the only endpoints that need no API token.

``/v1/health`` checks what it names (the database answers, every device thread runs, the
compiler pool's workers are alive) and answers 503 when one fails or the daemon is stopping;
``/v1/health/live`` only says the process answers HTTP (for restarts, not routing).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path

import anyio
import numpy as np
from fastapi import APIRouter, Request, Response
from sqlalchemy import text

from specklab.schemas.api import Health, HealthCheck, Version
from specklab.schemas.errors import DomainError

from ..compiler.sandbox import LAYERS, missing_layers
from ..devices.samna_probe import probe_samna
from ..draining import is_stopping
from ..metrics import CONTENT_TYPE, render
from ..storage import Database

router = APIRouter(prefix="/v1", tags=["meta"])
#: ``/metrics`` sits outside ``/v1``, where Prometheus looks by default.
metrics_router = APIRouter(tags=["meta"])
#: The database must answer ``SELECT 1`` within this.
DATABASE_TIMEOUT_S = 2.0


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "a check failed, or the daemon is stopping"}},
)
async def health(request: Request, response: Response) -> Health:
    state = request.app.state
    checks = {
        "database": await _database(state.db),
        "devices": _devices(state),
        "compile_pool": _compile_pool(state),
    }
    status = "ok" if all(check.ok for check in checks.values()) else "failing"
    if is_stopping(state):
        status = "stopping"
    if status != "ok":
        response.status_code = 503
    return Health(status=status, checks=checks)


@router.get("/health/live", response_model=Health)
async def live() -> Health:
    return Health()


async def _database(db: Database) -> HealthCheck:
    def ping() -> None:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    try:
        with anyio.fail_after(DATABASE_TIMEOUT_S):
            await anyio.to_thread.run_sync(ping, abandon_on_cancel=True)
    except TimeoutError:
        return HealthCheck(ok=False, detail=f"no answer within {DATABASE_TIMEOUT_S:g} s")
    except Exception as exc:  # the check reports any failure, whatever its kind
        return HealthCheck(ok=False, detail=f"{type(exc).__name__}: {exc}"[:300])
    return HealthCheck(ok=True, detail=db.engine.dialect.name)


def _devices(state: object) -> HealthCheck:
    manager = state.devices  # type: ignore[attr-defined]
    dead = manager.dead_threads()
    if dead:
        return HealthCheck(ok=False, detail=f"device threads stopped: {', '.join(dead)}")
    online = sum(device.online for device in manager.states())
    return HealthCheck(ok=True, detail=f"{online} online, every device thread running")


def _compile_pool(state: object) -> HealthCheck:
    pool = state.models.started_pool  # type: ignore[attr-defined]
    if pool is None:
        return HealthCheck(ok=True, detail="not started (the first upload starts it)")
    pids = pool.pids
    dead = [pid for pid in pids if not _process_alive(pid)]
    if dead or not pids:
        return HealthCheck(ok=False, detail=f"{len(dead)} of {len(pids)} workers gone")
    return HealthCheck(ok=True, detail=f"{len(pids)} workers")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    # A zombie still answers kill(0): its state letter follows the name in parentheses.
    return not stat.exists() or stat.read_text().rpartition(")")[2].split()[0] != "Z"


@metrics_router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
)
def metrics(request: Request) -> Response:
    """Prometheus metrics. Without ``metrics_token`` set, anyone who reaches the daemon may
    read them (counts only: no user, token or device id); with it, only that bearer."""
    expected = request.app.state.settings.metrics_token.get_secret_value()
    if expected and request.headers.get("authorization") != f"Bearer {expected}":
        raise DomainError(
            401,
            "unauthorized",
            "/metrics needs 'Authorization: Bearer <metrics_token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Response(render(request.app), media_type=CONTENT_TYPE)


@router.get("/version", response_model=Version)
def version() -> Version:  # on a worker thread: the metadata lookups and kernel probes
    missing = missing_layers()
    return Version(
        specklab=_installed_version("specklab") or "unknown",
        python=platform.python_version(),
        numpy=np.__version__,
        # Read from metadata: importing torch would cost seconds and memory in the daemon.
        torch=_installed_version("torch"),
        samna=probe_samna().describe(),
        compile_sandbox={layer: layer not in missing for layer in LAYERS},
    )
