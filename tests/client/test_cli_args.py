"""Command lines read as the docs write them (argument parsing only: no daemon, no database)."""

from __future__ import annotations

import pytest

from specklab.client.cli import build_parser, main, parse_args


@pytest.mark.parametrize(
    ("monitor", "parsed"),
    [
        ("-1,dvs", [-1, "dvs"]),
        ("-1", [-1]),
        ("0,3", [0, 3]),
        ("dvs,-2", ["dvs", -2]),
        ("all", "all"),
    ],
)
def test_deploy_monitor_takes_the_documented_values(monitor: str, parsed: object) -> None:
    args = parse_args(build_parser(), ["deploy", "7", "dev", "--monitor", monitor])
    assert args.monitor == parsed


def test_deploy_monitor_refuses_what_is_no_layer(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["deploy", "7", "dev", "--monitor", "last"])
    assert exited.value.code == 2
    assert "'last' is not 'all' or comma-separated" in capsys.readouterr().err


@pytest.mark.parametrize("days", ["0", "-1", "3651", "ten"])
def test_admin_create_token_refuses_lifetimes_that_mean_something_else(
    days: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["admin", "create-token", "carol", "--expires-days", days])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--never-expires" in err or "whole number" in err
