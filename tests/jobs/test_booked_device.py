"""Jobs on booked devices: a virtual devkit of the devices list and a real devkit (the samna
test double), one sample after the other with the states reset, only under a booking."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from specklab.schemas.jobs import JobOptions

from ..devices.conftest import DOUBLE_PATH
from ..lab_client import Lab, bearer, running_lab
from .digits import Digits, digits_job_inputs, npz_upload
from .test_jobs_api import direct_rows, upload_model, wait_for

SAMPLES = 6


@pytest.fixture(scope="module")
def digits() -> Digits:
    return digits_job_inputs(limit=SAMPLES)


@pytest.fixture(scope="module")
def double() -> Iterator[ModuleType]:
    """The samna test double with one Speck 2F devkit plugged in, for this module's lab."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(DOUBLE_PATH))
        import samna

        samna.STATE.reset(devices=[samna.device.DeviceInfo("Speck2fDevKit", "SER1", 2, 7, 5)])
        yield samna
        for name in [n for n in sys.modules if n == "samna" or n.startswith("samna.")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, double: ModuleType) -> Iterator[Lab]:
    """A lab with the real devkit and three virtual devkits (two speck2f, a speck2e)."""
    directory: Path = tmp_path_factory.mktemp("booked")
    with running_lab(
        directory / "data",
        f"sqlite:///{directory / 'db.sqlite'}",
        virtual=["speck2fdevkit=2", "speck2edevkit=1"],
        job_workers=1,
    ) as running:
        yield running


def prepare(lab: Lab, digits: Digits, name: str, *devices: str) -> dict[str, Any]:
    """A user with the digits network and samples, holding bookings of ``devices`` (their
    ids in ``bookings``)."""
    _, token = lab.add_user(name)
    dataset = lab.client.post(
        "/v1/datasets",
        files={"file": ("digits.npz", npz_upload(digits.samples))},
        headers=bearer(token),
    )
    assert dataset.status_code == 201, dataset.text
    bookings = []
    for device in devices:
        booked = lab.client.post(
            "/v1/bookings", headers=bearer(token), json={"device_id": device, "minutes": 30}
        )
        assert booked.status_code == 201, booked.text
        bookings.append(booked.json()["id"])
    return {
        "token": token,
        "model": upload_model(lab, token, digits.model),
        "dataset": dataset.json()["id"],
        "bookings": bookings,
    }


def submit(lab: Lab, user: dict[str, Any], **options: Any) -> Any:
    body = {"model_id": user["model"], "dataset_id": user["dataset"], "options": options}
    return lab.client.post("/v1/jobs", json=body, headers=bearer(user["token"]))


def columns(lab: Lab, user: dict[str, Any], job_id: int) -> Any:
    download = lab.client.get(f"/v1/jobs/{job_id}/samples", headers=bearer(user["token"]))
    assert download.status_code == 200, download.text
    return np.load(io.BytesIO(download.content), allow_pickle=False)


def test_a_job_on_a_booked_virtual_devkit_finds_what_the_simulator_finds(
    lab: Lab, digits: Digits
) -> None:
    user = prepare(lab, digits, "vi", "virtual-speck2fdevkit:0")

    # Refused at submit: a device not booked, one carrying another chip.
    unbooked = submit(lab, user, device="virtual-speck2edevkit:0")
    assert unbooked.status_code == 409 and unbooked.json()["code"] == "not_booked"
    other_chip = lab.client.post(
        "/v1/bookings",
        headers=bearer(user["token"]),
        json={"device_id": "virtual-speck2edevkit:0", "minutes": 30},
    )
    assert other_chip.status_code == 201, other_chip.text
    wrong = submit(lab, user, device="virtual-speck2edevkit:0")
    assert wrong.status_code == 422 and "speck2e" in wrong.json()["message"], wrong.text

    response = submit(lab, user, device="virtual-speck2fdevkit:0", chunk_size=4)
    assert response.status_code == 201, response.text
    job = wait_for(lab, user["token"], response.json()["id"], {"done", "failed"}, timeout=120)
    assert job["state"] == "done", job
    assert job["options"]["devices"] == ["virtual-speck2fdevkit:0@test-host"]
    expected = direct_rows(digits, JobOptions(), SAMPLES)
    found = columns(lab, user, job["id"])
    for name in ("label", "prediction", "latency_us", "counts", "spikes", "synops"):
        assert found[name].tolist() == [row[name] for row in expected], name
    summary = lab.client.get(f"/v1/jobs/{job['id']}/summary", headers=bearer(user["token"])).json()
    assert summary["reproducibility"]["device"].startswith("virtual-speck2fdevkit:0@test-host")
    # The device is free again between jobs: its owner can deploy on it.
    deployed = lab.client.post(
        "/v1/devices/virtual-speck2fdevkit:0/deployment",
        headers=bearer(user["token"]),
        json={"model_id": user["model"]},
    )
    assert deployed.status_code == 201, deployed.text


def _respond_by_position(samna: ModuleType, output_core: int) -> None:
    """The double's chip answers each input spike at (x, y) with an output spike of feature
    (x + y) % 10, 5 us later."""
    event = samna.speck2f.event

    def respond(inputs: list[Any]) -> list[Any]:
        return [
            event.Spike(
                layer=output_core, x=0, y=0, feature=(e.x + e.y) % 10, timestamp=e.timestamp + 5
            )
            for e in inputs
            if type(e) is event.Spike
        ]

    samna.STATE.responder = respond


def test_a_job_on_a_booked_real_devkit_runs_each_sample_after_a_reset(
    lab: Lab, double: ModuleType, digits: Digits
) -> None:
    device = "speck2fdevkit:sn-SER1"
    stranger = prepare(lab, digits, "st")
    refused = submit(lab, stranger, device=device)
    assert refused.status_code == 409 and refused.json()["code"] == "not_booked"

    config = digits.config
    _respond_by_position(double, config.core(config.outputs[0]))
    user = prepare(lab, digits, "rae", "speck2fdevkit:0")
    token = user["token"]
    double.STATE.calls.clear()
    response = submit(lab, user, device="speck2fdevkit:0", chunk_size=4, duration_us=8000)
    assert response.status_code == 201, response.text
    job = wait_for(lab, token, response.json()["id"], {"done", "failed"}, timeout=120)
    assert job["state"] == "done", job

    found = columns(lab, user, job["id"])
    for index in range(SAMPLES):
        events = digits.samples.sample(index)
        events = events[events["t"] < 8000]
        counts = np.bincount((events["x"] + events["y"]) % 10, minlength=10)
        assert found["counts"][index].tolist() == counts.tolist()
        assert found["prediction"][index] == np.argmax(counts)
    # One batch per sample, each after the states were reset (on the chip: the configuration
    # written again), the device released after each chunk.
    names = double.STATE.names()
    writes = [i for i, name in enumerate(names) if name == "source.write"]
    assert len(writes) == SAMPLES
    for before, write in zip([-1, *writes], writes, strict=False):
        assert "apply_configuration" in names[before + 1 : write]
    summary = lab.client.get(f"/v1/jobs/{job['id']}/summary", headers=bearer(token)).json()
    assert summary["reproducibility"]["device"] == f"{device} (speck2fdevkit, serial SER1)"


def test_a_device_job_fails_clearly_when_its_booking_ends(lab: Lab, digits: Digits) -> None:
    user = prepare(lab, digits, "ed", "virtual-speck2fdevkit:1")
    bookings = lab.client.get("/v1/bookings", headers=bearer(user["token"])).json()
    # The runner is kept from starting until the booking is gone.
    lab.app.state.jobs.booked.devices = _NoDevices()
    response = submit(lab, user, device="virtual-speck2fdevkit:1", chunk_size=2)
    assert response.status_code == 201, response.text
    ended = lab.client.delete(f"/v1/bookings/{bookings[0]['id']}", headers=bearer(user["token"]))
    assert ended.status_code in (200, 204), ended.text
    lab.app.state.jobs.booked.devices = lab.app.state.devices
    job = wait_for(lab, user["token"], response.json()["id"], {"done", "failed"}, timeout=120)
    assert job["state"] == "failed" and "no longer holds a booking" in job["error"], job


class _NoDevices:
    def states(self) -> list[Any]:
        return []
