"""The WebSocket frame codec: one binary message = one msgpack map.

Every frame has ``v`` (protocol version) and ``type``. Event batches carry their events as one
msgpack ``bin`` holding the packed structured array, with the dtype's signature beside it so
that a sender with another layout is refused instead of misread. Decoding is zero-copy
(``np.frombuffer`` over the bytes msgpack hands out). Nothing here ever unpickles or builds
object arrays: a frame is plain data or it is refused with :class:`FrameError`.

Frame layouts (all keys are strings)::

    events   {v, type: "events", kind: "spike"|"dvs"|"readout", dtype: str, bin: bytes, seq?: int}
    end      {v, type: "end", seq?: int, counts?: {str: int}}
    control  {v, type: "control", op: str, args?: {str: any}}
    error    {v, type: "error", code: str, message: str, fatal?: bool, detail?: any}
    stats    {v, type: "stats", counters: {str: int|float}}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

import msgpack
import numpy as np

from .errors import DomainError
from .events import DTYPES, SIGNATURES, EventKind

PROTOCOL_VERSION: Final = 1
#: Default largest frame a peer accepts (64 MiB, about 4.8 M spikes).
MAX_FRAME_BYTES: Final = 64 * 1024 * 1024
#: Largest WebSocket message the daemon's transport reads: a little above MAX_FRAME_BYTES, so
#: that a frame slightly too large is answered with a ``too_large`` error frame (and the
#: stream goes on) instead of the transport's close 1009.
MAX_MESSAGE_BYTES: Final = MAX_FRAME_BYTES + 16 * 1024 * 1024
#: Messages of at least this many bytes decode their events payload as a view of the message.
VIEW_PAYLOAD_BYTES: Final = 64 * 1024
#: Bytes of a message read for the entries before its payload (keys and small values).
_HEAD_BYTES: Final = 4096
#: msgpack's ``bin`` markers and how many bytes their length takes.
_BIN_SIZE_BYTES: Final = {0xC4: 1, 0xC5: 2, 0xC6: 4}


class FrameError(DomainError, ValueError):
    """A frame that cannot be encoded or decoded. ``code`` is stable and machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(400, code, message)


@dataclass(frozen=True, slots=True)
class EventsFrame:
    kind: EventKind
    events: np.ndarray
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class EndFrame:
    """Closes a forward batch: every output event the batch caused has been sent."""

    seq: int | None = None
    counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ControlFrame:
    op: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    code: str
    message: str
    fatal: bool = False
    #: Plain data for programs, as in REST error bodies (e.g. ``next_free`` of a booking).
    detail: Any = None


@dataclass(frozen=True, slots=True)
class StatsFrame:
    counters: Mapping[str, int | float]


Frame = EventsFrame | EndFrame | ControlFrame | ErrorFrame | StatsFrame
#: One message as the buffers it is made of, in order (:func:`encode_parts`).
MessageParts: TypeAlias = tuple[bytes] | tuple[bytes, memoryview]


def encode(frame: Frame) -> bytes:
    """Encode one frame to the bytes of one binary WebSocket message."""
    return b"".join(encode_parts(frame))


def encode_parts(frame: Frame) -> MessageParts:
    """One frame's message in the parts it is made of: the msgpack head and, for an events
    frame, the events' bytes as a view of their array (not copied). Joined, the parts are
    :func:`encode`'s message; a transport that writes them one after the other sends it
    without copying the events (``server/transport.py``)."""
    if isinstance(frame, EventsFrame):
        body = _events_body(frame)
    elif isinstance(frame, EndFrame):
        body = {"type": "end", "counts": dict(frame.counts)}
        if frame.seq is not None:
            body["seq"] = frame.seq
    elif isinstance(frame, ControlFrame):
        body = {"type": "control", "op": frame.op, "args": dict(frame.args)}
    elif isinstance(frame, ErrorFrame):
        body = {"type": "error", "code": frame.code, "message": frame.message, "fatal": frame.fatal}
        if frame.detail is not None:
            body["detail"] = frame.detail
    elif isinstance(frame, StatsFrame):
        body = {"type": "stats", "counters": dict(frame.counters)}
    else:
        raise FrameError("unknown_type", f"cannot encode {type(frame).__name__} as a frame")
    body["v"] = PROTOCOL_VERSION
    payload = body.pop("bin", None)
    try:
        head: bytes = msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError) as exc:
        raise FrameError("malformed", f"frame holds a value msgpack cannot encode: {exc}") from exc
    if payload is None:
        return (head,)
    return _with_bin_entry(head, len(body), len(payload)), payload


def _with_bin_entry(head: bytes, entries: int, size: int) -> bytes:
    """A packed fixmap with one more entry, ``bin``, whose ``size`` bytes are to follow.

    msgpack's packer grows its buffer while copying large ``bin`` values, which made it the
    slowest step of encoding an event batch; writing the header ourselves avoids that, and
    leaves the payload where it is.
    """
    if head[0] != 0x80 | entries or entries >= 15:
        raise AssertionError("events frames are small fixmaps")
    if size < 1 << 8:
        bin_header = bytes((0xC4, size))
    elif size < 1 << 16:
        bin_header = b"\xc5" + size.to_bytes(2, "big")
    else:
        bin_header = b"\xc6" + size.to_bytes(4, "big")
    return b"".join((bytes((0x80 | (entries + 1),)), head[1:], b"\xa3bin", bin_header))


def _events_body(frame: EventsFrame) -> dict[str, Any]:
    kind = _kind(frame.kind)
    events = frame.events
    if not isinstance(events, np.ndarray) or events.dtype != DTYPES[kind]:
        got = getattr(events, "dtype", type(events).__name__)
        raise FrameError(
            "bad_dtype", f"{kind.value} events must have dtype {SIGNATURES[kind]}, got {got}"
        )
    if events.ndim != 1:
        raise FrameError("bad_payload", f"events must be a 1-d array, got shape {events.shape}")
    payload = np.ascontiguousarray(events).data.cast("B")
    body: dict[str, Any] = {
        "type": "events",
        "kind": kind.value,
        "dtype": SIGNATURES[kind],
        "bin": payload,
    }
    if frame.seq is not None:
        body["seq"] = frame.seq
    return body


def decode(data: bytes | bytearray | memoryview, *, max_bytes: int = MAX_FRAME_BYTES) -> Frame:
    """Decode one binary WebSocket message. Raises :class:`FrameError` for anything malformed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FrameError("malformed", "frames are binary messages (msgpack), not text")
    if len(data) > max_bytes:
        raise FrameError("too_large", f"frame of {len(data)} bytes exceeds the {max_bytes} limit")
    body = _with_payload_view(data, max_bytes) if isinstance(data, bytes) else None
    if body is None:
        try:
            body = msgpack.unpackb(data, **_unpack_options(max_bytes))
        except FrameError:
            raise
        except Exception as exc:  # msgpack raises several unrelated types for bad input
            raise FrameError("malformed", f"not a valid msgpack frame: {exc}") from exc
    if not isinstance(body, dict):
        raise FrameError("malformed", f"a frame is a msgpack map, got {type(body).__name__}")
    version = body.get("v")
    if version != PROTOCOL_VERSION:
        raise FrameError(
            "unsupported_version",
            f"protocol version {version!r} is not supported (this side speaks {PROTOCOL_VERSION})",
        )
    frame_type = body.get("type")
    decoder = _DECODERS.get(frame_type) if isinstance(frame_type, str) else None
    if decoder is None:
        raise FrameError(
            "unknown_type",
            f"unknown frame type {frame_type!r}; expected one of {', '.join(sorted(_DECODERS))}",
        )
    return decoder(body)


def _unpack_options(max_bytes: int) -> dict[str, Any]:
    return {
        "raw": False,
        "strict_map_key": True,
        "ext_hook": _refuse_ext,
        "timestamp": 0,
        "max_bin_len": max_bytes,
        "max_str_len": 1 << 20,
    }


def _with_payload_view(data: bytes, max_bytes: int) -> dict[str, Any] | None:
    """A large message's map with its ``bin`` value as a view of ``data`` (immutable bytes), or
    None when the message is small or not a map laid out for that: ``decode`` then unpacks it
    whole, which also names what is wrong with it.

    msgpack copies a ``bin`` value into a bytes object of its own: for an events frame, a fresh
    allocation of the payload's size, written and faulted in on the daemon's event loop at every
    batch. Here msgpack reads everything but the payload (the map with that value emptied), so
    the outcome is the one of unpacking ``data`` whole, without the copy.
    """
    if len(data) < VIEW_PAYLOAD_BYTES:
        return None
    options = _unpack_options(max_bytes)
    view = memoryview(data)
    try:
        head = msgpack.Unpacker(**options)
        head.feed(view[:_HEAD_BYTES])
        entries = head.read_map_header()
        while head.unpack() != "bin":
            head.skip()
        start = head.tell()
        size_bytes = _BIN_SIZE_BYTES[data[start]]
        payload_start = start + 1 + size_bytes
        end = payload_start + int.from_bytes(view[start + 1 : payload_start], "big")
        if end > len(data):
            return None
        body = msgpack.unpackb(b"".join((view[:start], b"\xc4\x00", view[end:])), **options)
    except Exception:  # not laid out as expected, or malformed: unpacked whole
        return None
    if not isinstance(body, dict) or len(body) != entries or body["bin"] != b"":
        return None  # a key twice: unpacking whole says which value counts
    body["bin"] = view[payload_start:end]
    return body


def _refuse_ext(code: int, data: bytes) -> Any:
    raise FrameError("malformed", f"msgpack extension type {code} is not allowed in frames")


def _kind(value: Any) -> EventKind:
    try:
        return EventKind(value)
    except ValueError:
        kinds = ", ".join(k.value for k in EventKind)
        raise FrameError("bad_dtype", f"unknown event kind {value!r}; expected {kinds}") from None


def _field(
    body: dict[str, Any], name: str, types: type | tuple[type, ...], required: bool = True
) -> Any:
    value = body.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        value = None  # msgpack bools are ints to isinstance; refuse them where ints are asked
    if not isinstance(value, types):
        expected = (
            types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
        )
        raise FrameError(
            "malformed", f"{body['type']} frame field {name!r} must be {expected}, got {value!r}"
        )
    return value


def _decode_events(body: dict[str, Any]) -> EventsFrame:
    kind = _kind(body.get("kind"))
    signature = body.get("dtype")
    if signature != SIGNATURES[kind]:
        raise FrameError(
            "bad_dtype",
            f"{kind.value} events must have dtype {SIGNATURES[kind]}, frame says {signature!r}",
        )
    payload = body.get("bin")
    if not isinstance(payload, memoryview):  # large payloads are views already
        payload = _field(body, "bin", bytes)
    dtype = DTYPES[kind]
    if len(payload) % dtype.itemsize:
        raise FrameError(
            "bad_payload",
            f"{kind.value} payload of {len(payload)} bytes is not a whole number of "
            f"{dtype.itemsize}-byte events (truncated?)",
        )
    events = np.frombuffer(payload, dtype=dtype)
    return EventsFrame(kind=kind, events=events, seq=_field(body, "seq", int, required=False))


def _decode_end(body: dict[str, Any]) -> EndFrame:
    counts = _field(body, "counts", dict, required=False) or {}
    return EndFrame(seq=_field(body, "seq", int, required=False), counts=counts)


def _decode_control(body: dict[str, Any]) -> ControlFrame:
    args = _field(body, "args", dict, required=False) or {}
    return ControlFrame(op=_field(body, "op", str), args=args)


def _decode_error(body: dict[str, Any]) -> ErrorFrame:
    fatal = _field(body, "fatal", bool, required=False) or False
    return ErrorFrame(
        code=_field(body, "code", str),
        message=_field(body, "message", str),
        fatal=fatal,
        detail=body.get("detail"),
    )


def _decode_stats(body: dict[str, Any]) -> StatsFrame:
    counters = _field(body, "counters", dict)
    for name, value in counters.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FrameError("malformed", f"stats counter {name!r} must be a number, got {value!r}")
    return StatsFrame(counters=counters)


_DECODERS: dict[str, Callable[[dict[str, Any]], Frame]] = {
    "events": _decode_events,
    "end": _decode_end,
    "control": _decode_control,
    "error": _decode_error,
    "stats": _decode_stats,
}
