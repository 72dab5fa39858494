"""The ``specklab`` client commands against the real daemon: tables, --json, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from specklab.client.cli import main

from .conftest import Account


def run(capsys: pytest.CaptureFixture[str], account: Account, *argv: str) -> tuple[int, str, str]:
    code = main([*argv[:1], "--url", account.url, "--token", account.token, *argv[1:]])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], account: Account, *argv: str) -> Any:
    code, out, err = run(capsys, account, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_devices_as_table_and_json(capsys: pytest.CaptureFixture[str], account: Account) -> None:
    code, out, _ = run(capsys, account, "devices")
    assert code == 0
    assert out.splitlines()[0].split()[:4] == ["ID", "TYPE", "CHIP", "STATUS"]
    assert "virtual-speck2fdevkit:0" in out and "samna:" in out
    listing = run_json(capsys, account, "devices")
    assert {d["type"] for d in listing["devices"]} == {"speck2fdevkit"}
    types = run_json(capsys, account, "devices", "--types")
    assert {
        "type": "dvxplorer",
        "samna_name": "DVXplorer",
        "supported": False,
        "chip": None,
    } in types


def test_book_extend_list_and_cancel(capsys: pytest.CaptureFixture[str], account: Account) -> None:
    booking = run_json(
        capsys, account, "book", "speck2fdevkit", "--minutes", "5", "--start", "2099-01-01T10:00"
    )
    assert booking["status"] == "upcoming"
    extended = run_json(capsys, account, "extend", str(booking["id"]), "--minutes", "10")
    assert extended["ends_at"] > booking["ends_at"]
    code, out, _ = run(capsys, account, "bookings", "--current")
    assert code == 0 and str(booking["id"]) in out and "upcoming" in out
    [cancelled] = run_json(capsys, account, "cancel", str(booking["id"]))
    assert cancelled["status"] == "cancelled"
    assert run_json(capsys, account, "bookings", "--current") == []


def test_server_errors_print_the_daemons_message_and_exit_1(
    capsys: pytest.CaptureFixture[str], account: Account
) -> None:
    code, out, err = run(capsys, account, "cancel", "999999")
    assert code == 1 and out == ""
    assert "404" in err and "booking" in err


def test_token_whoami_create_list_revoke(
    capsys: pytest.CaptureFixture[str], account: Account
) -> None:
    code, out, _ = run(capsys, account, "token")
    assert code == 0 and out.startswith(f"{account.name} (user)")
    code, secret, _ = run(capsys, account, "token", "create", "ci", "--never-expires")
    assert code == 0 and secret.strip().startswith("spk_")
    tokens = run_json(capsys, account, "token", "list")
    ci = next(t for t in tokens if t["name"] == "ci")
    assert ci["expires_at"] is None
    assert run_json(capsys, account, "token", "revoke", str(ci["id"]))["revoked_at"]


def test_the_installed_command_reads_url_and_token_from_the_environment(account: Account) -> None:
    env = {"SPECKLAB_URL": account.url, "SPECKLAB_TOKEN": account.token, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "specklab.client.cli", "token", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert json.loads(out.stdout)["name"] == account.name
