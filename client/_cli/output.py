"""What a command prints on success: tables for people, JSON with ``--json``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any


def emit(args: argparse.Namespace, value: Any, table: Callable[[], str]) -> None:
    """Print ``value`` as JSON with ``--json``, else the human table."""
    if args.json:
        print(json.dumps(jsonable(value), indent=2))
    else:
        print(table())


def jsonable(value: Any) -> Any:
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


def booking_rows(bookings: Sequence[Any]) -> str:
    from specklab.schemas.render import format_table

    now = datetime.now(UTC)
    headers = ("id", "device", "user", "starts", "ends", "status", "lease")
    rows = [
        (b.id, b.device_id, b.user_name, b.starts_at, b.ends_at, b.status, _lease(b, now))
        for b in bookings
    ]
    return format_table(headers, rows)


def _lease(booking: Any, now: datetime) -> str:
    """A running booking's use and time to its idle release; why an ended one ended."""
    if booking.status == "running" and booking.lease_expires_at is not None:
        used = f"used {_span(now - booking.last_used_at)} ago" if booking.last_used_at else "unused"
        return f"{used}, idle release in {_span(booking.lease_expires_at - now)}"
    return booking.end_reason or "-"


def _span(length: timedelta) -> str:
    seconds = max(0, round(length.total_seconds()))
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min"


def recording_rows(recordings: Sequence[Any]) -> str:
    from specklab.schemas.render import format_table

    headers = ("id", "name", "device", "source", "created", "seconds", "events", "bytes")
    rows = [
        (
            r.id,
            r.name,
            r.device_id,
            r.source,
            r.created_at,
            r.duration_s,
            r.event_count,
            r.size_bytes,
        )
        for r in recordings
    ]
    return format_table(headers, rows)


def deployment_rows(deployments: Sequence[Any]) -> str:
    from specklab.schemas.render import format_table

    headers = ("device", "model", "owner", "deployed", "monitored", "summary")
    rows = [
        (d.device_id, d.model_id, d.owner, d.deployed_at, d.monitored, d.summary)
        for d in deployments
    ]
    return format_table(headers, rows)
