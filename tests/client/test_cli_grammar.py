"""One grammar: ``specklab GROUP VERB``, the documented short forms, one flag per option,
``--json`` everywhere, ``--version``, and the verbs that were missing."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from specklab.client import Client
from specklab.client._cli import GROUPS, SHORT_FORMS
from specklab.client._cli.failures import Exit
from specklab.client.cli import build_parser, main, parse_args

from .conftest import ADMIN_TOKEN, GRID_OUTPUTS, Account, grid
from .test_cli import run, run_json

#: Arguments that make each verb's command line complete.
EXAMPLES: dict[tuple[str, str], list[str]] = {
    ("device", "list"): [],
    ("device", "show"): ["x:0"],
    ("device", "stream"): ["x:0", "--in", "a.npy", "--out", "b.npy"],
    ("booking", "list"): [],
    ("booking", "show"): ["3"],
    ("booking", "create"): ["speck2fdevkit", "--minutes", "5"],
    ("booking", "extend"): ["3", "--minutes", "5"],
    ("booking", "cancel"): ["3", "4"],
    ("booking", "hold"): ["3"],
    ("model", "list"): [],
    ("model", "show"): ["3"],
    ("model", "report"): ["3"],
    ("model", "delete"): ["3"],
    ("model", "upload"): ["m.pt", "--input-shape", "1,28,28"],
    ("deployment", "list"): [],
    ("deployment", "show"): ["x:0"],
    ("deployment", "create"): ["3", "x:0"],
    ("deployment", "undeploy"): ["x:0"],
    ("deployment", "reset-states"): ["x:0"],
    ("recording", "list"): [],
    ("recording", "show"): ["3"],
    ("recording", "create"): ["x:0", "--duration", "1"],
    ("recording", "download"): ["3", "r.npy"],
    ("recording", "replay"): ["3", "x:0"],
    ("recording", "delete"): ["3"],
    ("token", "list"): [],
    ("token", "create"): ["ci"],
    ("token", "revoke"): ["3"],
    ("user", "me"): [],
    ("user", "list"): [],
    ("user", "create"): ["ada"],
    ("audit", "list"): [],
    ("job", "list"): [],
    ("job", "show"): ["3"],
    ("job", "evaluate"): ["3", "digits.npz"],
    ("job", "cancel"): ["3"],
}


def parsed(*argv: str) -> argparse.Namespace:
    return parse_args(build_parser(), list(argv))


def test_every_verb_of_every_group_parses_and_takes_json() -> None:
    assert set(EXAMPLES) == {(g.name, verb) for g in GROUPS for verb in g.verbs}
    for (group, verb), rest in EXAMPLES.items():
        args = parsed(group, verb, *rest, "--json")
        assert args.json and callable(args.handler), (group, verb)
        before = parsed(group, "--json", verb, *rest)
        assert before.json and before.handler.__wrapped__ is args.handler.__wrapped__


@pytest.mark.parametrize(("short", "long"), sorted(SHORT_FORMS.items()))
def test_short_forms_run_the_long_forms(short: str, long: tuple[str, str]) -> None:
    rest = EXAMPLES[long]
    assert parsed(short, *rest).handler.__wrapped__ is parsed(*long, *rest).handler.__wrapped__


def test_recordings_is_the_recording_group() -> None:
    assert (
        parsed("recordings").handler.__wrapped__ is parsed("recording", "list").handler.__wrapped__
    )
    replay = parsed("recordings", "replay", "3", "x:0", "--speed", "2")
    assert (replay.recording_id, replay.device, replay.speed) == (3, "x:0", 2.0)


def test_help_reads_as_one_tool_one_line_per_group(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    for group in GROUPS:
        [line] = [line for line in lines if line.split()[:1] == [group.name]]
        assert all(verb in line for verb in group.verbs), line
    listed = {line.split()[0] for line in lines if line.startswith("    ") and line.split()}
    assert not listed & set(SHORT_FORMS)  # short forms are in the epilog, not the listing
    assert all(f"  {short} " in "\n".join(lines) for short in SHORT_FORMS)
    assert "exit status" in "\n".join(lines)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"specklab {version('specklab')}"


def _all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += _all_parsers(sub)
    return found


def test_one_flag_per_option_everywhere() -> None:
    helps = "\n".join(p.format_help() for p in _all_parsers(build_parser()))
    assert "--chip-layers-ordering" not in helps and "--expires-days" not in helps
    assert "--layers" in helps and "--days" in helps
    # The former names still work where the docs used them.
    assert parsed("compile", "m.pt", "--input-shape", "1,8,8", "--chip-layers-ordering", "0,1")
    old = parsed("admin", "create-token", "ada", "--expires-days", "7")
    assert old.days == 7


def test_admin_prints_json_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = ["admin", "--data-dir", str(tmp_path)]
    assert main([*where, "create-user", "carol", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "carol"
    assert main([*where, "--json", "create-token", "carol", "--days", "7"]) == 0
    out, err = capsys.readouterr()
    token = json.loads(out)
    assert token["token"].startswith("spk_") and err == ""
    assert main([*where, "list-tokens", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["id"] == token["id"] and "token" not in listed


def test_recordings_replay_prints_the_event_count(capsys: pytest.CaptureFixture[str]) -> None:
    class Lab:
        def replay(self, recording: int, device: str, *, speed: float) -> int:
            return 1234

    args = parsed("recording", "replay", "7", "x:0")
    args.handler.__wrapped__(Lab(), args)
    said = capsys.readouterr().out
    assert said.strip() == "replaying 1234 events of recording 7 into x:0"
    args.json = True
    args.handler.__wrapped__(Lab(), args)
    assert json.loads(capsys.readouterr().out) == {"recording": 7, "device": "x:0", "events": 1234}


def test_model_show_report_and_delete(
    capsys: pytest.CaptureFixture[str], account: Account, model_file: Path
) -> None:
    model = run_json(capsys, account, "model", "upload", str(model_file), "--input-shape", "1,8,8")
    code, out, _ = run(capsys, account, "model", "show", str(model["id"]))
    assert code == 0 and f"model {model['id']} (all_ones.pt2" in out and "fits on speck2f" in out
    assert run_json(capsys, account, "model", "show", str(model["id"]))["id"] == model["id"]
    code, out, _ = run(capsys, account, "model", "report", str(model["id"]))
    summary, header = out.splitlines()[:2]
    assert code == 0 and "fits on speck2f" in summary and header.split()[0] == "LAYER"
    assert run_json(capsys, account, "model", "report", str(model["id"]))["ok"] is True
    assert run_json(capsys, account, "model", "delete", str(model["id"])) == {
        "deleted": model["id"]
    }
    code, _, err = run(capsys, account, "model", "show", str(model["id"]))
    assert code == Exit.REFUSED and "(specklab model list shows yours)" in err


def test_deployment_verbs_and_a_raster_stream(
    capsys: pytest.CaptureFixture[str], account: Account, model_file: Path, tmp_path: Path
) -> None:
    model = run_json(capsys, account, "upload", str(model_file), "--input-shape", "1,8,8")
    booking = run_json(capsys, account, "booking", "create", "speck2fdevkit", "--minutes", "5")
    device = booking["device_id"]
    try:
        run_json(capsys, account, "deployment", "create", str(model["id"]), device)
        listed = run_json(capsys, account, "deployment", "list")
        assert [d["model_id"] for d in listed if d["device_id"] == device] == [model["id"]]
        code, out, _ = run(capsys, account, "deployment", "show", device)
        assert code == 0 and out.strip()
        # A raster [T, C, H, W]: one spike per step on each pixel in turn, 10 us apart.
        events = grid()
        raster = np.zeros((64, 1, 8, 8), np.int64)
        raster[np.arange(64), 0, events["y"], events["x"]] = 1
        np.save(tmp_path / "raster.npy", raster)
        summary = run_json(
            capsys,
            account,
            "stream",
            device,
            "--in",
            str(tmp_path / "raster.npy"),
            "--dt",
            "10",
            "--out",
            str(tmp_path / "out.npy"),
        )
        assert summary["sent"] == 64 and summary["received"] == GRID_OUTPUTS
        assert run(capsys, account, "deployment", "reset-states", device)[0] == 0
        assert run_json(capsys, account, "deployment", "undeploy", device) == {"undeployed": device}
        code, _, err = run(capsys, account, "deployment", "show", device)
        assert code == Exit.REFUSED and "deploy a model first (specklab deploy" in err
    finally:
        run_json(capsys, account, "booking", "cancel", str(booking["id"]))


def test_booking_hold_keeps_an_existing_booking_until_sigterm_releases_it(
    capsys: pytest.CaptureFixture[str], admin: Client, account: Account
) -> None:
    booking = run_json(capsys, account, "booking", "create", "speck2fdevkit", "--minutes", "5")
    env = {**os.environ, "SPECKLAB_URL": account.url, "SPECKLAB_TOKEN": account.token}
    holder = subprocess.Popen(
        [sys.executable, "-m", "specklab.client.cli", "booking", "hold", str(booking["id"])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stderr is not None
        assert "holding" in holder.stderr.readline(), holder.stderr.read()
        holder.terminate()
        _, err = holder.communicate(timeout=30)
    finally:
        holder.kill()
    assert holder.returncode == 0, err
    assert admin.booking(booking["id"]).status == "released"


def test_a_booking_that_does_not_start_within_timeout_is_cancelled(
    capsys: pytest.CaptureFixture[str], admin: Client, account: Account
) -> None:
    # Within the booking horizon, far enough ahead that it cannot start during the test.
    start = (datetime.now(UTC) + timedelta(days=20)).strftime("%Y-%m-%dT%H:%M+00:00")
    at = ("speck2fdevkit", "--minutes", "5", "--start", start, "--timeout", "1")
    code, out, err = run(capsys, account, "book", *at, "--json")
    assert code == Exit.GAVE_UP
    booking = json.loads(out)
    assert "starts in 4" in err and "giving up in 0:01" in err  # the countdown
    assert f"booking {booking['id']} of {booking['device_id']} did not start within 0:01" in err
    assert admin.booking(booking["id"]).status == "cancelled"


def test_audit_list_filters_for_admins_only(
    capsys: pytest.CaptureFixture[str], admin: Client, account: Account
) -> None:
    start = (datetime.now(UTC) + timedelta(days=22)).strftime("%Y-%m-%dT%H:%M+00:00")
    booking = run_json(capsys, account, "book", "speck2fdevkit", "--minutes", "5", "--start", start)
    run_json(capsys, account, "cancel", str(booking["id"]))
    me = Account("admin", ADMIN_TOKEN, admin.url)
    entries = run_json(capsys, me, "audit", "list", "--action", "booking.", "--limit", "1")
    assert [e["action"] for e in entries] == ["booking.cancel"]
    mine = run_json(capsys, me, "audit", "list", "--user", account.name)
    assert {"booking.create", "booking.cancel"} <= {e["action"] for e in mine}
    assert {e["actor_name"] for e in mine} == {account.name}
    code, _, err = run(capsys, account, "audit", "list")
    assert code == Exit.NOT_ALLOWED and "pass an admin's --token" in err


def test_users_and_their_tokens_over_the_api(
    capsys: pytest.CaptureFixture[str], admin: Client
) -> None:
    me = Account("admin", ADMIN_TOKEN, admin.url)
    name = f"grammar{datetime.now(UTC):%H%M%S%f}"
    user = run_json(capsys, me, "user", "create", name, "--role", "observer")
    assert user["role"] == "observer"
    assert name in run(capsys, me, "user", "list")[1]
    token = run_json(capsys, me, "token", "create", "ci", "--user", name, "--days", "7")
    assert token["user_id"] == user["id"] and token["token"].startswith("spk_")
    [listed] = run_json(capsys, me, "token", "list", "--user", name)
    assert listed["id"] == token["id"]
    observer = Account(name, token["token"], admin.url)
    assert run_json(capsys, observer, "user", "me")["name"] == name


def test_sigterm_while_waiting_for_the_start_cancels_the_booking(
    admin: Client, account: Account
) -> None:
    start = (datetime.now(UTC) + timedelta(days=21)).strftime("%Y-%m-%dT%H:%M+00:00")
    env = {**os.environ, "SPECKLAB_URL": account.url, "SPECKLAB_TOKEN": account.token}
    command = [sys.executable, "-m", "specklab.client.cli", "book", "speck2fdevkit"]
    waiter = subprocess.Popen(
        [*command, "--minutes", "5", "--start", start, "--timeout", "600", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert waiter.stdout is not None and waiter.stderr is not None
        lines = []
        while (line := waiter.stdout.readline()) not in ("}\n", ""):
            lines.append(line)
        booking = json.loads("".join(lines) + "}")
        # The countdown's first line (its \r reads as a newline in text mode).
        assert waiter.stderr.read(len("\nwaiting for")).strip() == "waiting for"
        waiter.terminate()
        _, err = waiter.communicate(timeout=30)
    finally:
        waiter.kill()
    assert waiter.returncode == Exit.INTERRUPTED, err
    assert admin.booking(booking["id"]).status == "cancelled"
