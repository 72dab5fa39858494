"""Datasets stored before migration 0009 have no per-sample figures: the first job submitted on
one computes them from the stored arrays and stores them, so the per-sample limits hold."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sqlalchemy import update

from specklab.server.jobs.limits import MAX_SAMPLE_US
from specklab.server.storage.tables import DatasetRecord

from ..lab_client import Lab, bearer, running_lab
from .digits import Digits, digits_job_inputs
from .test_jobs_api import upload_model

EVENT = [("x", "<u2"), ("y", "<u2"), ("p", "u1"), ("t", "<u8")]


@pytest.fixture(scope="module")
def digits() -> Digits:
    return digits_job_inputs(limit=2)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    directory = tmp_path_factory.mktemp("figures")
    with running_lab(
        directory / "data", f"sqlite:///{directory / 'db.sqlite'}", job_workers=1
    ) as running:
        yield running


def upload(lab: Lab, token: str, times: list[list[int]]) -> int:
    """A dataset of one sample per list of event times (events at x = y = p = 0)."""
    sizes = [len(sample) for sample in times]
    events = np.zeros(sum(sizes), EVENT)
    events["t"] = [t for sample in times for t in sample]
    data = io.BytesIO()
    np.savez(
        data,
        events=events,
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        labels=np.zeros(len(times), np.int64),
    )
    response = lab.client.post(
        "/v1/datasets", files={"file": ("d.npz", data.getvalue())}, headers=bearer(token)
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def as_before_0009(lab: Lab, dataset_id: int) -> None:
    """The row as migration 0009 left a dataset stored before it: figures 0."""
    with lab.db.write_session() as session:
        session.execute(
            update(DatasetRecord)
            .where(DatasetRecord.id == dataset_id)
            .values(longest_sample_us=0, largest_sample_events=0)
        )
        session.commit()


def figures(lab: Lab, token: str, dataset_id: int) -> tuple[int, int]:
    info: dict[str, Any] = lab.client.get(
        f"/v1/datasets/{dataset_id}", headers=bearer(token)
    ).json()
    return info["longest_sample_us"], info["largest_sample_events"]


def submit(lab: Lab, token: str, model: int, dataset: int, **options: Any) -> Any:
    body = {"model_id": model, "dataset_id": dataset, "options": options}
    return lab.client.post("/v1/jobs", json=body, headers=bearer(token))


def test_an_old_dataset_s_oversized_sample_is_refused_at_submit(lab: Lab, digits: Digits) -> None:
    _, token = lab.add_user("old")
    model = upload_model(lab, token, digits.model)
    too_long = MAX_SAMPLE_US + 1_000  # the second sample's last event: past a minute
    dataset = upload(lab, token, [[0, 5, 9], [0, too_long]])
    assert figures(lab, token, dataset) == (too_long + 1, 3)
    as_before_0009(lab, dataset)
    assert figures(lab, token, dataset) == (0, 0)

    refused = submit(lab, token, model, dataset)
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "sample_too_large"
    assert refused.json()["detail"]["limit"] == MAX_SAMPLE_US
    # Computed once, from the stored arrays, and kept.
    assert figures(lab, token, dataset) == (too_long + 1, 3)
    # Within the limits with a duration, as for any dataset.
    cut = submit(lab, token, model, dataset, duration_us=1_000)
    assert cut.status_code == 201, cut.text


def test_the_figures_are_stored_for_every_row_of_the_same_bytes(lab: Lab, digits: Digits) -> None:
    _, token = lab.add_user("twice")
    model = upload_model(lab, token, digits.model)
    times = [[0, 1, 2, 3], [0, 700]]
    first, second = upload(lab, token, times), upload(lab, token, times)
    as_before_0009(lab, first)
    as_before_0009(lab, second)

    accepted = submit(lab, token, model, first)
    assert accepted.status_code == 201, accepted.text
    assert figures(lab, token, first) == (701, 4)
    assert figures(lab, token, second) == (701, 4)
