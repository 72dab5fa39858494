"""Evaluation jobs: throughput for one and for every worker, accuracy, and job overhead.

The digits network of ``tests/jobs/digits.py`` (trained here, compiled by specklab) runs
over its test split, repeated ``BENCH_EVAL_REPEAT`` times (default 4: 1,796 samples), as jobs
on an in-process daemon (SQLite) with one evaluation worker and with every core's worth.
Throughput is samples over the job's own wall time (first chunk claimed to last finished).
The direct figure runs the same samples through the simulator in this process, one after
the other (``jobs.evaluate.run_samples``, what a worker runs), so the overhead of the job
(database, processes, chunking, storing rows) is ``1 worker job time / direct time - 1``.

Prints one JSON object. ``BENCH_EVAL_SAMPLES`` limits the test split (for a smoke run).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from specklab.schemas.jobs import JobOptions
from specklab.server.datasets.formats import Samples
from specklab.server.jobs.evaluate import Plan, job_config, run_samples
from specklab.server.jobs.lifespan import worker_count
from specklab.server.simulator import ChipSimulator
from tests.jobs.digits import digits_job_inputs, npz_upload, upload_bytes
from tests.lab_client import Lab, bearer, running_lab


def repeated(samples: Samples, times: int) -> Samples:
    sizes = np.diff(samples.offsets)
    offsets = np.concatenate([[0], np.cumsum(np.tile(sizes, times))]).astype(np.int64)
    return Samples(np.tile(samples.events, times), offsets, np.tile(samples.labels, times))


def run_job(lab: Lab, token: str, model_id: int, dataset_id: int) -> dict[str, Any]:
    body = {"model_id": model_id, "dataset_id": dataset_id}
    job = lab.client.post("/v1/jobs", json=body, headers=bearer(token)).json()
    while (state := lab.client.get(f"/v1/jobs/{job['id']}", headers=bearer(token)).json())[
        "state"
    ] not in ("done", "failed", "cancelled"):
        time.sleep(0.05)
    assert state["state"] == "done", state
    return lab.client.get(f"/v1/jobs/{job['id']}/summary", headers=bearer(token)).json()


def on_daemon(workers: int, digits: Any, samples: Samples) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory() as directory,
        running_lab(
            Path(directory) / "data",
            f"sqlite:///{directory}/db.sqlite",
            job_workers=workers,
            compile_workers=1,
        ) as lab,
    ):
        token = lab.add_user("bench")[1]
        model = lab.client.post(
            "/v1/models",
            files={"file": ("digits.pt", upload_bytes(digits.model))},
            data={"options": json.dumps({"input_shape": [1, 8, 8]})},
            headers=bearer(token),
        ).json()["id"]
        dataset = lab.client.post(
            "/v1/datasets",
            files={"file": ("digits.npz", npz_upload(samples))},
            headers=bearer(token),
        ).json()["id"]
        run_job(lab, token, model, dataset)  # warm-up: starts the worker processes
        return run_job(lab, token, model, dataset)


def main() -> None:
    limit = int(os.environ.get("BENCH_EVAL_SAMPLES", "0")) or None
    digits = digits_job_inputs(limit)
    samples = repeated(digits.samples, int(os.environ.get("BENCH_EVAL_REPEAT", "4")))
    options = JobOptions()
    plan = Plan.of(job_config(digits.config, options), options)
    sim = ChipSimulator(plan.config)
    run_samples(sim, plan, samples, 0, 1)  # compiles or loads the kernels
    started = time.perf_counter()
    rows = run_samples(sim, plan, samples, 0, len(samples))
    direct_s = time.perf_counter() - started

    workers = worker_count(0)
    one = on_daemon(1, digits, samples)
    every = on_daemon(workers, digits, samples)
    n = len(samples)
    figures = {
        "samples": n,
        "workers": workers,
        "ann_accuracy": digits.ann_accuracy,
        "virtual_devkit_accuracy": every["accuracy"],
        "direct_accuracy": float(np.mean([r["prediction"] == r["label"] for r in rows])),
        "direct_samples_per_s": n / direct_s,
        "job_1_worker_samples_per_s": n / one["wall_time_s"],
        "job_all_workers_samples_per_s": n / every["wall_time_s"],
        "scaling": one["wall_time_s"] / every["wall_time_s"],
        "job_overhead": one["wall_time_s"] / direct_s - 1,
        # The 1-worker job's summed sample time against its wall time: what the job adds
        # around the samples (the rest of the overhead is in the samples themselves).
        "job_1_worker_busy": one["sample_time_s"] / one["wall_time_s"],
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
