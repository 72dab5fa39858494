"""What operators watch: Prometheus metrics, health that checks what it names, liveness, and
503s for new work once the daemon is stopping."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine
from starlette.websockets import WebSocketDisconnect

from specklab.server.api import meta
from specklab.server.draining import CLOSE_DAEMON_STOPPING, begin_shutdown

from .db_fixtures import add_devices
from .lab_client import Lab, bearer, running_lab

DEVICE = "speck2fdevkit:0"


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of the Prometheus text ``text``, or None."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        found = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if found is None or found[1] != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', found[2] or ""))
        if have == labels:
            return float(found[3])
    return None


def test_metrics_count_bookings_and_time_requests_by_route_template(lab: Lab) -> None:
    add_devices(lab.db, (DEVICE, "speck2fdevkit"))
    _, token = lab.add_user("alice")
    alice = bearer(token)
    booking = lab.client.post(
        "/v1/bookings", json={"device_id": DEVICE, "minutes": 10}, headers=alice
    ).json()
    for _ in range(3):
        assert lab.client.get(f"/v1/bookings/{booking['id']}", headers=alice).status_code == 200
    response = lab.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert _sample(text, "specklab_bookings", status="running") == 1
    assert _sample(text, "specklab_bookings", status="upcoming") == 0
    route = "/v1/bookings/{booking_id}"
    count = _sample(
        text,
        "specklab_http_request_duration_seconds_count",
        method="GET",
        route=route,
        status="200",
    )
    assert count is not None and count >= 3
    assert f'/v1/bookings/{booking["id"]}"' not in text  # never the raw path
    for name in (
        "specklab_device_events_in_total",
        "specklab_device_events_out_total",
        "specklab_events_dropped_total",
        "specklab_compile_queue_length",
        "specklab_active_streams",
    ):
        assert _sample(text, name) is not None, name


def test_metrics_token_guards_metrics_when_set(tmp_path: Path, database_url: str) -> None:
    secret = "metrics-secret-0123456789"
    with running_lab(tmp_path, database_url, metrics_token=secret) as lab:
        refused = lab.client.get("/metrics")
        assert (refused.status_code, refused.json()["code"]) == (401, "unauthorized")
        assert lab.client.get("/metrics", headers=lab.admin).status_code == 401
        assert lab.client.get("/metrics", headers=bearer(secret)).status_code == 200


def test_devices_metrics_and_health_follow_the_device_threads(
    tmp_path: Path, database_url: str
) -> None:
    with running_lab(tmp_path, database_url, virtual=["speck2fdevkit=1"]) as lab:
        metrics = lab.client.get("/metrics").text
        device = {"device_type": "speck2fdevkit", "state": "idle"}
        assert _sample(metrics, "specklab_devices", **device) == 1
        health = lab.client.get("/v1/health")
        assert health.status_code == 200, health.text
        body = health.json()
        assert body["status"] == "ok"
        assert {name: check["ok"] for name, check in body["checks"].items()} == {
            "database": True,
            "devices": True,
            "compile_pool": True,
        }
        # A device thread that stops is reported (the device stays listed online).
        manager = lab.app.state.devices
        thread = manager._entries["virtual-speck2fdevkit:0@test-host"].thread
        thread.shutdown()
        deadline = time.monotonic() + 30
        while thread.alive and time.monotonic() < deadline:
            time.sleep(0.01)
        failing = lab.client.get("/v1/health")
        assert failing.status_code == 503
        assert failing.json()["status"] == "failing"
        assert "virtual-speck2fdevkit:0" in failing.json()["checks"]["devices"]["detail"]
        assert lab.client.get("/v1/health/live").status_code == 200


def test_health_fails_when_the_database_does_not_answer(lab: Lab) -> None:
    unreachable = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    real, lab.db.engine = lab.db.engine, unreachable
    try:
        response = lab.client.get("/v1/health")
    finally:
        lab.db.engine = real
    assert response.status_code == 503
    assert response.json()["checks"]["database"]["ok"] is False
    assert lab.client.get("/v1/health/live").json() == {"status": "ok", "checks": {}}


def test_a_compile_pool_with_a_dead_worker_is_reported() -> None:
    live = subprocess.Popen(["sleep", "30"])
    zombie = subprocess.Popen(["true"])
    while meta._process_alive(zombie.pid):  # exits at once, never reaped: a zombie
        time.sleep(0.01)
    try:
        state = SimpleNamespace(models=SimpleNamespace(started_pool=None))
        assert meta._compile_pool(state).ok
        state.models.started_pool = SimpleNamespace(pids=[live.pid])
        assert meta._compile_pool(state).ok
        state.models.started_pool = SimpleNamespace(pids=[live.pid, zombie.pid])
        check = meta._compile_pool(state)
        assert (check.ok, check.detail) == (False, "1 of 2 workers gone")
    finally:
        live.kill()
        live.wait()
        zombie.wait()


def test_once_stopping_new_work_gets_503_daemon_stopping(lab: Lab) -> None:
    begin_shutdown(lab.app.state)
    for method, path in (("GET", "/v1/users/me"), ("POST", "/v1/bookings"), ("GET", "/docs")):
        response = lab.client.request(method, path, headers=lab.admin, json={})
        assert response.status_code == 503, path
        assert response.json() == {
            "code": "daemon_stopping",
            "message": "the daemon is shutting down; try again shortly",
            "detail": None,
        }
        assert response.headers["retry-after"] == "5"
    assert lab.client.get("/v1/health/live").status_code == 200
    assert lab.client.get("/metrics").status_code == 200
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        lab.client.websocket_connect(f"/v1/devices/{DEVICE}/stream", headers=lab.admin) as ws,
    ):
        ws.receive_bytes()
    assert closed.value.code == CLOSE_DAEMON_STOPPING
