"""A real daemon with two users, a booked virtual devkit and the guide's network uploaded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from specklab.schemas.stream import ClientStream, Ready

from .daemon import Daemon, run_daemon
from .fixtures_models import guide_network, torchscript_bytes

ADMIN_TOKEN = "spk_stream-test-admin-0123456789abcdef"
DEVICE = "virtual-speck2fdevkit:0"


@dataclass
class StreamLab:
    daemon: Daemon
    tokens: dict[str, str]

    def http(self, user: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.daemon.url,
            headers={"Authorization": f"Bearer {self.tokens[user]}"},
            timeout=120,
        )

    def ws_url(self, path: str) -> str:
        return self.daemon.url.replace("http://", "ws://") + path

    @contextmanager
    def websocket(self, user: str, path: str) -> Iterator[ClientConnection]:
        with connect(
            self.ws_url(path),
            additional_headers={"Authorization": f"Bearer {self.tokens[user]}"},
            compression=None,
            max_size=64 * 1024 * 1024,
            open_timeout=30,
        ) as websocket:
            yield websocket

    def upload_guide(self, user: str) -> int:
        with self.http(user) as http:
            response = http.post(
                "/v1/models",
                files={"file": ("lenet.pt", torchscript_bytes(guide_network()))},
                data={"options": json.dumps({"input_shape": [1, 28, 28]})},
            )
            assert response.status_code == 201, response.text
            return response.json()["id"]

    def book_and_deploy_guide(self, user: str, **request: Any) -> dict:
        """``user`` books the virtual devkit and deploys the guide's network there
        (``request``: more fields of the deployment request); returns the deployment."""
        model_id = self.upload_guide(user)
        self.book(user)
        with self.http(user) as http:
            response = http.post(
                f"/v1/devices/{DEVICE}/deployment", json={"model_id": model_id, **request}
            )
            assert response.status_code == 201, response.text
            return response.json()

    def book(self, user: str, device: str = DEVICE, minutes: int = 30) -> int:
        with self.http(user) as http:
            response = http.post("/v1/bookings", json={"device_id": device, "minutes": minutes})
            assert response.status_code == 201, response.text
            return response.json()["id"]


@contextmanager
def stream_lab(
    data_dir: Path,
    *args: str,
    users: tuple[str, ...] = ("ada", "bob"),
    env: dict[str, str] | None = None,
) -> Iterator[StreamLab]:
    """``env``: more settings (``SPECKLAB_*``) for the daemon."""
    full_env = {"SPECKLAB_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})}
    with run_daemon(data_dir, *args, env=full_env) as daemon:
        tokens = {"admin": ADMIN_TOKEN}
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        for name in users:
            user = httpx.post(f"{daemon.url}/v1/users", json={"name": name}, headers=admin)
            assert user.status_code == 201, user.text
            token = httpx.post(
                f"{daemon.url}/v1/tokens",
                json={"name": "tests", "user_id": user.json()["id"]},
                headers=admin,
            )
            assert token.status_code == 201, token.text
            tokens[name] = token.json()["token"]
        yield StreamLab(daemon, tokens)


def open_stream(websocket: ClientConnection) -> ClientStream:
    client = ClientStream()
    greeting = client.receive_data(websocket.recv(timeout=30))
    assert isinstance(greeting, Ready), greeting
    return client
