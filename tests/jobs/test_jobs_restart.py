"""A real daemon killed mid-job finishes the job after a restart, with identical results, on
SQLite and on PostgreSQL."""

from __future__ import annotations

import io
import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from specklab.schemas.jobs import JobOptions
from specklab.server.datasets.formats import Samples
from specklab.server.jobs.evaluate import Plan, job_config, run_samples
from specklab.server.simulator import ChipSimulator

from ..daemon import run_daemon
from ..db_fixtures import POSTGRES_ENV, fresh_postgres_database, postgres_url
from .digits import compile_network, digits_job_inputs, leaky, npz_upload, upload_bytes

ADMIN = "spk_restart-admin-token-0123456789"
SAMPLES = 12
#: Each sample ticks a leaky network 30,000 times: long enough to kill the daemon mid-job.
OPTIONS = JobOptions(chunk_size=1, duration_us=300_000, slow_clock_hz=100_000)


@dataclass
class KilledJob:
    """A job whose daemon was killed (SIGKILL) halfway through it."""

    job_id: int
    auth: dict[str, str]
    model: Any
    samples: Samples


def _start_and_kill(data_dir: Path, env: dict[str, str]) -> KilledJob:
    """Upload the digits network and set through a daemon, submit the job, and kill the
    daemon once two samples are done."""
    digits = digits_job_inputs(limit=SAMPLES)
    model = leaky(digits.model)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with run_daemon(data_dir, env=env) as daemon:
        client = httpx.Client(base_url=daemon.url, timeout=600)
        user = client.post("/v1/users", json={"name": "rex", "role": "user"}, headers=admin)
        token = client.post(
            "/v1/tokens", json={"name": "t", "user_id": user.json()["id"]}, headers=admin
        ).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        model_id = client.post(
            "/v1/models",
            files={"file": ("m.pt", upload_bytes(model))},
            data={"options": json.dumps({"input_shape": [1, 8, 8]})},
            headers=auth,
        ).json()["id"]
        dataset_id = client.post(
            "/v1/datasets", files={"file": ("d.npz", npz_upload(digits.samples))}, headers=auth
        ).json()["id"]
        body = {
            "model_id": model_id,
            "dataset_id": dataset_id,
            "options": OPTIONS.model_dump(mode="json"),
        }
        job_id = client.post("/v1/jobs", json=body, headers=auth).json()["id"]
        while (job := client.get(f"/v1/jobs/{job_id}", headers=auth).json())["samples_done"] < 2:
            assert job["state"] in ("queued", "running"), job
            time.sleep(0.02)
        daemon.stop(signal.SIGKILL)
    assert 0 < job["samples_done"] < SAMPLES, "the job should be killed halfway"
    return KilledJob(job_id, auth, model, digits.samples)


def _finish_and_compare(data_dir: Path, env: dict[str, str], killed: KilledJob) -> None:
    """Run a daemon until the job is done; its rows are those of the simulator run directly."""
    with run_daemon(data_dir, env=env) as daemon:
        client = httpx.Client(base_url=daemon.url, timeout=600, headers=killed.auth)
        deadline = time.monotonic() + 300
        while (job := client.get(f"/v1/jobs/{killed.job_id}").json())["state"] != "done":
            assert job["state"] in ("queued", "running") and time.monotonic() < deadline, job
            time.sleep(0.05)
        download = client.get(f"/v1/jobs/{killed.job_id}/samples")
    columns = np.load(io.BytesIO(download.content), allow_pickle=False)

    plan = Plan.of(job_config(compile_network(killed.model), OPTIONS), OPTIONS)
    expected = run_samples(ChipSimulator(plan.config), plan, killed.samples, 0, SAMPLES)
    for name in ("label", "prediction", "latency_us", "counts", "spikes", "synops"):
        assert columns[name].tolist() == [row[name] for row in expected], name


def _env(database_url: str, host: str) -> dict[str, str]:
    return {
        "SPECKLAB_ADMIN_TOKEN": ADMIN,
        "SPECKLAB_VIRTUAL": "none",
        "SPECKLAB_JOB_WORKERS": "2",
        "SPECKLAB_DATABASE_URL": database_url,
        "SPECKLAB_HOST_NAME": host,
    }


def test_a_killed_daemon_resumes_the_job_and_finds_the_same_results(
    tmp_path: Path, database_url: str
) -> None:
    """On SQLite and on PostgreSQL (``database_url``: each backend in turn)."""
    env = _env(database_url, "restarting-host")
    killed = _start_and_kill(tmp_path / "data", env)
    _finish_and_compare(tmp_path / "data", env, killed)


@pytest.mark.postgres
def test_another_host_of_the_lab_finishes_a_job_whose_host_died(tmp_path: Path) -> None:
    """The second host has a data dir of its own: the job's configuration and dataset reach it
    through the lab's database."""
    server = postgres_url()
    if server is None:
        pytest.skip(f"no PostgreSQL: set {POSTGRES_ENV} (see .ci/postgres.sh)")
    with fresh_postgres_database(server) as url:
        # The dead host's chunks go back to the queue when their leases run out.
        lease = {"SPECKLAB_JOB_LEASE_S": "2"}
        killed = _start_and_kill(tmp_path / "host-a", {**_env(url, "host-a"), **lease})
        _finish_and_compare(tmp_path / "host-b", {**_env(url, "host-b"), **lease}, killed)
