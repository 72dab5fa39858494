"""The daemon's WebSocket transport: large messages take its short paths, and arrive as the
library's own path would deliver them."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader
from websockets.sync.client import connect

from specklab.schemas.events import DTYPES, EventKind
from specklab.schemas.frames import EventsFrame, encode_parts
from specklab.server import transport
from specklab.server.transport import (
    LARGE_MESSAGE_BYTES,
    SEND_PARTS,
    WebSocketProtocol,
    binary_frame_header,
)

from .daemon import free_port


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 3_000_000])
def test_the_frame_header_is_the_librarys(size: int) -> None:
    payload = bytes(size)
    assert binary_frame_header(size) + payload == Frame(Opcode.BINARY, payload).serialize(
        mask=False
    )


async def _echo(websocket: WebSocket) -> None:
    """Sends every message back, then a memoryview of it (a bytes-like message too)."""
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message["bytes"]
        await websocket.send_bytes(data)
        await websocket.send_bytes(memoryview(data)[1:])  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    port = free_port()
    app = Starlette(routes=[WebSocketRoute("/echo", _echo)])
    config = uvicorn.Config(
        app, port=port, ws=WebSocketProtocol, ws_max_size=64 << 20, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.01)
    yield f"ws://127.0.0.1:{port}/echo"
    server.should_exit = True
    thread.join(10)


def test_messages_of_every_size_cross_both_ways(echo_url: str) -> None:
    rng = np.random.default_rng(0)
    sizes = [1, 200, LARGE_MESSAGE_BYTES - 1, LARGE_MESSAGE_BYTES, 3_000_001, 70_000]
    with connect(echo_url, max_size=64 << 20, compression=None) as websocket:
        for size in sizes:
            data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
            websocket.send(data)
            assert websocket.recv() == data
            assert websocket.recv() == data[1:]


def test_a_message_arriving_with_the_next_one_is_split_right(echo_url: str) -> None:
    big, small = bytes(range(256)) * 1024, b"next"
    with connect(echo_url, max_size=64 << 20, compression=None) as websocket:
        websocket.send(big)
        websocket.send(small)  # likely in the reader's buffer with the end of ``big``
        assert [websocket.recv() for _ in range(4)] == [big, big[1:], small, small[1:]]


def test_the_reader_hands_over_a_buffer_it_fills_exactly() -> None:
    reader = StreamReader()
    reader.__class__ = transport._HandingReader
    data = bytes(LARGE_MESSAGE_BYTES)
    reader.feed_data(data)
    buffer = reader.buffer
    read = reader.read_exact(len(data))
    with pytest.raises(StopIteration) as done:
        next(read)
    assert done.value.value is buffer and reader.buffer == b""


class RecordingTransport(asyncio.Transport):
    """A socket transport that keeps what is written to it, as it was handed over."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes | bytearray | memoryview] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )


_HANDSHAKE = (
    b"GET /stream HTTP/1.1\r\nHost: lab\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def _sent_in_parts(parts: tuple[bytes, memoryview]) -> tuple[dict, RecordingTransport]:
    """Runs an app that sends one message in ``parts`` through the transport; the app's
    scope extensions, and the transport's writes after the handshake."""
    seen: dict = {}
    sent = asyncio.Event()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        seen.update(scope["extensions"])
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "bytes": None, SEND_PARTS: parts})
        sent.set()
        await receive()

    config = uvicorn.Config(app, ws=WebSocketProtocol, log_level="warning")
    config.load()
    protocol = WebSocketProtocol(config, ServerState(), {})
    recording = RecordingTransport()
    protocol.connection_made(recording)
    protocol.data_received(_HANDSHAKE)
    await asyncio.wait_for(sent.wait(), 5)
    handshake = recording.writes.pop(0)
    assert bytes(handshake).startswith(b"HTTP/1.1 101")
    protocol.connection_lost(None)
    return seen, recording


async def test_a_large_events_frame_in_parts_is_written_without_joining_them() -> None:
    events = np.arange(100_000 * DTYPES[EventKind.DVS].itemsize, dtype=np.uint8)
    head, payload = encode_parts(EventsFrame(EventKind.DVS, events.view(DTYPES[EventKind.DVS])))
    seen, recording = await _sent_in_parts((head, payload))
    assert SEND_PARTS in seen
    size = len(head) + events.nbytes
    assert len(recording.writes) == 2
    assert bytes(recording.writes[0]) == binary_frame_header(size) + head
    assert np.shares_memory(np.asarray(recording.writes[1]), events)
    wire = b"".join(map(bytes, recording.writes))
    assert wire == Frame(Opcode.BINARY, head + events.tobytes()).serialize(mask=False)


async def test_a_small_message_in_parts_is_sent_whole() -> None:
    _, recording = await _sent_in_parts((b"\x81\xa1a", memoryview(b"bcdef")))
    expected = Frame(Opcode.BINARY, b"\x81\xa1abcdef").serialize(mask=False)
    assert b"".join(map(bytes, recording.writes)) == expected
