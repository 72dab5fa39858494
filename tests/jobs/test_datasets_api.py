"""Datasets over REST: the documented layouts are accepted, anything else is a clear 4xx."""

from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from specklab.schemas.events import DVS_DTYPE, SPIKE_DTYPE
from specklab.server.recordings.aedat import write_aedat4

from ..db_fixtures import stored_recording
from ..lab_client import Lab, bearer, running_lab

EVENT = [("x", "<i4"), ("y", "<i4"), ("p", "<i4"), ("t", "<i8")]


@pytest.fixture(scope="module")
def shared_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    directory = tmp_path_factory.mktemp("datasets")
    with running_lab(
        directory / "data",
        f"sqlite:///{directory / 'db.sqlite'}",
        job_workers=1,
        max_dataset_bytes=200_000,
        max_dataset_events=5_000,
        dataset_quota_bytes=150_000,
    ) as lab:
        yield lab


def events(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros(n, EVENT)
    out["x"], out["y"] = rng.integers(0, 8, n), rng.integers(0, 8, n)
    out["p"], out["t"] = rng.integers(0, 2, n), rng.integers(0, 10_000, n)
    return out


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def hdf5(tmp_path: Path, **arrays: np.ndarray) -> bytes:
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as handle:
        for name, array in arrays.items():
            handle.create_dataset(name, data=array, compression="gzip")
    return path.read_bytes()


def upload(lab: Lab, token: str, data: bytes, name: str = "set"):
    return lab.client.post(
        "/v1/datasets",
        files={"file": ("data.bin", data)},
        data={"name": name},
        headers=bearer(token),
    )


def test_npz_with_a_structured_array_is_stored_listed_and_deleted(shared_lab: Lab) -> None:
    _, token = shared_lab.add_user("dana")
    data = npz(events=events(30), offsets=np.array([0, 10, 20, 30]), labels=np.array([0, 2, 1]))
    response = upload(shared_lab, token, data)
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert (dataset["format"], dataset["samples"], dataset["events"]) == ("npz", 3, 30)
    assert dataset["classes"] == 3 and dataset["max_x"] <= 7 and dataset["max_p"] <= 1
    listed = shared_lab.client.get("/v1/datasets", headers=bearer(token)).json()
    assert [d["id"] for d in listed] == [dataset["id"]]
    # The same bytes again: a second row, stored once.
    again = upload(shared_lab, token, data).json()
    assert again["sha256"] == dataset["sha256"] and again["id"] != dataset["id"]
    store = shared_lab.app.state.settings.data_dir / "datasets"
    assert len(list(store.rglob(f"{dataset['sha256']}*"))) == 2  # upload + canonical form
    for row in (dataset, again):
        gone = shared_lab.client.delete(f"/v1/datasets/{row['id']}", headers=bearer(token))
        assert gone.status_code == 204
    assert not list(store.rglob(f"{dataset['sha256']}*"))
    missing = shared_lab.client.get(f"/v1/datasets/{dataset['id']}", headers=bearer(token))
    assert missing.status_code == 404


def test_columns_in_hdf5_are_a_dataset(shared_lab: Lab, tmp_path: Path) -> None:
    _, token = shared_lab.add_user("eli")
    ev = events(12)
    data = hdf5(
        tmp_path,
        x=ev["x"],
        y=ev["y"],
        p=ev["p"],
        t=ev["t"],
        offsets=np.array([0, 5, 12]),
        labels=np.array([4, 1]),
    )
    response = upload(shared_lab, token, data)
    assert response.status_code == 201, response.text
    assert response.json()["format"] == "hdf5"
    assert response.json()["samples"] == 2 and response.json()["classes"] == 5
    other = shared_lab.add_user("fay")[1]
    hidden = shared_lab.client.get(f"/v1/datasets/{response.json()['id']}", headers=bearer(other))
    assert hidden.status_code == 404


def _pickled() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, events=np.array([{"x": 1}], dtype=object), offsets=[0, 1], labels=[0])
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (_pickled(), "cannot be read safely"),
        (pickle.dumps({"events": [1, 2, 3]}), "none of them"),
        (
            npz(events=events(6), offsets=np.array([0, 3, 6]), labels=np.array([0, 1, 2])),
            "labels match",
        ),
        (
            npz(events=events(6), offsets=np.array([0, 4, 3, 6]), labels=np.array([0, 1, 1])),
            "must not decrease",
        ),
        (
            npz(events=events(6).reshape(2, 3), offsets=np.array([0, 6]), labels=np.array([0])),
            "1-D structured",
        ),
        (
            npz(
                x=np.arange(3),
                y=np.arange(2),
                p=np.zeros(3, int),
                t=np.arange(3),
                offsets=np.array([0, 3]),
                labels=np.array([0]),
            ),
            "same length",
        ),
        (npz(events=events(4), offsets=np.array([0, 4]), labels=np.array([-1])), "class indices"),
        (npz(events=events(4), labels=np.array([0])), "offsets"),
        (
            npz(
                events=np.zeros(4, EVENT).astype(
                    [("x", "f4"), ("y", "i4"), ("p", "i4"), ("t", "i8")]
                ),
                offsets=np.array([0, 4]),
                labels=np.array([0]),
            ),
            "integers",
        ),
        (
            npz(events=events(6000), offsets=np.array([0, 6000]), labels=np.array([0])),
            "more than 5000",
        ),
        (b"PK\x03\x04 not really a zip", "cannot be read"),
    ],
    ids=[
        "pickled",
        "pickle-file",
        "labels-mismatch",
        "offsets-decrease",
        "2d-events",
        "ragged-columns",
        "negative-label",
        "no-offsets",
        "float-x",
        "too-many-events",
        "broken-zip",
    ],
)
def test_bad_datasets_get_a_clear_422(shared_lab: Lab, data: bytes, needle: str) -> None:
    _, token = shared_lab.add_user(f"u{abs(hash(needle)) % 10**8}")
    response = upload(shared_lab, token, data)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_dataset"
    assert needle in response.json()["message"]


def test_an_upload_over_the_size_limit_is_413_and_leaves_nothing(shared_lab: Lab) -> None:
    _, token = shared_lab.add_user("gus")
    response = upload(shared_lab, token, b"PK" + bytes(300_000))
    assert response.status_code == 413
    assert response.json()["code"] == "upload_too_large"
    store = shared_lab.app.state.settings.data_dir / "datasets"
    assert not list(store.glob(".partial-*"))


def test_a_zip_bomb_is_refused_from_its_directory(shared_lab: Lab) -> None:
    _, token = shared_lab.add_user("hal")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, events=np.zeros(2_000_000, np.int64), offsets=[0], labels=[0])
    assert len(buffer.getvalue()) < 200_000
    response = upload(shared_lab, token, buffer.getvalue())
    assert response.status_code == 422 and "unpack" in response.json()["message"]


def test_datasets_count_against_their_own_quota(shared_lab: Lab) -> None:
    _, token = shared_lab.add_user("ivy")
    used = 0
    for seed in range(8):
        ev = events(1000, seed)
        data = npz(events=ev, offsets=np.array([0, 1000]), labels=np.array([0]))
        response = upload(shared_lab, token, data)
        if response.status_code == 413:
            error = response.json()
            assert error["code"] == "quota_exceeded"
            assert error["detail"]["used_bytes"] == used
            assert used + error["detail"]["upload_bytes"] > 150_000
            break
        assert response.status_code == 201, response.text
        # The upload and the canonical form jobs read: both are kept.
        assert response.json()["size_bytes"] > len(data) + 1000 * DVS_DTYPE.itemsize
        used += response.json()["size_bytes"]
    else:
        pytest.fail("the quota never filled")


def test_a_small_compressed_upload_counts_at_what_it_takes_on_disk(shared_lab: Lab) -> None:
    _, token = shared_lab.add_user("zip")
    buffer = io.BytesIO()
    many = np.zeros(4000, EVENT)  # compresses to almost nothing
    np.savez_compressed(buffer, events=many, offsets=np.array([0, 4000]), labels=np.array([0]))
    assert len(buffer.getvalue()) < 2000
    response = upload(shared_lab, token, buffer.getvalue())
    assert response.status_code == 201, response.text
    assert response.json()["size_bytes"] >= 4000 * DVS_DTYPE.itemsize


def test_observers_cannot_upload(shared_lab: Lab) -> None:
    _, token = shared_lab.add_user("obs", role="observer")
    data = npz(events=events(3), offsets=np.array([0, 3]), labels=np.array([0]))
    assert upload(shared_lab, token, data).status_code == 403


def test_dvs_recordings_become_a_dataset_of_one_sample_each(shared_lab: Lab) -> None:
    user_id, token = shared_lab.add_user("rae")
    first, second = np.zeros(3, DVS_DTYPE), np.zeros(2, DVS_DTYPE)
    first["t"], first["x"] = [500, 600, 900], [1, 2, 3]
    second["t"], second["p"] = [7_000, 7_010], [1, 0]
    store = shared_lab.app.state.recordings
    ids = [stored_recording(store, user_id, first), stored_recording(store, user_id, second)]
    body = {"name": "two", "recordings": ids, "labels": [1, 0]}
    made = shared_lab.client.post("/v1/datasets/from-recordings", json=body, headers=bearer(token))
    assert made.status_code == 201, made.text
    assert (made.json()["format"], made.json()["samples"], made.json()["events"]) == (
        "recordings",
        2,
        5,
    )
    samples = shared_lab.app.state.datasets.samples(made.json()["sha256"])
    assert samples.sample(0)["t"].tolist() == [0, 100, 400]  # each sample starts at 0
    assert samples.sample(1)["p"].tolist() == [1, 0] and samples.labels.tolist() == [1, 0]

    spikes = stored_recording(shared_lab.app.state.recordings, user_id, np.zeros(2, SPIKE_DTYPE))
    for bad, code in (
        ({"recordings": [spikes], "labels": [0]}, 422),
        ({"recordings": ids, "labels": [0]}, 422),
        ({"recordings": ids, "labels": [0, -1]}, 422),
        ({"recordings": [ids[0], 2**31], "labels": [0, 0]}, 422),
        ({"recordings": [99_999], "labels": [0]}, 404),
    ):
        response = shared_lab.client.post(
            "/v1/datasets/from-recordings", json=bad, headers=bearer(token)
        )
        assert response.status_code == code, (bad, response.text)


def _recordings(tmp_path: Path, count: int) -> list[tuple[str, bytes, np.ndarray]]:
    """``count`` AEDAT4 recordings (name, bytes, their events) written with the project's
    writer."""
    made = []
    for index in range(count):
        written = np.zeros(5 + index, DVS_DTYPE)
        written["t"] = 1_000 + 10 * np.arange(5 + index)
        written["x"], written["y"], written["p"] = index, 2 * index, index % 2
        path = tmp_path / f"r{index}.aedat4"
        write_aedat4(written, path)
        made.append((f"recs/r{index}.aedat4", path.read_bytes(), written))
    return made


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _tar(entries: dict[str, bytes], link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            archive.addfile(info)
    return buffer.getvalue()


@pytest.mark.parametrize("pack", [_zip, _tar], ids=["zip", "tar"])
def test_a_folder_of_aedat4_recordings_with_a_labels_csv_is_a_dataset(
    shared_lab: Lab, tmp_path: Path, pack: Any
) -> None:
    _, token = shared_lab.add_user(f"ae{pack.__name__}")
    recordings = _recordings(tmp_path, 3)
    labels = "file,label\n" + "".join(
        f"{name},{7 - i}\n" for i, (name, _, _) in enumerate(recordings)
    )
    entries = {"labels.csv": labels.encode(), **{name: data for name, data, _ in recordings}}
    response = upload(shared_lab, token, pack(entries))
    assert response.status_code == 201, response.text
    info = response.json()
    assert (info["format"], info["samples"], info["events"], info["classes"]) == (
        "aedat4",
        3,
        18,
        8,
    )
    assert (info["max_x"], info["max_y"], info["max_p"]) == (2, 4, 1)
    samples = shared_lab.app.state.datasets.samples(info["sha256"])
    for index, (_, _, written) in enumerate(recordings):
        sample = samples.sample(index)
        assert sample["t"].tolist() == (written["t"] - 1_000).tolist()
        assert sample["x"].tolist() == written["x"].tolist()
    assert samples.labels.tolist() == [7, 6, 5]


@pytest.mark.parametrize(
    ("entries", "needle"),
    [
        ({"a.aedat4": b"x"}, "a labels.csv at its root"),
        ({"labels.csv": b"gone.aedat4,1\n"}, "does not hold"),
        ({"labels.csv": b"a.aedat4,one\n", "a.aedat4": b""}, "row 1"),
        ({"labels.csv": b"a.aedat4,1\n", "a.aedat4": b"junk"}, "row 1: not a readable"),
        ({"labels.csv": b"a.txt,1\n", "a.txt": b""}, ".aedat4 files"),
        ({"labels.csv": b"../a.aedat4,1\n", "../a.aedat4": b""}, "'..'"),
    ],
    ids=["no-labels", "missing-file", "bad-label", "not-aedat4", "not-aedat4-name", "dot-dot"],
)
def test_bad_recording_archives_get_a_clear_422(
    shared_lab: Lab, entries: dict[str, bytes], needle: str
) -> None:
    _, token = shared_lab.add_user(f"ar{abs(hash(needle)) % 10**8}")
    response = upload(shared_lab, token, _zip(entries))
    assert response.status_code == 422, response.text
    assert needle in response.json()["message"], response.text


def test_a_tar_with_a_link_is_refused(shared_lab: Lab) -> None:
    _, token = shared_lab.add_user("tarlink")
    response = upload(shared_lab, token, _tar({"labels.csv": b"a.aedat4,1\n"}, link="a.aedat4"))
    assert response.status_code == 422 and "links are refused" in response.json()["message"]


def test_hostile_hdf5_files_get_a_422_and_leave_the_daemon_up(
    shared_lab: Lab, tmp_path: Path
) -> None:
    _, token = shared_lab.add_user("hostile")
    path = tmp_path / "huge.h5"
    with h5py.File(path, "w") as handle:  # declares 10^12 events in a few hundred bytes
        handle.create_dataset("x", shape=(10**12,), dtype="i8", chunks=(1024,))
        for name in ("y", "p", "t", "offsets", "labels"):
            handle.create_dataset(name, data=np.zeros(2, np.int64))
    huge = upload(shared_lab, token, path.read_bytes())
    assert huge.status_code == 422 and "larger than" in huge.json()["message"], huge.text

    valid = hdf5(tmp_path, events=events(6), offsets=np.array([0, 6]), labels=np.array([1]))
    # Every address and length field of the file's metadata pointing far past its end.
    broken = bytearray(valid)
    for offset in range(8, min(len(broken), 2048), 8):
        broken[offset : offset + 8] = (2**62 + offset).to_bytes(8, "little")
    response = upload(shared_lab, token, bytes(broken))
    assert response.status_code == 422 and response.json()["code"] == "invalid_dataset"
    # The daemon answers on, and the same user's valid file is a dataset.
    assert upload(shared_lab, token, valid).status_code == 201
