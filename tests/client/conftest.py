"""One real daemon with virtual devkits for the whole client suite, and users to talk to it."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from specklab.client import Client

from ..daemon import Daemon, run_daemon

ADMIN_TOKEN = "spk_client-suite-admin-token-0123456789"
#: Virtual devkits the daemon serves; tests book them by type and release them when done.
VIRTUAL_DEVKITS = 3
_names = itertools.count()


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    env = {
        "SPECKLAB_ADMIN_TOKEN": ADMIN_TOKEN,
        # Short leases so that the heartbeat thread has to beat within a test.
        "SPECKLAB_LEASE_TIMEOUT_S": "3",
        "SPECKLAB_LEASE_GRACE_S": "1",
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
