"""The pool <-> worker wire format: a 4-byte big-endian length, then a msgpack map.

Plain data only (msgpack decodes to dicts, lists, numbers, strings and bytes; never objects).
"""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

import msgpack

HEADER = struct.Struct(">I")


def encode(message: dict[str, Any]) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return HEADER.pack(len(body)) + body


def write_message(stream: BinaryIO, message: dict[str, Any]) -> None:
    stream.write(encode(message))
    stream.flush()


def _read_exact(stream: BinaryIO, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_message(stream: BinaryIO) -> dict[str, Any] | None:
    header = _read_exact(stream, HEADER.size)
    if header is None:
        return None
    body = _read_exact(stream, HEADER.unpack(header)[0])
    if body is None:
        return None
    return msgpack.unpackb(body, raw=False)
