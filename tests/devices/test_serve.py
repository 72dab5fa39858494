"""``specklab serve`` as a real process lists its devices: virtual ones, and a samna one when
the samna test double is importable."""

from __future__ import annotations

from pathlib import Path

import httpx

from ..daemon import run_daemon
from ..lab_client import ADMIN_TOKEN, bearer
from .conftest import DOUBLE_PATH

ENV = {"SPECKLAB_ADMIN_TOKEN": ADMIN_TOKEN, "SPECKLAB_HOST_NAME": "bench-7"}


def _devices(url: str) -> dict:
    response = httpx.get(f"{url}/v1/devices", headers=bearer(ADMIN_TOKEN), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_serve_lists_its_virtual_devkit(tmp_path: Path) -> None:
    with run_daemon(tmp_path / "data", "--virtual", "speck2fdevkit=1", env=ENV) as daemon:
        listing = _devices(daemon.url)
        assert [(d["id"], d["status"], d["virtual"]) for d in listing["devices"]] == [
            ("virtual-speck2fdevkit:0@bench-7", "free", True)
        ]
        assert listing["devices"][0]["host"] == "bench-7"
        assert listing["samna"]["state"] == "not installed"
    assert "Traceback" not in daemon.log()


def test_serve_finds_a_speck2f_devkit_through_samna(tmp_path: Path) -> None:
    env = {**ENV, "SAMNA_DOUBLE_DEVICES": "Speck2fDevKit/DBL7/1/4"}
    with run_daemon(tmp_path / "data", env=env, python_path=[DOUBLE_PATH]) as daemon:
        listing = _devices(daemon.url)
        assert listing["samna"]["state"] == "loaded"
        assert listing["samna"]["version"] == "0.0.0+double"
        [device] = listing["devices"]  # a real device found: no default virtual devkit
        assert (device["id"], device["status"], device["virtual"]) == (
            "speck2fdevkit:sn-DBL7",
            "free",
            False,
        )
        assert (device["serial_number"], device["usb"]) == ("DBL7", {"bus": 1, "address": 4})
        one = httpx.get(f"{daemon.url}/v1/devices/speck2fdevkit:0", headers=bearer(ADMIN_TOKEN))
        assert one.json()["chip"] == "speck2f"
    assert "Traceback" not in daemon.log()
