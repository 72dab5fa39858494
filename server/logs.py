"""Structured logs: one JSON object per line (or plain text for a terminal), secrets redacted.

Every line goes through :func:`redact` after formatting, exception text included: API tokens
(``spk_...``), ``token=`` query parameters (the access log writes full paths), bearer
credentials, and secrets registered with :func:`redact_also` (the configured admin token, which
need not look like a generated one).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from specklab.schemas.accounts import TOKEN_PREFIX

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}
REDACTED = "[redacted]"
_PATTERNS = (
    # ?token=... or &token=... up to the next parameter, quote or space.
    re.compile(r"(?i)([?&;]token=)[^&\s\"']+"),
    re.compile(r"(?i)(bearer\s+)[^\s\"',]+"),
    re.compile(rf"({re.escape(TOKEN_PREFIX)})[A-Za-z0-9_\-]+"),
)
_extra_secrets: set[str] = set()


def redact_also(secret: str) -> None:
    """Redact ``secret`` from every log line from now on (empty: nothing)."""
    if secret:
        _extra_secrets.add(secret)


def redact(text: str) -> str:
    for secret in _extra_secrets:
        text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(rf"\g<1>{REDACTED}", text)
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class RedactingFormatter(logging.Formatter):
    """``inner``'s line with every secret taken out."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        inner: logging.Formatter = JsonFormatter()
    else:
        inner = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(RedactingFormatter(inner))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
