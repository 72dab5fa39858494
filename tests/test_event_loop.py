"""Nothing blocks the event loop: a real daemon serves a realistic mix of requests in asyncio's
debug mode (``PYTHONASYNCIODEBUG``), where the loop logs every callback that runs for 100 ms or
more (``slow_callback_duration``'s default); the test fails on any such line. The daemon is a
process of its own, so the test's client cannot slow its loop down."""

from __future__ import annotations

import asyncio
import gc
import os
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from specklab.server.storage import Database, utcnow

from .daemon import run_daemon
from .db_fixtures import add_devices
from .lab_client import ADMIN_TOKEN, bearer, running_lab

DEVICE = "speck2fdevkit:0"
ADMIN = bearer(ADMIN_TOKEN)
#: asyncio's line for a callback over ``slow_callback_duration`` (0.1 s by default).
SLOW_LINE = re.compile(r"Executing .* took \d+\.\d+ seconds")
Mix = Callable[[httpx.AsyncClient, int], Awaitable[None]]


async def _rest_mix(client: httpx.AsyncClient, round_: int) -> None:
    user = (await client.post("/v1/users", json={"name": f"user{round_}"}, headers=ADMIN)).json()
    made = await client.post("/v1/tokens", json={"name": "t", "user_id": user["id"]}, headers=ADMIN)
    headers = bearer(made.json()["token"])
    start = (utcnow() + timedelta(days=1, hours=round_)).isoformat()
    booking = (
        await client.post(
            "/v1/bookings",
            json={"device_id": DEVICE, "starts_at": start, "minutes": 30},
            headers=headers,
        )
    ).json()
    reads = [
        "/v1/users/me",
        "/v1/tokens",
        "/v1/bookings",
        f"/v1/bookings/{booking['id']}",
        "/v1/devices",
        "/v1/models",
        "/v1/recordings",
        "/v1/health",
        "/v1/version",
        "/metrics",
    ]
    for path in reads:
        answer = await client.get(path, headers=headers)
        assert answer.status_code == 200, (path, answer.text)
    await client.post(f"/v1/bookings/{booking['id']}/extend", json={"minutes": 5}, headers=headers)
    await client.get("/v1/audit", headers=ADMIN)
    await client.get("/openapi.json")
    assert (
        await client.delete(f"/v1/bookings/{booking['id']}", headers=headers)
    ).status_code == 200


async def _upload_mix(client: httpx.AsyncClient, round_: int) -> None:
    # Not a model: what is timed is the upload's path through the daemon, not a compile.
    data = os.urandom(16 * 1024 * 1024)
    await client.post(
        "/v1/models",
        files={"file": (f"m{round_}.pt", data)},
        data={"options": '{"input_shape": [1, 28, 28]}'},
        headers=ADMIN,
    )


@pytest.mark.parametrize(
    "mix",
    [
        pytest.param(_rest_mix, id="rest"),
        pytest.param(_upload_mix, id="model-upload"),
    ],
)
def test_no_callback_blocks_the_loop_for_100_ms(
    tmp_path: Path, database_url: str, mix: Mix
) -> None:
    env = {
        "PYTHONASYNCIODEBUG": "1",
        "SPECKLAB_ADMIN_TOKEN": ADMIN_TOKEN,
        "SPECKLAB_VIRTUAL": "none",
        "SPECKLAB_LOG_LEVEL": "warning",
    }
    args = [] if database_url.startswith("sqlite") else ["--database-url", database_url]
    with run_daemon(tmp_path / "data", *args, env=env) as daemon:
        url = database_url
        if url.startswith("sqlite"):
            url = f"sqlite:///{daemon.data_dir / 'specklab.db'}"
        db = Database(url)
        add_devices(db, (DEVICE, "speck2fdevkit"))
        db.dispose()
        started = len(daemon.log())  # start-up (migrations, first admin) is not judged

        async def run() -> None:
            async with httpx.AsyncClient(base_url=daemon.url, timeout=120) as client:
                # A few users at once: enough to interleave requests on the loop, few enough
                # that the daemon's own threads do not starve it of the GIL on a small machine.
                await asyncio.gather(*(mix(client, round_) for round_ in range(4)))

        asyncio.run(run())
        daemon.stop()
    slow = [line for line in daemon.log()[started:].splitlines() if SLOW_LINE.search(line)]
    assert slow == []


def test_the_daemons_loop_reports_slow_callbacks_in_debug_mode(tmp_path: Path) -> None:
    """What the test above relies on: a callback that blocks shows in the daemon's log."""
    plugin = tmp_path / "site" / "sitecustomize.py"
    plugin.parent.mkdir()
    # Block the loop once per request, inside the daemon, through a middleware of its own.
    plugin.write_text(
        "import time\n"
        "import specklab.server.app as app_module\n"
        "make = app_module.create_app\n"
        "def create_app(settings=None):\n"
        "    app = make(settings)\n"
        "    @app.middleware('http')\n"
        "    async def block(request, call_next):\n"
        "        time.sleep(0.3)\n"
        "        return await call_next(request)\n"
        "    return app\n"
        "app_module.create_app = create_app\n"
    )
    env = {"PYTHONASYNCIODEBUG": "1", "SPECKLAB_VIRTUAL": "none"}
    with run_daemon(tmp_path / "data", env=env, python_path=[plugin.parent]) as daemon:
        httpx.get(f"{daemon.url}/v1/health/live")
        daemon.stop()
    assert any(SLOW_LINE.search(line) for line in daemon.log().splitlines())


def test_no_full_collection_walks_what_start_up_built(tmp_path: Path, database_url: str) -> None:
    """The cause the mixes above caught: a full collection holds the GIL, whichever thread runs
    it, for as long as it walks the heap, and start-up leaves one of over 150,000 objects
    (modules, routes, the OpenAPI document). The daemon freezes them; a stopped one does not
    keep them from being collected."""
    with running_lab(tmp_path / "data", database_url) as lab:
        assert lab.client.get("/v1/health/live").status_code == 200
        frozen = gc.get_freeze_count()
        walked = len(gc.get_objects())
    assert frozen > 10 * walked
    assert gc.get_freeze_count() == 0
