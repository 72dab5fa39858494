"""``lab.evaluate`` (sync and async) and ``specklab evaluate`` against the suite's daemon."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from specklab.client import AsyncClient
from specklab.client.cli import main

from ..jobs.digits import Digits, digits_job_inputs, npz_upload
from .conftest import Account

SAMPLES = 12


@pytest.fixture(scope="module")
def digits() -> Digits:
    return digits_job_inputs(limit=SAMPLES)


def test_evaluate_sync_and_async_agree(account: Account, digits: Digits) -> None:
    with account.client() as lab:
        model = lab.compile(digits.model, input_shape=(1, 8, 8))
        dataset = lab.upload_dataset(npz_upload(digits.samples), name="digits")
        assert [d.id for d in lab.datasets()] == [dataset.id]
        summary = lab.evaluate(model, dataset, chunk_size=4)
        columns = lab.job_samples(summary.job)

    async def evaluate() -> float:
        async with AsyncClient(account.url, account.token) as lab:
            return (await lab.evaluate(model.id, dataset.id, chunk_size=6)).accuracy

    assert summary.job.state == "done" and summary.job.samples == SAMPLES
    assert columns["label"].tolist() == digits.samples.labels.tolist()
    assert summary.accuracy == pytest.approx(np.mean(columns["label"] == columns["prediction"]))
    assert asyncio.run(evaluate()) == summary.accuracy


def test_the_evaluate_command_uploads_runs_and_prints(
    capsys: pytest.CaptureFixture[str], account: Account, digits: Digits, tmp_path: Path
) -> None:
    with account.client() as lab:
        model = lab.compile(digits.model, input_shape=(1, 8, 8))
    data = tmp_path / "digits.npz"
    data.write_bytes(npz_upload(digits.samples))
    argv = ["evaluate", "--url", account.url, "--token", account.token]
    assert main([*argv, str(model.id), str(data), "--chunk-size", "5", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["job"]["samples"] == SAMPLES and 0 <= summary["accuracy"] <= 1
    assert main([*argv, str(model.id), str(summary["job"]["dataset_id"])]) == 0
    table = capsys.readouterr().out
    assert f"accuracy {summary['accuracy']:.2%}" in table
    assert "SYNOPS/SAMPLE" in table
