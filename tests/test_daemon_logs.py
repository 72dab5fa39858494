"""No secret reaches a log line: not the access log's full paths, not headers, not errors."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from specklab.server.logs import REDACTED, JsonFormatter, RedactingFormatter, redact, redact_also

from .daemon import run_daemon

ADMIN_TOKEN = "a-configured-admin-secret-of-any-shape"


def test_a_real_daemons_log_never_shows_a_token(tmp_path: Path) -> None:
    with run_daemon(
        tmp_path / "data", env={"SPECKLAB_ADMIN_TOKEN": ADMIN_TOKEN, "SPECKLAB_VIRTUAL": "none"}
    ) as daemon:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        user = httpx.post(f"{daemon.url}/v1/users", json={"name": "alice"}, headers=admin).json()
        made = httpx.post(
            f"{daemon.url}/v1/tokens", json={"name": "t", "user_id": user["id"]}, headers=admin
        ).json()
        token = made["token"]
        # In the query string (as browsers' WebSockets must), first and not first.
        assert httpx.get(f"{daemon.url}/v1/users/me?token={token}").status_code == 200
        assert httpx.get(f"{daemon.url}/v1/bookings?current=true&token={token}").status_code == 200
        assert httpx.get(f"{daemon.url}/v1/users/me?token={ADMIN_TOKEN}").status_code == 200
        # Wrong ones are secrets too (a typo of the real one).
        assert httpx.get(f"{daemon.url}/v1/users/me?token=spk_wrongwrongwrong").status_code == 401
        daemon.stop()
    log = daemon.log()
    assert "GET /v1/users/me?token=" + REDACTED in log  # the access log still says what ran
    for secret in (token, token[len("spk_") :], ADMIN_TOKEN, "spk_wrongwrongwrong"):
        assert secret not in log


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ('127.0.0.1:5 - "GET /v1/streams/x?token=abc.def-1 HTTP/1.1" 101', "abc.def-1"),
        ("GET /v1/x?a=1&TOKEN=s3cr3t&b=2", "s3cr3t"),
        ("headers: {'authorization': 'Bearer opaque-value'}", "opaque-value"),
        ("a token spk_AbC-_123 in an error message", "AbC-_123"),
    ],
)
def test_redact_takes_out_every_form_of_secret(line: str, secret: str) -> None:
    assert secret not in redact(line)
    assert REDACTED in redact(line)


def test_json_lines_and_tracebacks_are_redacted_too() -> None:
    redact_also("registered-secret-0123456789")
    formatter = RedactingFormatter(JsonFormatter())
    try:
        raise RuntimeError("failed with registered-secret-0123456789")
    except RuntimeError:
        import sys

        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "path %s", ("/a?token=zzz",), sys.exc_info()
        )
    line = formatter.format(record)
    assert "registered-secret" not in line and "zzz" not in line
