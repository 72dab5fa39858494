"""Three daemons on one PostgreSQL are one lab: the guide's flow runs across them (upload on A,
book a device of B, deploy and stream through C, record on B and download from A), and a host
killed mid-stream ends its streams and goes offline for the others, losing no booking."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import pytest

from specklab.client import Client, StreamError
from specklab.schemas.events import spikes
from specklab.server.booking.lab import host_stale_after

from .daemon import Daemon, run_daemon
from .db_fixtures import POSTGRES_ENV, fresh_postgres_database, postgres_url
from .fixtures_models import guide_network, torchscript_bytes
from .lab_client import ADMIN_TOKEN, bearer

pytestmark = pytest.mark.postgres

ADMIN = bearer(ADMIN_TOKEN)
SWEEP_S = 0.5
DEVICE_B = "virtual-speck2fdevkit:0@host-b"


@pytest.fixture
def three_hosts(tmp_path: Path) -> Iterator[tuple[Daemon, Daemon, Daemon]]:
    server = postgres_url()
    if server is None:
        pytest.skip(f"no PostgreSQL: set {POSTGRES_ENV} (see .ci/postgres.sh)")
    with fresh_postgres_database(server) as url, ExitStack() as stack:
        daemons = []
        for name in ("host-a", "host-b", "host-c"):
            env = {
                "SPECKLAB_ADMIN_TOKEN": ADMIN_TOKEN,
                "SPECKLAB_HOST_NAME": name,
                "SPECKLAB_VIRTUAL": "speck2fdevkit=1",
                "SPECKLAB_SWEEP_INTERVAL_S": str(SWEEP_S),
            }
            daemons.append(
                stack.enter_context(run_daemon(tmp_path / name, "--database-url", url, env=env))
            )
        yield daemons[0], daemons[1], daemons[2]


def _user_token(daemon: Daemon, name: str) -> str:
    user = httpx.post(f"{daemon.url}/v1/users", json={"name": name}, headers=ADMIN).json()
    token = httpx.post(
        f"{daemon.url}/v1/tokens", json={"name": "t", "user_id": user["id"]}, headers=ADMIN
    )
    return token.json()["token"]


def _status(daemon: Daemon, device_id: str) -> str:
    return httpx.get(f"{daemon.url}/v1/devices/{device_id}", headers=ADMIN).json()["status"]


def _events() -> np.ndarray:
    rng = np.random.default_rng(0)
    return spikes(
        t=np.sort(rng.integers(0, 20_000, 300)),
        layer=0,
        feature=0,
        x=rng.integers(0, 28, 300),
        y=rng.integers(0, 28, 300),
    )


def test_the_guide_flow_runs_across_three_hosts(
    three_hosts: tuple[Daemon, Daemon, Daemon],
) -> None:
    a, b, c = three_hosts
    token = _user_token(a, "alice")
    alice = bearer(token)
    upload = httpx.post(
        f"{a.url}/v1/models",
        headers=alice,
        files={"file": ("lenet.pt", torchscript_bytes(guide_network()))},
        data={"options": json.dumps({"input_shape": [1, 28, 28]})},
        timeout=300,
    )
    assert upload.status_code == 201, upload.text
    model_id = upload.json()["id"]
    for daemon in (b, c):  # the model belongs to the lab, its report included
        listed = httpx.get(f"{daemon.url}/v1/models", headers=alice)
        assert listed.status_code == 200, listed.text
        assert [m["id"] for m in listed.json()] == [model_id]

    booking = httpx.post(
        f"{a.url}/v1/bookings", json={"device_id": DEVICE_B, "minutes": 30}, headers=alice
    ).json()
    assert (booking["device_id"], booking["status"]) == (DEVICE_B, "running")
    events = _events()
    with Client(c.url, token) as through_c:  # every call on B's device goes through C
        out_c = through_c.deploy(model_id, DEVICE_B, monitor_layers="all").forward(events)
        with Client(b.url, token) as on_b:
            out_b = on_b.deploy(model_id, DEVICE_B, monitor_layers="all").forward(events)
        assert len(out_c.spikes) > 0
        assert out_c.spikes.tobytes() == out_b.spikes.tobytes()

        recording = httpx.post(
            f"{b.url}/v1/recordings",
            json={"device_id": DEVICE_B, "duration_s": 0.2, "source": "monitor"},
            headers=alice,
            timeout=60,
        )
        assert recording.status_code == 201, recording.text
        path = f"/v1/recordings/{recording.json()['id']}/events.npy"
        from_a = httpx.get(f"{a.url}{path}", headers=alice)
        assert from_a.status_code == 200, from_a.text
        assert from_a.content == httpx.get(f"{b.url}{path}", headers=alice).content

        # B dies mid-stream: the stream through C ends with the documented fatal error ...
        with through_c.stream(DEVICE_B) as stream:
            stream.send(events)
            b.stop(signal.SIGKILL)
            with pytest.raises(StreamError) as ended:
                for _ in stream.outputs(idle=30.0):
                    pass
        assert (ended.value.code, ended.value.fatal) == ("device_offline", True)
    # ... its device goes offline for the others within the documented time ...
    deadline = time.monotonic() + host_stale_after(SWEEP_S).total_seconds() + 5 * SWEEP_S
    while _status(a, DEVICE_B) != "offline":
        assert time.monotonic() < deadline, "host B's device never went offline"
        time.sleep(SWEEP_S)
    assert _status(c, DEVICE_B) == "offline"
    refused = httpx.post(
        f"{c.url}/v1/devices/{DEVICE_B}/deployment", json={"model_id": model_id}, headers=alice
    )
    assert (refused.status_code, refused.json()["code"]) == (409, "device_offline")
    # ... and no booking is lost.
    kept = httpx.get(f"{a.url}/v1/bookings/{booking['id']}", headers=alice).json()
    assert (kept["device_id"], kept["ends_at"]) == (DEVICE_B, booking["ends_at"])
    for daemon in (a, c):
        assert "Traceback" not in daemon.log()
