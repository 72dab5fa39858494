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


def test_evaluate_on_booked_devices_sync_async_and_from_the_command_line(
    capsys: pytest.CaptureFixture[str], account: Account, digits: Digits
) -> None:
    with account.client() as lab:
        model = lab.compile(digits.model, input_shape=(1, 8, 8))
        dataset = lab.upload_dataset(npz_upload(digits.samples), name="digits")
        virtual = lab.evaluate(model, dataset, chunk_size=4)
        with (
            lab.book("speck2fdevkit", minutes=5) as first,
            lab.book("speck2fdevkit", minutes=5) as second,
        ):
            devices = [first.device_id, second.device_id]
            summary = lab.evaluate(model, dataset, chunk_size=3, devices=[first, second])
            assert summary.job.options.devices == devices
            assert summary.reproducibility.device.startswith(devices[0])

            async def evaluate() -> list[str] | None:
                async with AsyncClient(account.url, account.token) as lab:
                    done = await lab.evaluate(model.id, dataset.id, devices=devices[::-1])
                    return done.job.options.devices

            assert asyncio.run(evaluate()) == devices[::-1]
            argv = ["evaluate", "--url", account.url, "--token", account.token, "--json"]
            devices_argv = ["--device", devices[0], "--device", devices[1]]
            assert main([*argv, str(model.id), str(dataset.id), *devices_argv]) == 0
            printed = json.loads(capsys.readouterr().out)
            assert printed["job"]["options"]["devices"] == devices
    assert summary.accuracy == virtual.accuracy == printed["accuracy"]
    assert summary.confusion == virtual.confusion
