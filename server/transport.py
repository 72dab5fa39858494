"""The daemon's WebSocket transport: uvicorn's ``websockets-sansio`` protocol, with large binary
messages moved with fewer copies.

A 2.6 MB event batch used to be copied by the WebSocket layer three times on its way in (the
socket's chunks into the reader's buffer, the message out of that buffer, the unmasking) and
three or four times on its way out (into the library's frame buffer, out of it, and the part
the socket did not take at once, sliced and then buffered by asyncio): about a third of the
event loop's time per batch (py-spy, ``docs/streams.md``). Here:

- in: a message that fills the reader's buffer exactly (the usual case: a client sends a batch
  and waits for its answer) is handed over as that buffer instead of being copied out of it;
  the unmasking then makes the one copy the message needs;
- out: a large binary message is written to the transport as the frame's few header bytes and
  then the message itself, without the library's serialising copy; asyncio copies only what
  the socket does not take at once. An application may also hand a message over in its parts
  (the :data:`SEND_PARTS` extension): an events frame's msgpack head and its events, which
  then go from the simulator's output array to the socket without being joined first.

The WebSocket protocol itself (handshake, parsing, control frames, closing) is the library's,
unchanged; small messages take its usual path.
"""

from __future__ import annotations

import struct
from collections.abc import Generator, Mapping, Sequence
from typing import Any, cast

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State
from websockets.streams import StreamReader

#: Messages from this size on take the paths above; below it, copies cost less than the calls.
LARGE_MESSAGE_BYTES = 64 * 1024
#: The ASGI extension, in a WebSocket scope's ``extensions``, by which this transport takes a
#: binary message as the buffers it is made of, written in order and never joined:
#: ``{"type": "websocket.send", "bytes": None, SEND_PARTS: (head, payload)}``.
SEND_PARTS = "specklab.websocket.send_parts"
_Buffers = Sequence[bytes | bytearray | memoryview]
#: First byte of an unfragmented binary frame (FIN, opcode 2).
_FIN_BINARY = 0x82


class _HandingReader(StreamReader):
    """A stream reader that hands over its whole buffer when a read asks for all of it."""

    def read_exact(self, n: int) -> Generator[None, None, bytearray]:
        if n < LARGE_MESSAGE_BYTES:
            return (yield from super().read_exact(n))
        while len(self.buffer) < n:
            if self.eof:
                return (yield from super().read_exact(n))  # raises the library's EOFError
            yield
        if len(self.buffer) > n:
            return (yield from super().read_exact(n))
        data, self.buffer = self.buffer, bytearray()
        return data


def binary_frame_header(size: int) -> bytes:
    """The header of an unmasked (server-sent), unfragmented binary frame of ``size`` bytes."""
    if size < 126:
        return struct.pack("!BB", _FIN_BINARY, size)
    if size < 1 << 16:
        return struct.pack("!BBH", _FIN_BINARY, 126, size)
    return struct.pack("!BBQ", _FIN_BINARY, 127, size)


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol with the two paths above (``ws=`` of its config)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The library's parser holds bound methods of this reader from its start (the
        # handshake's), so the reader is changed in place rather than replaced.
        self.conn.reader.__class__ = _HandingReader

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response.status_code == 101:
            self.scope["extensions"][SEND_PARTS] = {}

    async def send(self, message: ASGISendEvent) -> None:
        parts = _binary_parts(message)
        if parts is None:
            await super().send(message)
            return
        size = sum(map(len, parts))
        if size < LARGE_MESSAGE_BYTES:
            await super().send(_joined(message, parts))
            return
        await self.writable.wait()
        if not self._sends_data():
            # The library's path says what is wrong (a client gone: ClientDisconnected).
            await super().send(_joined(message, parts))
            return
        # Small parts go with the header in one write; large ones as they are.
        pending: list[bytes | bytearray | memoryview] = [binary_frame_header(size)]
        for part in parts:
            if len(part) < LARGE_MESSAGE_BYTES:
                pending.append(part)
                continue
            self.transport.write(b"".join(pending))
            self.transport.write(memoryview(part))
            pending = []
        if pending:
            self.transport.write(b"".join(pending))

    def _sends_data(self) -> bool:
        """Whether the library would send a data frame now (the checks of its ``send_binary``)."""
        return (
            not self.transport.is_closing()
            and self.handshake_complete
            and not self.close_sent
            and self.initial_response is None
            and self.conn.state is State.OPEN
            and not self.conn.expect_continuation_frame
        )


def _binary_parts(message: ASGISendEvent) -> _Buffers | None:
    """A binary data message's buffers, or None for any other message."""
    if message["type"] != "websocket.send":
        return None
    fields = cast(Mapping[str, Any], message)
    parts = fields.get(SEND_PARTS)
    if parts is not None:
        return cast(_Buffers, parts)
    data = fields.get("bytes")
    return (data,) if isinstance(data, bytes | bytearray | memoryview) else None


def _joined(message: ASGISendEvent, parts: _Buffers) -> ASGISendEvent:
    """``message`` as the library takes it: its bytes in one object."""
    if SEND_PARTS not in cast(Mapping[str, Any], message):
        return message
    return {"type": "websocket.send", "bytes": b"".join(parts)}
