"""One job on several booked devices (virtual devkits of the devices list): the chunks spread
over them, a booking released mid-job hands its chunks over, the results are those of one
device and of the evaluation workers; every refusal at submit, and what a stranger learns."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from specklab.schemas.jobs import JobOptions
from specklab.server.devices.manager import DeviceManager
from specklab.server.jobs import booked as booked_module
from specklab.server.storage.tables import Booking, BookingState, JobChunk, User
from specklab.server.storage.types import utcnow

from ..db_fixtures import add_devices
from ..lab_client import Lab, bearer, running_lab
from .digits import Digits, digits_job_inputs
from .test_booked_device import columns, prepare, submit
from .test_jobs_api import direct_rows, wait_for

SAMPLES = 6
F0, F1, F2 = (f"virtual-speck2fdevkit:{k}@test-host" for k in range(3))
E0 = "virtual-speck2edevkit:0@test-host"
CAMERA = "davis346:0@bench"
COLUMNS = ("label", "prediction", "latency_us", "counts", "spikes", "synops")


@pytest.fixture(scope="module")
def digits() -> Digits:
    return digits_job_inputs(limit=SAMPLES)


@contextmanager
def devices_lab(directory: Path) -> Iterator[Lab]:
    """Three Speck 2F virtual devkits, a Speck 2E one, and a camera on another host."""
    with running_lab(
        directory / "data",
        f"sqlite:///{directory / 'db.sqlite'}",
        virtual=["speck2fdevkit=3", "speck2edevkit=1"],
        job_workers=1,
    ) as running:
        add_devices(running.db, (CAMERA, "davis346"))
        yield running


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A lab per test that runs jobs, as a device's runner, once started, stays."""
    with devices_lab(tmp_path) as running:
        yield running


@pytest.fixture(scope="module")
def refusing_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One lab for the tests whose jobs are all refused (no device's runner starts)."""
    with devices_lab(tmp_path_factory.mktemp("refusing")) as running:
        yield running


def release(lab: Lab, user: dict[str, Any], booking_id: int) -> None:
    ended = lab.client.delete(f"/v1/bookings/{booking_id}", headers=bearer(user["token"]))
    assert ended.status_code in (200, 204), ended.text


class _Only:
    """The device manager as the booked-device supervisor sees it: only ``shown`` devices (so
    the runners of the others do not start yet)."""

    def __init__(self, devices: DeviceManager, shown: set[str]) -> None:
        self._devices, self._shown = devices, shown

    def states(self) -> list[Any]:
        return [s for s in self._devices.states() if s.description.id in self._shown]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._devices, name)


def chunk_devices(lab: Lab, job_id: int) -> list[str | None]:
    with lab.db.session() as session:
        return list(
            session.scalars(
                select(JobChunk.device).where(JobChunk.job_id == job_id).order_by(JobChunk.start)
            )
        )


def wait_for_samples(lab: Lab, user: dict[str, Any], job_id: int, done: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = lab.client.get(f"/v1/jobs/{job_id}", headers=bearer(user["token"])).json()
        assert job["state"] in ("queued", "running"), job
        if job["samples_done"] >= done:
            return
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never did {done} samples")


def test_submit_refusals_are_clear(refusing_lab: Lab, digits: Digits) -> None:
    lab = refusing_lab
    user = prepare(lab, digits, "ref", F0, E0)
    with lab.db.write_session() as session:  # the camera, booked (it is on another host)
        owner = session.scalar(select(User).where(User.name == "ref"))
        assert owner is not None
        now = utcnow()
        session.add(
            Booking(
                user_id=owner.id,
                device_id=CAMERA,
                starts_at=now - timedelta(seconds=1),
                ends_at=now + timedelta(minutes=30),
            )
        )
        session.commit()

    unknown = submit(lab, user, devices=[F0, "speck2fdevkit:7"])
    assert unknown.status_code == 404 and unknown.json()["code"] == "device_not_found"
    assert F0 in unknown.json()["detail"]["suggestions"]
    assert "speck2fdevkit:7" in unknown.json()["message"]

    not_booked = submit(lab, user, devices=[F0, F2])
    assert not_booked.status_code == 409 and not_booked.json()["code"] == "not_booked"
    assert not_booked.json()["detail"] == {"device_id": F2}

    for devices, said in [
        ([F0, CAMERA], "davis346, which cannot take a network"),
        ([E0], "carries a speck2e, the model is compiled for speck2f"),
        ([F0, F0], "a device named twice"),
        ([F0, "virtual-speck2fdevkit:0"], f"{F0} is named twice"),  # a name and the id
        (["virtual-speck2fdevkit:0\n"], "control characters"),
        (["virtual\x1b[2J"], "control characters"),
        (["virtual"], "'virtual' is not a device"),
        ([F0] * 17, "at most 16"),
        ([], "at least 1"),
    ]:
        refused = submit(lab, user, devices=devices)
        assert refused.status_code == 422, (devices, refused.text)
        assert refused.json()["code"] == "invalid_request"
        assert said in refused.json()["message"], (devices, refused.text)
    both = submit(lab, user, devices=[F0], device=F0)
    assert both.status_code == 422 and "not both" in both.json()["message"]
    for booking_id in user["bookings"]:
        release(lab, user, booking_id)


def test_a_stranger_naming_someone_s_booked_device_learns_nothing(
    refusing_lab: Lab, digits: Digits
) -> None:
    lab = refusing_lab
    holder = prepare(lab, digits, "holder", F1)
    stranger = prepare(lab, digits, "stranger")
    held = submit(lab, stranger, devices=[F1])
    free = submit(lab, stranger, devices=[F2])
    assert held.status_code == free.status_code == 409
    # The same answer as for a device nobody holds, but for its id: not who, nor until when.
    assert held.json() == {
        "code": "not_booked",
        "message": f"{F1} is not booked by you now: book it first",
        "detail": {"device_id": F1},
    }
    assert free.json()["message"].replace(F2, F1) == held.json()["message"]
    # The holder's booking is not touched by the attempt.
    bookings = lab.client.get("/v1/bookings", headers=bearer(holder["token"])).json()
    assert [b["status"] for b in bookings] == ["running"]
    release(lab, holder, holder["bookings"][0])


def test_a_job_on_two_devices_finds_what_one_device_and_the_workers_find(
    lab: Lab, digits: Digits
) -> None:
    user = prepare(lab, digits, "two", F0, F1)
    two = submit(lab, user, devices=["virtual-speck2fdevkit:0", F1], chunk_size=1)
    assert two.status_code == 201, two.text
    assert two.json()["options"]["devices"] == [F0, F1]
    assert chunk_devices(lab, two.json()["id"]) == [F0, F1] * 3
    one = submit(lab, user, device=F1, chunk_size=4)
    workers = submit(lab, user, chunk_size=2)
    found = {}
    for name, response in (("two", two), ("one", one), ("workers", workers)):
        assert response.status_code == 201, response.text
        job = wait_for(lab, user["token"], response.json()["id"], {"done", "failed"}, 120)
        assert job["state"] == "done", job
        found[name] = columns(lab, user, job["id"])
    expected = direct_rows(digits, JobOptions(), SAMPLES)
    for name in COLUMNS:
        assert found["two"][name].tolist() == [row[name] for row in expected], name
        assert found["two"][name].tolist() == found["one"][name].tolist(), name
        assert found["two"][name].tolist() == found["workers"][name].tolist(), name
    summary = lab.client.get(f"/v1/jobs/{two.json()['id']}/summary", headers=bearer(user["token"]))
    assert summary.json()["reproducibility"]["device"] == (
        f"{F0} (speck2fdevkit, virtual), {F1} (speck2fdevkit, virtual)"
    )
    for booking_id in user["bookings"]:
        release(lab, user, booking_id)


def test_a_booking_released_mid_job_hands_its_chunks_over(lab: Lab, digits: Digits) -> None:
    user = prepare(lab, digits, "mid", F0, F1)
    booked = lab.app.state.jobs.booked
    booked.devices = _Only(lab.app.state.devices, {F1})  # F0's runner waits
    try:
        response = submit(lab, user, devices=[F0, F1], chunk_size=1)
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        wait_for_samples(lab, user, job_id, SAMPLES // 2)  # F1 ran its three chunks
        release(lab, user, user["bookings"][0])
    finally:
        booked.devices = lab.app.state.devices
    job = wait_for(lab, user["token"], job_id, {"done", "failed"}, timeout=120)
    assert job["state"] == "done", job
    assert job["samples_done"] == SAMPLES
    assert chunk_devices(lab, job_id) == [F1] * SAMPLES
    expected = direct_rows(digits, JobOptions(), SAMPLES)
    found = columns(lab, user, job_id)
    assert found["index"].tolist() == list(range(SAMPLES))
    for name in COLUMNS:
        assert found[name].tolist() == [row[name] for row in expected], name
    release(lab, user, user["bookings"][1])


def test_a_job_fails_clearly_when_no_booking_of_its_devices_is_left(
    lab: Lab, digits: Digits
) -> None:
    user = prepare(lab, digits, "gone", F0, F1)
    booked = lab.app.state.jobs.booked
    booked.devices = _Only(lab.app.state.devices, set())  # no runner starts yet
    try:
        response = submit(lab, user, devices=[F0, F1], chunk_size=2)
        assert response.status_code == 201, response.text
        for booking_id in user["bookings"]:
            release(lab, user, booking_id)
    finally:
        booked.devices = lab.app.state.devices
    job = wait_for(lab, user["token"], response.json()["id"], {"done", "failed"}, timeout=120)
    assert job["state"] == "failed", job
    assert "the job's owner no longer holds a booking of" in job["error"]
    assert "nor of the job's other devices" in job["error"]


class _Releasing:
    """A device hold that releases its holder's booking (as ``DELETE /v1/bookings`` does) just
    after its ``after``-th sample."""

    def __init__(self, hold: Any, release: Callable[[], None], after: int) -> None:
        self._hold, self._release, self._left = hold, release, after
        self.forwarded = 0

    async def forward(self, **inputs: Any) -> Any:
        output = await self._hold.forward(**inputs)
        self.forwarded += 1
        if self.forwarded == self._left:
            self._release()
        return output

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hold, name)


def test_a_booking_released_while_a_chunk_runs_stops_it_and_hands_it_over(
    lab: Lab, digits: Digits, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(booked_module, "BOOKING_CHECK_S", 0.0)  # look before every sample
    user = prepare(lab, digits, "during", F0, F1)
    devices: DeviceManager = lab.app.state.devices
    holds: list[_Releasing] = []

    def release_f0() -> None:
        with lab.db.write_session() as session:
            booking = session.get(Booking, user["bookings"][0])
            assert booking is not None
            booking.state, booking.ended_at = BookingState.RELEASED, utcnow()
            session.commit()

    class _Wrapped(_Only):
        async def open_hold(self, device_id: str, *, owner: str) -> Any:
            hold = await devices.open_hold(device_id, owner=owner)
            if device_id != F0:
                return hold
            holds.append(_Releasing(hold, release_f0, after=2))
            return holds[-1]

    lab.app.state.jobs.booked.devices = _Wrapped(devices, {F0, F1})
    try:
        response = submit(lab, user, devices=[F0, F1], chunk_size=SAMPLES)  # one chunk, on F0
        assert response.status_code == 201, response.text
        job = wait_for(lab, user["token"], response.json()["id"], {"done", "failed"}, 120)
    finally:
        lab.app.state.jobs.booked.devices = devices
    assert job["state"] == "done", job
    # F0 ran two samples of the chunk, then saw its booking gone: F1 ran the chunk again.
    assert [hold.forwarded for hold in holds] == [2]
    assert chunk_devices(lab, job["id"]) == [F1]
    expected = direct_rows(digits, JobOptions(), SAMPLES)
    found = columns(lab, user, job["id"])
    for name in COLUMNS:
        assert found[name].tolist() == [row[name] for row in expected], name


def test_the_one_device_form_reads_as_the_list() -> None:
    """``device`` (what jobs stored before ``devices`` hold, and older clients send)."""
    assert JobOptions.model_validate({"device": "virtual"}).devices is None
    assert JobOptions.model_validate({"device": F0}).devices == [F0]
    assert "device" not in JobOptions.model_validate({"device": F0}).model_dump()
    assert JobOptions().devices is None
