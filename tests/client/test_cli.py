"""The ``specklab`` client commands against the real daemon: tables, --json, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from specklab.client import Client
from specklab.client.cli import main

from .conftest import GRID_OUTPUTS, LEASE_LAPSES_S, VIRTUAL_DEVKITS, Account, grid


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
    # Within the lab's booking horizon (90 days by default), on the minute.
    start = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M")
    booking = run_json(capsys, account, "book", "speck2fdevkit", "--minutes", "5", "--start", start)
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
    assert err == "specklab: no booking 999999 (specklab booking list shows yours)\n"


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


def test_upload_deploy_stream_record_from_the_command_line(
    capsys: pytest.CaptureFixture[str], account: Account, model_file: Path, tmp_path: Path
) -> None:
    model = run_json(capsys, account, "upload", str(model_file), "--input-shape", "1,8,8")
    assert model["report"]["ok"] and model["name"] == "all_ones.pt2"
    code, out, _ = run(
        capsys,
        account,
        "upload",
        str(model_file),
        "--input-shape",
        "1,8,8",
        "--report",
        "--option",
        "chip=speck2e",
        "--name",
        "ones-2e",
    )
    assert code == 0 and "ones-2e" in out and "fits on speck2e" in out
    code, out, _ = run(capsys, account, "models")
    assert code == 0 and "ones-2e" in out and "all_ones.pt2" in out

    booking = run_json(capsys, account, "book", "speck2fdevkit", "--minutes", "5")
    device = booking["device_id"]
    deployment = run_json(capsys, account, "deploy", str(model["id"]), device, "--monitor", "-1")
    assert deployment["monitored"] == [0]

    np.save(tmp_path / "in.npy", grid())
    for mode in ("forward", "continuous"):
        out_path = tmp_path / f"out-{mode}.npy"
        summary = run_json(
            capsys,
            account,
            "stream",
            device,
            "--in",
            str(tmp_path / "in.npy"),
            "--out",
            str(out_path),
            "--mode",
            mode,
        )
        assert summary["sent"] == 64 and summary["received"] == GRID_OUTPUTS
        assert len(np.load(out_path)) == GRID_OUTPUTS

    recording = run_json(
        capsys,
        account,
        "record",
        device,
        "--duration",
        "0.2",
        "--source",
        "monitor",
        "--out",
        str(tmp_path / "rec.npy"),
    )
    assert (tmp_path / "rec.npy").exists() and recording["kind"] == "spike"
    code, out, _ = run(capsys, account, "recordings")
    assert code == 0 and f"monitor of {device}" in out
    code, _, _ = run(
        capsys, account, "recordings", "download", str(recording["id"]), str(tmp_path / "r2.npy")
    )
    assert code == 0 and (tmp_path / "r2.npy").read_bytes() == (tmp_path / "rec.npy").read_bytes()
    assert run_json(capsys, account, "recordings", "delete", str(recording["id"]))
    assert run_json(capsys, account, "cancel", str(booking["id"]))[0]["status"] == "released"


def test_a_model_that_does_not_fit_prints_the_report_and_exits_1(
    capsys: pytest.CaptureFixture[str], account: Account, tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    layers = [torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3, padding=1), torch.nn.ReLU())] * 10
    path = tmp_path / "deep.pt2"
    path.write_bytes(model_file_of(torch.nn.Sequential(*layers), (2, 8, 8)))
    code, out, err = run(capsys, account, "upload", str(path), "--input-shape", "2,8,8")
    assert code == 1 and out == ""
    assert "does NOT fit" in err and "error too_many_layers" in err
    assert "specklab: the network has 10 layers" in err


def model_file_of(module: Any, shape: tuple[int, ...]) -> bytes:
    from specklab.client._payload import model_file

    return model_file(module, input_shape=shape).content


def _book_and_hold(account: Account) -> subprocess.Popen[str]:
    """``specklab book --hold`` in a process of its own (it is signalled and waits)."""
    env = {**os.environ, "SPECKLAB_URL": account.url, "SPECKLAB_TOKEN": account.token}
    command = [sys.executable, "-m", "specklab.client.cli", "book", "speck2fdevkit"]
    return subprocess.Popen(
        [*command, "--minutes", "5", "--hold", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _printed_booking_id(holder: subprocess.Popen[str]) -> int:
    """The id in the booking ``book --json`` prints (its error if it printed none)."""
    assert holder.stdout is not None and holder.stderr is not None
    lines = []
    while (line := holder.stdout.readline()) not in ("}\n", ""):
        lines.append(line)
    assert line, holder.stderr.read()
    return int(json.loads("".join(lines) + "}")["id"])


def test_book_hold_keeps_the_lease_until_the_booking_ends(admin: Client, account: Account) -> None:
    holder = _book_and_hold(account)
    try:
        booking_id = _printed_booking_id(holder)
        time.sleep(LEASE_LAPSES_S)  # it outlives a lease only by beating
        assert admin.booking(booking_id).status == "running"
        admin.preempt(booking_id, reason="maintenance")
        _, err = holder.communicate(timeout=30)
    finally:
        holder.kill()
    assert holder.returncode == 1
    assert f"booking {booking_id} is over: preempted by " in err and ": maintenance" in err


def test_sigterm_on_book_hold_releases_the_booking(admin: Client, account: Account) -> None:
    holder = _book_and_hold(account)
    try:
        booking_id = _printed_booking_id(holder)
        assert holder.stderr is not None
        assert "holding" in holder.stderr.readline()  # the handler is in place from here on
        holder.terminate()
        _, err = holder.communicate(timeout=30)
    finally:
        holder.kill()
    assert holder.returncode == 0, err
    released = admin.booking(booking_id)
    assert (released.status, released.end_reason) == ("released", "released by its holder")


def test_bookings_show_the_idle_release_and_a_call_on_an_ended_one_says_why(
    capsys: pytest.CaptureFixture[str], account: Account
) -> None:
    booking = run_json(capsys, account, "book", "speck2fdevkit", "--minutes", "5")
    code, out, _ = run(capsys, account, "bookings", "--current")
    assert code == 0 and out.splitlines()[0].split()[-1] == "LEASE"
    [row] = [line for line in out.splitlines() if line.startswith(f"{booking['id']} ")]
    assert "unused, idle release in " in row
    run_json(capsys, account, "cancel", str(booking["id"]))
    code, out, _ = run(capsys, account, "bookings", "--device", booking["device_id"])
    [row] = [line for line in out.splitlines() if line.startswith(f"{booking['id']} ")]
    assert row.endswith("released by its holder")
    code, _, err = run(capsys, account, "deploy", "999999", booking["device_id"])
    assert code != 0
    assert f"your booking {booking['id']} of {booking['device_id']} is over" in err
    assert "released by its holder" in err and "POST /v1/bookings" not in err


def test_booking_a_type_whose_devices_are_all_busy_refuses_unless_next_free(
    capsys: pytest.CaptureFixture[str], account: Account
) -> None:
    # A day within the lab's booking horizon (90 days by default), where no other test books.
    day = (datetime.now(UTC) + timedelta(days=60)).date().isoformat()
    at = ("speck2fdevkit", "--minutes", "5", "--start", f"{day}T10:00+00:00")
    taken = [run_json(capsys, account, "book", *at) for _ in range(VIRTUAL_DEVKITS)]
    try:
        assert len({b["device_id"] for b in taken}) == VIRTUAL_DEVKITS
        code, _, err = run(capsys, account, "book", *at)
        assert code != 0 and f"is next free for 5 minutes at {day}T10:05:00+00:00" in err
        later = run_json(capsys, account, "book", *at, "--next-free")
        taken.append(later)
        assert later["starts_at"].startswith(f"{day}T10:05:00")
    finally:
        run_json(capsys, account, "cancel", *(str(b["id"]) for b in taken))
