"""Jobs over REST on an in-process daemon: submit, progress, results, cancel, bad requests."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sqlalchemy import update

from specklab.schemas.jobs import JobOptions
from specklab.server.jobs.evaluate import Plan, job_config, run_samples
from specklab.server.simulator import ChipSimulator
from specklab.server.storage.tables import JobChunk

from ..lab_client import Lab, bearer, running_lab
from .digits import Digits, digits_job_inputs, leaky, npz_upload, upload_bytes

SAMPLES = 24


@pytest.fixture(scope="module")
def digits() -> Digits:
    return digits_job_inputs(limit=SAMPLES)


@pytest.fixture(scope="module")
def shared_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    directory = tmp_path_factory.mktemp("jobs")
    with running_lab(
        directory / "data", f"sqlite:///{directory / 'db.sqlite'}", job_workers=2, compile_workers=1
    ) as lab:
        yield lab


def upload_model(lab: Lab, token: str, model: Any) -> int:
    response = lab.client.post(
        "/v1/models",
        files={"file": ("digits.pt", upload_bytes(model))},
        data={"options": json.dumps({"input_shape": [1, 8, 8]})},
        headers=bearer(token),
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture(scope="module")
def owner(shared_lab: Lab, digits: Digits) -> dict[str, Any]:
    """A user with the digits network, a leaky copy of it and its test samples uploaded."""
    _, token = shared_lab.add_user("jo")
    dataset = shared_lab.client.post(
        "/v1/datasets",
        files={"file": ("digits.npz", npz_upload(digits.samples))},
        headers=bearer(token),
    )
    assert dataset.status_code == 201, dataset.text
    return {
        "token": token,
        "model": upload_model(shared_lab, token, digits.model),
        "leaky": upload_model(shared_lab, token, leaky(digits.model)),
        "dataset": dataset.json()["id"],
    }


def submit(lab: Lab, owner: dict[str, Any], model: str = "model", **options: Any):
    body = {"model_id": owner[model], "dataset_id": owner["dataset"], "options": options}
    return lab.client.post("/v1/jobs", json=body, headers=bearer(owner["token"]))


def wait_for(lab: Lab, token: str, job_id: int, states: set[str], timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = lab.client.get(f"/v1/jobs/{job_id}", headers=bearer(token)).json()
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}: {job}")


def direct_rows(digits: Digits, options: JobOptions, count: int = SAMPLES) -> list[dict[str, Any]]:
    """What the job must find: the same samples run here, one after the other."""
    plan = Plan.of(job_config(digits.config, options), options)
    return run_samples(ChipSimulator(plan.config), plan, digits.samples, 0, count)


@pytest.mark.parametrize("readout", ["spike_count", "first_spike"])
def test_a_job_finds_what_running_the_samples_directly_finds(
    shared_lab: Lab, owner: dict[str, Any], digits: Digits, readout: str
) -> None:
    response = submit(shared_lab, owner, chunk_size=5, readout=readout)
    assert response.status_code == 201, response.text
    job = wait_for(shared_lab, owner["token"], response.json()["id"], {"done", "failed"})
    assert job["state"] == "done", job
    assert (job["samples_done"], job["progress"]) == (SAMPLES, 1.0)

    expected = direct_rows(digits, JobOptions(chunk_size=5, readout=readout))
    download = shared_lab.client.get(
        f"/v1/jobs/{job['id']}/samples", headers=bearer(owner["token"])
    )
    assert download.status_code == 200
    columns = np.load(io.BytesIO(download.content), allow_pickle=False)
    for name in ("label", "prediction", "latency_us", "counts", "spikes", "synops"):
        assert columns[name].tolist() == [row[name] for row in expected], name
    # Made once, when the job finished: downloads do not build it from the rows again.
    with shared_lab.db.write_session() as session:
        session.execute(update(JobChunk).where(JobChunk.job_id == job["id"]).values(result=None))
        session.commit()
    again = shared_lab.client.get(f"/v1/jobs/{job['id']}/samples", headers=bearer(owner["token"]))
    assert again.status_code == 200 and again.content == download.content

    summary = shared_lab.client.get(
        f"/v1/jobs/{job['id']}/summary", headers=bearer(owner["token"])
    ).json()
    predictions = np.array([row["prediction"] for row in expected])
    labels = digits.samples.labels
    assert summary["accuracy"] == pytest.approx(np.mean(predictions == labels))
    assert np.trace(np.array(summary["confusion"])) == int(np.sum(predictions == labels))
    assert summary["layers"] == [0, 1]
    assert summary["mean_synops_per_layer"][0] > 0
    record = summary["reproducibility"]
    assert record["dataset_sha256"] and record["model_sha256"] and record["chip_config_sha256"]
    assert record["device"] == "virtual speck2f" and record["options"]["readout"] == readout


def test_cancel_stops_the_job_and_frees_the_workers(shared_lab: Lab, owner: dict[str, Any]) -> None:
    # Samples that take minutes: a leaky network ticking at 1 MHz for 10 s (the most allowed).
    slow = submit(
        shared_lab, owner, "leaky", chunk_size=1, duration_us=10_000_000, slow_clock_hz=1e6
    )
    job_id = slow.json()["id"]
    wait_for(shared_lab, owner["token"], job_id, {"running"})
    runner = shared_lab.app.state.jobs.runner
    while not runner._slots:  # claimed a moment before its worker is handed the chunk
        time.sleep(0.01)
    in_use = shared_lab.client.delete(
        f"/v1/datasets/{owner['dataset']}", headers=bearer(owner["token"])
    )
    assert in_use.status_code == 409 and in_use.json()["code"] == "dataset_in_use"
    cancelled = shared_lab.client.delete(f"/v1/jobs/{job_id}", headers=bearer(owner["token"]))
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    # Within a second on a quiet machine; the bound leaves room for a loaded one.
    deadline = time.monotonic() + 10
    while runner._slots and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not runner._slots, "the cancelled chunks still hold workers"
    # The freed workers take the next job.
    quick = submit(shared_lab, owner, chunk_size=12).json()
    assert wait_for(shared_lab, owner["token"], quick["id"], {"done", "failed"})["state"] == "done"
    results = shared_lab.client.get(f"/v1/jobs/{job_id}/summary", headers=bearer(owner["token"]))
    assert results.status_code == 409 and results.json()["code"] == "job_not_done"


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"model_id": 99_999}, 404, "model_not_found"),
        ({"dataset_id": 99_999}, 404, "dataset_not_found"),
        ({"options": {"readout": "readout"}}, 422, "invalid_request"),
        ({"options": {"monitor_layers": [7]}}, 422, "invalid_request"),
        ({"options": {"chunk_size": 0}}, 422, "invalid_request"),
        ({"options": {"duration_us": 60_000_001}}, 422, "invalid_request"),
        ({"options": {"duration_us": 20_000_000, "slow_clock_hz": 1e6}}, 422, "sample_too_large"),
        ({"options": {"devices": ["speck2fdevkit:9"]}}, 404, "device_not_found"),
        ({"options": {"devices": []}}, 422, "invalid_request"),
        ({"surprise": 1}, 422, "invalid_request"),
    ],
)
def test_bad_job_requests_get_a_clear_4xx(
    shared_lab: Lab, owner: dict[str, Any], change: dict[str, Any], status: int, code: str
) -> None:
    body = {"model_id": owner["model"], "dataset_id": owner["dataset"], **change}
    response = shared_lab.client.post("/v1/jobs", json=body, headers=bearer(owner["token"]))
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


def test_a_dataset_larger_than_the_input_is_refused(shared_lab: Lab, owner: dict) -> None:
    events = np.zeros(2, [("x", "<u2"), ("y", "<u2"), ("p", "u1"), ("t", "<u8")])
    events["x"] = [1, 8]  # the digits network is 8 wide: x = 8 is outside
    data = io.BytesIO()
    np.savez(data, events=events, offsets=[0, 2], labels=[3])
    dataset = shared_lab.client.post(
        "/v1/datasets",
        files={"file": ("wide.npz", data.getvalue())},
        headers=bearer(owner["token"]),
    ).json()
    body = {"model_id": owner["model"], "dataset_id": dataset["id"]}
    response = shared_lab.client.post("/v1/jobs", json=body, headers=bearer(owner["token"]))
    assert response.status_code == 422 and response.json()["code"] == "dataset_does_not_fit"


def test_a_dataset_of_samples_longer_than_a_minute_needs_a_duration(
    shared_lab: Lab, owner: dict
) -> None:
    events = np.zeros(3, [("x", "<u2"), ("y", "<u2"), ("p", "u1"), ("t", "<u8")])
    events["t"] = [5, 0, 61_000_000]  # the second sample spans 61 s
    data = io.BytesIO()
    np.savez(data, events=events, offsets=[0, 1, 3], labels=[3, 4])
    dataset = shared_lab.client.post(
        "/v1/datasets",
        files={"file": ("long.npz", data.getvalue())},
        headers=bearer(owner["token"]),
    ).json()
    assert (dataset["longest_sample_us"], dataset["largest_sample_events"]) == (61_000_001, 2)
    body = {"model_id": owner["model"], "dataset_id": dataset["id"]}
    response = shared_lab.client.post("/v1/jobs", json=body, headers=bearer(owner["token"]))
    assert response.status_code == 422 and response.json()["code"] == "sample_too_large"
    assert "set options.duration_us" in response.json()["message"]
    body["options"] = {"duration_us": 1_000_000}
    response = shared_lab.client.post("/v1/jobs", json=body, headers=bearer(owner["token"]))
    assert response.status_code == 201, response.text
    # One event each: no spike anywhere, and the job still completes.
    job = wait_for(shared_lab, owner["token"], response.json()["id"], {"done", "failed"})
    assert job["state"] == "done", job


def test_a_chunk_size_that_cuts_a_dataset_into_over_10000_chunks_is_refused(
    shared_lab: Lab, owner: dict
) -> None:
    events = np.zeros(0, [("x", "<u2"), ("y", "<u2"), ("p", "u1"), ("t", "<u8")])
    data = io.BytesIO()
    np.savez_compressed(
        data, events=events, offsets=np.zeros(10_002, int), labels=np.zeros(10_001, int)
    )
    dataset = shared_lab.client.post(
        "/v1/datasets",
        files={"file": ("empty.npz", data.getvalue())},
        headers=bearer(owner["token"]),
    ).json()
    body = {"model_id": owner["model"], "dataset_id": dataset["id"], "options": {"chunk_size": 1}}
    before = shared_lab.client.get("/v1/jobs", headers=bearer(owner["token"])).json()
    response = shared_lab.client.post("/v1/jobs", json=body, headers=bearer(owner["token"]))
    assert response.status_code == 422 and response.json()["code"] == "too_many_chunks"
    assert "use at least 2" in response.json()["message"]
    assert shared_lab.client.get("/v1/jobs", headers=bearer(owner["token"])).json() == before


def test_others_do_not_see_a_users_jobs(shared_lab: Lab, owner: dict[str, Any]) -> None:
    job = submit(shared_lab, owner, chunk_size=24).json()
    _, stranger = shared_lab.add_user("kim")
    assert (
        shared_lab.client.get(f"/v1/jobs/{job['id']}", headers=bearer(stranger)).status_code == 404
    )
    assert shared_lab.client.get("/v1/jobs", headers=bearer(stranger)).json() == []
    assert (
        shared_lab.client.delete(f"/v1/jobs/{job['id']}", headers=bearer(stranger)).status_code
        == 404
    )
    wait_for(shared_lab, owner["token"], job["id"], {"done"})


def test_a_long_job_does_not_starve_another_users_short_one(
    shared_lab: Lab, owner: dict[str, Any], digits: Digits
) -> None:
    _, token = shared_lab.add_user("late")
    other = {**owner, "token": token, "model": upload_model(shared_lab, token, digits.model)}
    other["dataset"] = shared_lab.client.post(
        "/v1/datasets",
        files={"file": ("digits.npz", npz_upload(digits.samples))},
        headers=bearer(token),
    ).json()["id"]
    # Every worker busy with the long job's one-sample chunks (about a second each) ...
    long = submit(
        shared_lab, owner, "leaky", chunk_size=1, duration_us=1_000_000, slow_clock_hz=100_000
    ).json()
    wait_for(shared_lab, owner["token"], long["id"], {"running"})
    # ... the other user's job, submitted later, goes next and finishes first.
    short = submit(shared_lab, other, chunk_size=SAMPLES).json()
    assert wait_for(shared_lab, token, short["id"], {"done"})["state"] == "done"
    now = shared_lab.client.get(f"/v1/jobs/{long['id']}", headers=bearer(owner["token"])).json()
    assert now["state"] == "running" and 0 < now["samples_done"] < SAMPLES
    shared_lab.client.delete(f"/v1/jobs/{long['id']}", headers=bearer(owner["token"]))
