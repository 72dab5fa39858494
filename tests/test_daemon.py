"""The daemon as a real process: start, answer, stop cleanly."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from .daemon import run_daemon
from .samna_stub import PYPI_STUB, write_samna_dist


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_daemon_starts_answers_and_stops_cleanly(tmp_path: Path, sig: int) -> None:
    with run_daemon(tmp_path / "data") as daemon:
        health = httpx.get(f"{daemon.url}/v1/health").json()
        assert health["status"] == "ok"
        assert set(health["checks"]) == {"database", "devices", "compile_pool"}
        assert httpx.get(f"{daemon.url}/v1/health/live").json()["status"] == "ok"
        assert "specklab_devices" in httpx.get(f"{daemon.url}/metrics").text
        version = httpx.get(f"{daemon.url}/v1/version").json()
        assert set(version) == {"specklab", "python", "numpy", "torch", "samna", "compile_sandbox"}
        assert httpx.get(f"{daemon.url}/docs").status_code == 200
        assert "/v1/health" in httpx.get(f"{daemon.url}/openapi.json").json()["paths"]
        assert daemon.stop(sig) in (0, -sig, 128 + sig)
    assert "Application shutdown complete" in daemon.log()
    assert "Traceback" not in daemon.log()


def test_unknown_route_gets_a_json_error(tmp_path: Path) -> None:
    with run_daemon(tmp_path / "data") as daemon:
        response = httpx.get(f"{daemon.url}/v1/nothing-here")
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


def test_sigusr1_writes_every_threads_stack_to_the_log_and_the_daemon_goes_on(
    tmp_path: Path,
) -> None:
    with run_daemon(tmp_path / "data") as daemon:
        daemon.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while "most recent call first" not in daemon.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "(most recent call first)" in daemon.log()
        assert "uvicorn" in daemon.log()  # the event loop's thread, where requests are served
        assert httpx.get(f"{daemon.url}/v1/health").status_code == 200


def test_config_file_and_environment_reach_the_daemon(tmp_path: Path) -> None:
    config = tmp_path / "specklab.toml"
    config.write_text('log_level = "debug"\n')
    with run_daemon(tmp_path / "data", "--config", str(config)) as daemon:
        assert httpx.get(f"{daemon.url}/v1/health").status_code == 200
    assert "DEBUG" in daemon.log()


def test_version_reports_the_pypi_samna_stub_without_importing_it(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    site = tmp_path / "site"
    write_samna_dist(site, PYPI_STUB.format(marker=str(marker)), "0.48.6")
    with run_daemon(tmp_path / "data", python_path=[site]) as daemon:
        version = httpx.get(f"{daemon.url}/v1/version").json()
        assert version["samna"] == "PyPI stub present, real package not installed"
    assert not marker.exists()
