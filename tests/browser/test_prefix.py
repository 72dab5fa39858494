"""Behind a reverse proxy under a path prefix: the daemon's app mounted at ``/lab`` (what a
proxy forwarding ``/lab/...`` with ``root_path`` looks like to it); every request the pages
make, the live view's WebSocket included, stays under the prefix."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from specklab.server.app import create_app
from specklab.server.devices.naming import DeviceId, lab_id
from specklab.server.settings import Settings

from ..daemon import free_port
from ..lab_client import ADMIN_TOKEN
from .conftest import screenshot, wait_for

pytestmark = pytest.mark.timeout(600)
DEVICE = lab_id(DeviceId("speck2fdevkit", 0, virtual=True), host=socket.gethostname())


@pytest.fixture
def prefixed(tmp_path: Path) -> Iterator[str]:
    app = create_app(
        Settings(
            data_dir=tmp_path / "data",
            admin_token=ADMIN_TOKEN,
            virtual=["speck2fdevkit"],
            log_format="text",
        )
    )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with app.router.lifespan_context(app):
            yield

    proxy = Starlette(routes=[Mount("/lab", app=app)], lifespan=lifespan)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(proxy, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/lab/"
    server.should_exit = True
    thread.join(60)


def test_the_pages_work_under_a_path_prefix(browser: object, prefixed: str) -> None:
    page = browser.new_context().new_page()  # type: ignore[attr-defined]
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("websocket", lambda websocket: requests.append(websocket.url))
    page.goto(prefixed)
    page.fill("#token", ADMIN_TOKEN)
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector(f"#lab tr[data-device='{DEVICE}']")
    page.click(f"#lab tr[data-device='{DEVICE}'] a")
    wait_for(page, "document.querySelector('#live-status')?.textContent.startsWith('Nothing')")
    screenshot(page, "prefix-device")
    page.click("#nav a[data-page=jobs]")
    page.wait_for_selector("#jobs")
    origin = prefixed.removesuffix("lab/")
    paths = [url.split("://", 1)[1].split("/", 1)[1] for url in requests]
    assert any(path.startswith("lab/v1/lab/overview") for path in paths)
    assert any(path.startswith("lab/v1/devices/") and path.endswith("/live") for path in paths)
    assert "lab/v1/jobs" in paths
    assert all(path.startswith("lab/") for path in paths), paths
    assert ADMIN_TOKEN not in " ".join(requests) and origin in requests[0]
