"""One real daemon with virtual devkits for the whole client suite, and users to talk to it."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from specklab.client import Booking, Client, HardwareModel, RemoteModel
from specklab.schemas.events import spikes

from ..daemon import Daemon, run_daemon

ADMIN_TOKEN = "spk_client-suite-admin-token-0123456789"
#: Virtual devkits the daemon serves; tests book them by type and release them when done.
VIRTUAL_DEVKITS = 3
_names = itertools.count()


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The daemon of the whole client suite, with virtual devkits and a known admin token."""
    env = {
        "SPECKLAB_ADMIN_TOKEN": ADMIN_TOKEN,
        # A short idle release so that heartbeats must flow within a test, long enough that a
        # compile on a loaded machine between two calls does not end a booking.
        "SPECKLAB_BOOKING_IDLE_S": "12",
        "SPECKLAB_SWEEP_INTERVAL_S": "0.5",
    }
    data = tmp_path_factory.mktemp("daemon")
    with run_daemon(data, "--virtual", f"speck2fdevkit={VIRTUAL_DEVKITS}", env=env) as daemon:
        yield daemon


@pytest.fixture(scope="session")
def admin(daemon: Daemon) -> Iterator[Client]:
    with Client(daemon.url, ADMIN_TOKEN) as client:
        yield client


@dataclass(frozen=True)
class Account:
    name: str
    token: str
    url: str

    def client(self) -> Client:
        return Client(self.url, self.token)


def new_account(admin: Client, role: str = "user") -> Account:
    user = admin.create_user(f"user{next(_names)}", role=role)
    token = admin.create_token("tests", user_id=user.id)
    return Account(user.name, token.token, admin.url)


@pytest.fixture
def account(admin: Client) -> Account:
    """A fresh user, so that quotas and bookings of other tests do not matter."""
    return new_account(admin)


@pytest.fixture
def client(account: Account) -> Iterator[Client]:
    with account.client() as client:
        yield client


#: Seconds after which a booking without any use is released as idle, with some slack.
LEASE_LAPSES_S = 13.5


def all_ones_network() -> Any:
    """Conv2d(1, 4, 3) with every weight 1, then ReLU, on 8x8 input: each input spike makes
    every neuron whose 3x3 window covers it fire once, so outputs can be counted exactly."""
    import torch

    network = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, bias=False), torch.nn.ReLU())
    with torch.no_grad():
        network[0].weight.fill_(1.0)
    return network


#: The input shape of :func:`all_ones_network`.
ALL_ONES_SHAPE = (1, 8, 8)


def all_ones_outputs(x: int, y: int) -> int:
    """Output spikes of :func:`all_ones_network` for one input spike at (x, y)."""
    positions = [min(c, 5) - max(c - 2, 0) + 1 for c in (x, y)]
    return positions[0] * positions[1] * 4


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`all_ones_network` exported to a ``.pt2`` file, so client-only tests can use it."""
    from specklab.client._payload import model_file

    path = tmp_path_factory.mktemp("models") / "all_ones.pt2"
    path.write_bytes(model_file(all_ones_network(), input_shape=ALL_ONES_SHAPE).content)
    return path


@pytest.fixture(scope="session")
def streamer(admin: Client) -> Account:
    """The user of the device tests, who owns :func:`remote_model`."""
    return new_account(admin)


@pytest.fixture(scope="session")
def remote_model(streamer: Account, model_file: Path) -> RemoteModel:
    """:func:`all_ones_network`, compiled once for the session."""
    with streamer.client() as client:
        return client.compile(model_file, input_shape=ALL_ONES_SHAPE)


@pytest.fixture
def lab(streamer: Account) -> Iterator[Client]:
    """The device tests' user's client."""
    with streamer.client() as client:
        yield client


@pytest.fixture
def booking(lab: Client) -> Iterator[Booking]:
    with lab.book("speck2fdevkit", minutes=5) as booking:
        yield booking


@pytest.fixture
def hw_model(lab: Client, booking: Booking, remote_model: RemoteModel) -> Iterator[HardwareModel]:
    """:func:`all_ones_network` deployed on the booked device."""
    with lab.deploy(remote_model, booking.device_id) as model:
        yield model


def grid(t0: int = 0) -> np.ndarray:
    """One input spike on every pixel of the 8x8 input, 10 us apart."""
    ys, xs = np.divmod(np.arange(64), 8)
    return spikes(t=t0 + 10 * np.arange(64), layer=0, feature=0, x=xs, y=ys)


#: Output spikes of :func:`all_ones_network` for :func:`grid`.
GRID_OUTPUTS = sum(all_ones_outputs(x, y) for y in range(8) for x in range(8))
