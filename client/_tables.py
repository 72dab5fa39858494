"""Plain-text tables for terminals: the CLI's listings and the compile report."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple | list):
        return ", ".join(cell(v) for v in value) or "-"
    return str(value)


def shape(values: Sequence[int]) -> str:
    """``(32, 4, 4)`` as ``32x4x4``."""
    return "x".join(str(v) for v in values)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns, two spaces apart, under an upper-case header line."""
    text = [[cell(value) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [[h.upper() for h in headers], *text]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )
