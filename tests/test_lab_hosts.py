"""Three daemons on one PostgreSQL are one lab: every call on a device reaches the device's host
through any host, with the token and the booking checked there whoever forwarded it; the guide's
flow runs across them (upload on A, book a device of B, deploy and stream through C, record on B
and download from A), and a host killed mid-stream ends its streams and goes offline for the
others, losing no booking.

The hosts are started once for the module (each start costs seconds of CPU); the test that
kills host B runs last."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from specklab.client import Client, StreamError
from specklab.server.booking.lab import host_stale_after

from .daemon import Daemon, run_daemon
from .db_fixtures import POSTGRES_ENV, fresh_postgres_database, postgres_url
from .fixtures_models import guide_network, torchscript_bytes
from .guide_inputs import guide_spikes
from .lab_client import ADMIN_TOKEN, bearer

# The first test also waits for the three daemons to start (the timeout counts set-up).
pytestmark = [pytest.mark.postgres, pytest.mark.timeout(900)]

ADMIN = bearer(ADMIN_TOKEN)
SWEEP_S = 0.5
DEVICE_B = "virtual-speck2fdevkit:0@host-b"
Hosts = tuple[Daemon, Daemon, Daemon]
#: On a machine busy with other suites a daemon can take minutes to start.
STARTUP_S = 300.0


@pytest.fixture(scope="module")
def three_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    tmp_path = tmp_path_factory.mktemp("lab")
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
                stack.enter_context(
                    run_daemon(
                        tmp_path / name, "--database-url", url, env=env, startup_timeout=STARTUP_S
                    )
                )
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
    return guide_spikes(rng, 300, 20_000)


def _upload(daemon: Daemon, headers: dict[str, str]) -> int:
    upload = httpx.post(
        f"{daemon.url}/v1/models",
        headers=headers,
        files={"file": ("lenet.pt", torchscript_bytes(guide_network()))},
        data={"options": json.dumps({"input_shape": [1, 28, 28]})},
        timeout=300,
    )
    assert upload.status_code == 201, upload.text
    return int(upload.json()["id"])


def _record(daemon: Daemon, headers: dict[str, str]) -> httpx.Response:
    """0.2 s of the monitored spikes of B's device, recorded through ``daemon``."""
    body = {"device_id": DEVICE_B, "duration_s": 0.2, "source": "monitor"}
    return httpx.post(f"{daemon.url}/v1/recordings", json=body, headers=headers, timeout=60)


def _answer(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["code"]


def test_every_call_on_a_device_reaches_its_host_from_any_host(
    three_hosts: Hosts,
) -> None:
    a, b, c = three_hosts
    token = _user_token(a, "carol")
    carol, mallory = bearer(token), bearer(_user_token(a, "mallory"))
    model_id = _upload(a, carol)
    booking = httpx.post(
        f"{a.url}/v1/bookings", json={"device_id": DEVICE_B, "minutes": 30}, headers=carol
    )
    assert booking.status_code == 201, booking.text
    on_b, via_c = f"{b.url}/v1/devices/{DEVICE_B}", f"{c.url}/v1/devices/{DEVICE_B}"
    deployed = httpx.post(
        f"{via_c}/deployment", json={"model_id": model_id}, headers=carol, timeout=120
    )
    assert deployed.status_code == 201, deployed.text
    # By name too: carol's "virtual-speck2fdevkit:0" is the one of B she holds.
    by_name = httpx.get(f"{c.url}/v1/devices/virtual-speck2fdevkit:0/deployment", headers=carol)
    assert (by_name.json()["device_id"], by_name.json()["model_id"]) == (DEVICE_B, model_id)
    states = httpx.get(f"{via_c}/deployment/layers/0/states", headers=carol)
    assert states.status_code == 200, states.text
    assert httpx.post(f"{via_c}/reset-states", headers=carol).status_code == 204

    recorded = _record(c, carol)
    assert recorded.status_code == 201, recorded.text
    assert recorded.json()["device_id"] == DEVICE_B
    replay = f"/v1/recordings/{recorded.json()['id']}/replay"
    body = {"device_id": DEVICE_B}
    replayed = httpx.post(f"{c.url}{replay}", json=body, headers=carol)
    assert _answer(replayed) == _answer(httpx.post(f"{b.url}{replay}", json=body, headers=carol))
    assert replayed.json()["code"] != "device_not_found"

    # The live view: its token travels as a subprotocol, relayed as it came.
    live = f"{via_c.replace('http', 'ws', 1)}/live"
    offered = [Subprotocol("specklab.live"), Subprotocol(f"bearer.{token}")]
    with connect(live, subprotocols=offered) as view:
        assert view.subprotocol == "specklab.live"
        status = json.loads(view.recv(timeout=30))
        assert (status["type"], status["role"]) == ("status", "spectator")

    # Whoever forwards, the device's host judges the token and the booking itself.
    mallory_on_b = httpx.post(f"{on_b}/deployment", json={"model_id": model_id}, headers=mallory)
    assert _answer(mallory_on_b)[0] == 409
    for url, headers, params in (
        (via_c, mallory, {}),
        (via_c, mallory, {"token": token}),  # the header's token counts on every host
        (on_b, {**mallory, "x-specklab-forwarded-by": "host-c"}, {}),
    ):
        refused = httpx.post(
            f"{url}/deployment", json={"model_id": model_id}, headers=headers, params=params
        )
        assert _answer(refused) == _answer(mallory_on_b)
    # A forged forwarding header only keeps C from forwarding: C has no such device.
    forged = httpx.post(
        f"{via_c}/deployment",
        json={"model_id": model_id},
        headers={**mallory, "x-specklab-forwarded-by": "host-b"},
    )
    assert forged.status_code in (404, 409), forged.text
    anonymous = httpx.get(f"{on_b}/deployment", headers={"x-specklab-forwarded-by": "host-c"})
    assert _answer(anonymous) == (401, "unauthorized")
    assert _answer(_record(c, mallory))[0] == 409
    assert httpx.get(f"{on_b}/deployment", headers=carol).json()["model_id"] == model_id

    assert httpx.delete(f"{via_c}/deployment", headers=carol).status_code == 204
    assert httpx.get(f"{on_b}/deployment", headers=carol).status_code == 404
    assert httpx.delete(f"{a.url}/v1/bookings/{booking.json()['id']}", headers=carol).is_success


def test_the_guide_flow_runs_across_three_hosts(
    three_hosts: Hosts,
) -> None:
    a, b, c = three_hosts
    token = _user_token(a, "alice")
    alice = bearer(token)
    model_id = _upload(a, alice)
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

        recording = _record(b, alice)
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
