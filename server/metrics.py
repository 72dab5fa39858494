"""Prometheus metrics, served at ``/metrics`` in the text format.

Two kinds:

- process-wide counters and histograms, updated where things happen (events into and out of
  devices, dropped outputs, compiles, request latency); ``PROCESS`` holds them;
- gauges read from the app's state at scrape time (devices and their state, bookings, active
  streams, compile queue), so they cannot drift from what they describe.

Routes are labelled by their template (``/v1/bookings/{booking_id}``), never the raw path:
raw paths would make a series per id (and carry ids into the monitoring system).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .storage import Database, utcnow
from .storage.tables import Booking, BookingState

if TYPE_CHECKING:
    from fastapi import FastAPI

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PROCESS = CollectorRegistry(auto_describe=True)

EVENTS_IN = Counter(
    "specklab_device_events_in",
    "Events written to devices (spikes and DVS, all consumers).",
    registry=PROCESS,
)
EVENTS_OUT = Counter("specklab_device_events_out", "Events read from devices.", registry=PROCESS)
EVENTS_DROPPED = Counter(
    "specklab_events_dropped",
    "Device outputs dropped for a consumer that fell behind its bound.",
    registry=PROCESS,
)
COMPILES_IN_FLIGHT = Gauge(
    "specklab_compile_queue_length",
    "Compiles asked for and not finished (waiting for a worker or running).",
    registry=PROCESS,
)
COMPILE_SECONDS = Histogram(
    "specklab_compile_duration_seconds",
    "Wall time of compiles (waiting for a worker included), cache misses only.",
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
    registry=PROCESS,
)
REQUEST_SECONDS = Histogram(
    "specklab_http_request_duration_seconds",
    "REST request latency, by method, route template and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=PROCESS,
)


@contextmanager
def compiling() -> Iterator[None]:
    """Around one compile: the queue gauge and the duration histogram."""
    COMPILES_IN_FLIGHT.inc()
    started = time.perf_counter()
    try:
        yield
    finally:
        COMPILES_IN_FLIGHT.dec()
        COMPILE_SECONDS.observe(time.perf_counter() - started)


class AppCollector(Collector):
    """Gauges read from one app's state when scraped."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self.app.state
        devices = GaugeMetricFamily(
            "specklab_devices",
            "Devices of this daemon by type and state (online, busy: a deployment holds it).",
            labels=["device_type", "state"],
        )
        counts: dict[tuple[str, str], int] = {}
        manager = getattr(state, "devices", None)
        for device in manager.states() if manager is not None else []:
            key = "offline" if not device.online else "busy" if device.busy else "idle"
            counts[(device.description.type, key)] = (
                counts.get((device.description.type, key), 0) + 1
            )
        for (device_type, key), count in sorted(counts.items()):
            devices.add_metric([device_type, key], count)
        yield devices
        streams = GaugeMetricFamily("specklab_active_streams", "WebSocket connections open now.")
        streams.add_metric([], getattr(state, "open_websockets", 0))
        yield streams
        db = getattr(state, "db", None)
        if db is not None:
            bookings = GaugeMetricFamily(
                "specklab_bookings",
                "Active bookings of the lab (all hosts) that have not ended, by status.",
                labels=["status"],
            )
            for status, count in _open_bookings(db).items():
                bookings.add_metric([status], count)
            yield bookings


def _open_bookings(db: Database) -> dict[str, int]:
    now = utcnow()
    running = case((Booking.starts_at <= now, "running"), else_="upcoming")
    with db.session() as session:
        rows = session.execute(
            select(running, func.count())
            .where(Booking.state == BookingState.ACTIVE, Booking.ends_at > now)
            .group_by(running)
        ).all()
    return {"upcoming": 0, "running": 0, **{status: count for status, count in rows}}


def render(app: FastAPI) -> bytes:
    registry: Any = app.state.metrics_registry
    return generate_latest(PROCESS) + generate_latest(registry)


class MetricsMiddleware:
    """Times every HTTP request by route template and counts open WebSockets (pure ASGI, so
    streamed responses and WebSockets pass through untouched)."""

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        self.state = state
        state.open_websockets = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            self.state.open_websockets += 1
            try:
                await self.app(scope, receive, send)
            finally:
                self.state.open_websockets -= 1
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            REQUEST_SECONDS.labels(scope["method"], _route(scope), str(status)).observe(
                time.perf_counter() - started
            )


def _route(scope: Scope) -> str:
    """The matched route's template; one label for every path no route matched."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"
