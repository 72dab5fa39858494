"""A real daemon killed mid-job finishes the job after a restart, with identical results, on
SQLite and on PostgreSQL."""

from __future__ import annotations

import io
import json
import signal
import time
from pathlib import Path

import httpx
import numpy as np

from specklab.schemas.jobs import JobOptions
from specklab.server.jobs.evaluate import Plan, job_config, run_samples
from specklab.server.simulator import ChipSimulator

from ..daemon import run_daemon
from .digits import compile_network, digits_job_inputs, leaky, npz_upload, upload_bytes

ADMIN = "spk_restart-admin-token-0123456789"
SAMPLES = 12
#: Each sample ticks a leaky network 30,000 times: long enough to kill the daemon mid-job.
OPTIONS = JobOptions(chunk_size=1, duration_us=300_000, slow_clock_hz=100_000)


def test_a_killed_daemon_resumes_the_job_and_finds_the_same_results(
    tmp_path: Path, database_url: str
) -> None:
    """On SQLite and on PostgreSQL (``database_url``: each backend in turn)."""
    digits = digits_job_inputs(limit=SAMPLES)
    model = leaky(digits.model)
    env = {
        "SPECKLAB_ADMIN_TOKEN": ADMIN,
        "SPECKLAB_VIRTUAL": "none",
        "SPECKLAB_JOB_WORKERS": "2",
        "SPECKLAB_DATABASE_URL": database_url,
        "SPECKLAB_HOST_NAME": "restarting-host",
    }
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with run_daemon(tmp_path / "data", env=env) as daemon:
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

    with run_daemon(tmp_path / "data", env=env) as daemon:
        client = httpx.Client(base_url=daemon.url, timeout=600)
        deadline = time.monotonic() + 300
        while (job := client.get(f"/v1/jobs/{job_id}", headers=auth).json())["state"] != "done":
            assert job["state"] in ("queued", "running") and time.monotonic() < deadline, job
            time.sleep(0.05)
        download = client.get(f"/v1/jobs/{job_id}/samples", headers=auth)
    columns = np.load(io.BytesIO(download.content), allow_pickle=False)

    plan = Plan.of(job_config(compile_network(model), OPTIONS), OPTIONS)
    expected = run_samples(ChipSimulator(plan.config), plan, digits.samples, 0, SAMPLES)
    for name in ("label", "prediction", "latency_us", "counts", "spikes", "synops"):
        assert columns[name].tolist() == [row[name] for row in expected], name
