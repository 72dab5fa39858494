"""The Jobs page in headless Chromium: the list with state and progress, a job's result as the
API reports it (accuracy, per-class accuracy, confusion matrix, reproducibility record,
downloads), cancel by the owner, and no cancel for anyone else."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ..jobs.digits import digits_job_inputs, leaky, npz_upload, upload_bytes
from ..stream_lab import StreamLab
from .conftest import screenshot, sign_in

pytestmark = pytest.mark.timeout(600)

SAMPLES = 12


def upload_model(http: httpx.Client, model: Any) -> int:
    response = http.post(
        "/v1/models",
        files={"file": ("digits.pt", upload_bytes(model))},
        data={"options": json.dumps({"input_shape": [1, 8, 8]})},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def wait_for_state(http: httpx.Client, job_id: int, states: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    while (job := http.get(f"/v1/jobs/{job_id}").json())["state"] not in states:
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


@pytest.fixture(scope="module")
def jobs(lab: StreamLab) -> dict[str, int]:
    """ada's finished digits job and a job of hers that cannot finish during the tests (a
    leaky network ticking at 1 MHz for ten seconds per sample, the most a sample may tick)."""
    digits = digits_job_inputs(limit=SAMPLES)
    with lab.http("ada") as http:
        dataset = http.post(
            "/v1/datasets", files={"file": ("digits.npz", npz_upload(digits.samples))}
        )
        assert dataset.status_code == 201, dataset.text
        body = {"model_id": upload_model(http, digits.model), "dataset_id": dataset.json()["id"]}
        done = http.post("/v1/jobs", json={**body, "options": {"chunk_size": 4}}).json()["id"]
        assert wait_for_state(http, done, {"done", "failed"})["state"] == "done"
        slow_options = {"chunk_size": 1, "duration_us": 10_000_000, "slow_clock_hz": 1e6}
        slow_body = {**body, "model_id": upload_model(http, leaky(digits.model))}
        slow = http.post("/v1/jobs", json={**slow_body, "options": slow_options}).json()["id"]
    return {"done": done, "slow": slow}


def test_a_jobs_result_shows_what_the_api_reports_and_downloads(
    browser: object, lab: StreamLab, jobs: dict[str, int], tmp_path: Path
) -> None:
    with lab.http("ada") as http:
        summary = http.get(f"/v1/jobs/{jobs['done']}/summary").json()
        samples = np.load(io.BytesIO(http.get(f"/v1/jobs/{jobs['done']}/samples").content))
    page = sign_in(browser, lab, "ada", "#/jobs")
    row = f"#jobs tr[data-job='{jobs['done']}']"
    page.wait_for_selector(row)
    assert page.get_attribute(row, "data-state") == "done"
    assert page.text_content(f"{row} .progress") == f"{SAMPLES} / {SAMPLES} samples"
    assert page.query_selector(f"{row} .job-cancel") is None
    screenshot(page, "jobs")

    page.click(f"{row} a[href='#/jobs/{jobs['done']}']")
    page.wait_for_selector("#job-result")
    assert page.text_content("#job-accuracy") == f"{100 * summary['accuracy']:.1f} %"
    cells = page.eval_on_selector_all(
        "#confusion tbody tr",
        "rows => rows.map(r => [...r.querySelectorAll('td')].map(c => c.textContent))",
    )
    assert [[int(c) for c in row[:-2]] for row in cells] == summary["confusion"]
    assert [int(row[-2]) for row in cells] == summary["no_output"]
    shown = [None if row[-1] == "-" else row[-1] for row in cells]
    expected = [None if a is None else f"{100 * a:.1f} %" for a in summary["per_class_accuracy"]]
    assert shown == expected
    record = summary["reproducibility"]
    for field in ("model_sha256", "dataset_sha256", "chip_config_sha256", "specklab_version"):
        assert page.text_content(f"#job-record dd[data-field={field}]") == record[field]
    screenshot(page, "job-result")

    with page.expect_download() as download:
        page.click("#download-samples")
    download.value.save_as(tmp_path / "samples.npz")
    saved = np.load(tmp_path / "samples.npz")
    assert saved["prediction"].tolist() == samples["prediction"].tolist()
    with page.expect_download() as download:
        page.click("#download-summary")
    download.value.save_as(tmp_path / "summary.json")
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert page.errors == []


def test_the_list_follows_a_running_job_with_its_progress_and_eta(
    browser: object, lab: StreamLab, jobs: dict[str, int]
) -> None:
    # The finished job is shown running by intercepted list answers, until the interception
    # ends: then the page's polling draws its real state. No step depends on the job's speed.
    page = sign_in(browser, lab, "ada")
    running = {"state": "running", "samples_done": 6, "progress": 0.5, "eta_s": 150.0}

    def listed(route: Any) -> None:
        answer = route.fetch().json()
        for job in answer:
            if job["id"] == jobs["done"]:
                job.update(running)
        route.fulfill(json=answer)

    page.route("**/v1/jobs", listed)
    page.goto(f"{lab.daemon.url}/#/jobs")
    row = f"#jobs tr[data-job='{jobs['done']}']"
    page.wait_for_selector(f"{row}[data-state=running]")
    assert page.text_content(f"{row} .progress") == f"6 / {SAMPLES} samples"
    assert page.text_content(f"{row} .eta") == "2 min"
    page.unroute("**/v1/jobs")
    page.wait_for_selector(f"{row}[data-state=done]")
    assert page.text_content(f"{row} .eta") == ""
    assert page.errors == []


def test_only_the_owner_and_admins_may_cancel_and_the_owner_cancels(
    browser: object, lab: StreamLab, jobs: dict[str, int]
) -> None:
    row = f"#jobs tr[data-job='{jobs['slow']}']"
    admin = sign_in(browser, lab, "admin", "#/jobs")
    admin.wait_for_selector(f"{row} .job-cancel")  # an admin could; ada does it below
    assert admin.text_content(f"{row} td:nth-child(2)") == "ada"
    for other in ("bob", "olga"):  # jobs are their owner's: others are not shown them
        page = sign_in(browser, lab, other, "#/jobs")
        page.wait_for_selector("#jobs")
        assert page.query_selector(row) is None and page.query_selector(".job-cancel") is None

    page = sign_in(browser, lab, "ada", "#/jobs")
    page.wait_for_selector(f"{row} .job-cancel")
    assert page.get_attribute(row, "data-state") in {"queued", "running"}
    page.click(f"{row} .job-cancel")
    page.wait_for_selector(f"{row}[data-state=cancelled]")
    assert page.query_selector(f"{row} .job-cancel") is None
    with lab.http("ada") as http:
        assert http.get(f"/v1/jobs/{jobs['slow']}").json()["state"] == "cancelled"
    page.goto(f"{lab.daemon.url}/#/jobs/{jobs['slow']}")
    page.wait_for_selector("#job[data-state=cancelled]")
    assert page.query_selector("#job-result") is None
    assert page.errors == [] and admin.errors == []
