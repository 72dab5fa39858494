"""Models over REST: upload (compiled in a worker), cache, ownership, bad uploads."""

from __future__ import annotations

import io
import json
import pickle
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from torch import nn

from specklab.schemas.chipconfig import ChipConfig

from .fixtures_models import guide_network, nir_bytes, torchscript_bytes
from .lab_client import Lab, bearer, running_lab

GUIDE_OPTIONS = json.dumps({"input_shape": [1, 28, 28]})


@pytest.fixture(scope="module")
def guide_torchscript() -> bytes:
    return torchscript_bytes(guide_network())


@pytest.fixture(scope="module")
def shared_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One lab (one compile worker) for the module: starting torch workers is the slow part."""
    directory = tmp_path_factory.mktemp("models")
    with running_lab(directory / "data", f"sqlite:///{directory / 'db.sqlite'}") as lab:
        yield lab


def upload(lab: Lab, token: str, data: bytes, options: str = GUIDE_OPTIONS, name: str = ""):
    return lab.client.post(
        "/v1/models",
        files={"file": ("model.pt", data)},
        data={"options": options, "name": name},
        headers=bearer(token),
    )


def test_upload_compiles_places_and_serves_the_configuration(
    shared_lab: Lab, guide_torchscript: bytes
) -> None:
    _, token = shared_lab.add_user("ada")
    response = upload(shared_lab, token, guide_torchscript, name="lenet")
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["name"] == "lenet" and model["owner"] == "ada"
    assert model["format"] == "torchscript"
    assert model["report"]["ok"] is True
    assert model["report"]["placement"]["mapping"] == {"0": 0, "1": 3, "2": 5, "3": 6, "4": 1}

    listed = shared_lab.client.get("/v1/models", headers=bearer(token)).json()
    assert [m["id"] for m in listed] == [model["id"]]
    shown = shared_lab.client.get(f"/v1/models/{model['id']}", headers=bearer(token)).json()
    assert shown == model

    config = shared_lab.client.get(f"/v1/models/{model['id']}/config", headers=bearer(token))
    assert config.status_code == 200
    document = ChipConfig.model_validate_json(config.content)
    assert document.core_of_layer == {0: 0, 1: 3, 2: 5, 3: 6, 4: 1}


def test_the_same_upload_is_stored_and_compiled_once(
    shared_lab: Lab, guide_torchscript: bytes
) -> None:
    _, first = shared_lab.add_user("bob")
    _, second = shared_lab.add_user("cyd")
    data_dir = shared_lab.app.state.settings.data_dir
    a = upload(shared_lab, first, guide_torchscript).json()
    compiled_before = sorted(p.name for p in (data_dir / "compiled").rglob("*.json"))
    b = upload(shared_lab, second, guide_torchscript).json()
    assert a["id"] != b["id"] and a["sha256"] == b["sha256"]
    assert sorted(p.name for p in (data_dir / "compiled").rglob("*.json")) == compiled_before
    assert len(list((data_dir / "models").rglob(a["sha256"]))) == 1


def test_users_see_only_their_own_models(shared_lab: Lab, guide_torchscript: bytes) -> None:
    _, owner = shared_lab.add_user("dee")
    _, other = shared_lab.add_user("eve")
    model = upload(shared_lab, owner, guide_torchscript).json()
    for path in (f"/v1/models/{model['id']}", f"/v1/models/{model['id']}/config"):
        response = shared_lab.client.get(path, headers=bearer(other))
        assert response.status_code == 404
        assert response.json()["code"] == "model_not_found"
    assert (
        shared_lab.client.delete(f"/v1/models/{model['id']}", headers=bearer(other)).status_code
        == 404
    )
    assert model["id"] not in [
        m["id"] for m in shared_lab.client.get("/v1/models", headers=bearer(other)).json()
    ]
    assert model["id"] in [
        m["id"] for m in shared_lab.client.get("/v1/models", headers=shared_lab.admin).json()
    ]


def test_observers_cannot_upload(shared_lab: Lab, guide_torchscript: bytes) -> None:
    _, token = shared_lab.add_user("obi", role="observer")
    assert upload(shared_lab, token, guide_torchscript).status_code == 403


def test_a_model_that_does_not_fit_is_explained(shared_lab: Lab) -> None:
    _, token = shared_lab.add_user("fay")
    too_wide = nn.Sequential(
        nn.Conv2d(1, 8, 3, bias=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 26 * 26, 10, bias=False),
    )
    response = upload(shared_lab, token, torchscript_bytes(too_wide, (1, 28, 28)))
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "model_does_not_fit"
    assert body["message"]
    assert body["detail"]["report"]["ok"] is False
    assert body["detail"]["problems"]


def _pickle_bomb() -> bytes:
    class Exploit:
        def __reduce__(self):
            return (print, ("owned",))

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model/data.pkl", pickle.dumps(Exploit()))
        archive.writestr("model/version", "3\n")
    return buffer.getvalue()


def _zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model/data/0", b"\0" * (600 * 1024 * 1024))
    return buffer.getvalue()


BAD_UPLOADS = {
    "garbage": b"this is not a model",
    "empty": b"",
    "truncated": b"PK\x03\x04" + b"\x00" * 40,
    "pickle payload": _pickle_bomb(),
}


@pytest.mark.parametrize("data", BAD_UPLOADS.values(), ids=BAD_UPLOADS.keys())
def test_bad_uploads_get_clear_4xx_and_the_daemon_keeps_serving(
    shared_lab: Lab, guide_torchscript: bytes, data: bytes
) -> None:
    _, token = shared_lab.add_user(f"u{uuid.uuid4().hex[:8]}")
    response = upload(shared_lab, token, data)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["code"] and response.json()["message"]
    assert upload(shared_lab, token, guide_torchscript).status_code == 201


def test_a_zip_bomb_is_refused(shared_lab: Lab) -> None:
    _, token = shared_lab.add_user("zed")
    response = upload(shared_lab, token, _zip_bomb())
    assert 400 <= response.status_code < 500, response.text


def test_an_upload_over_the_limit_is_refused_before_compiling(
    tmp_path: Path, guide_torchscript: bytes
) -> None:
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with running_lab(tmp_path / "data", database, max_upload_bytes=1000) as lab:
        _, token = lab.add_user("big")
        response = upload(lab, token, guide_torchscript)
        assert response.status_code == 413
        assert response.json()["code"] == "upload_too_large"
        assert lab.app.state.models._pool is None  # nothing was compiled


@pytest.mark.parametrize(
    "options",
    [
        "not json",
        json.dumps({"input_shape": [1, 28]}),
        json.dumps({"input_shape": [1, 28, 28], "bogus": 1}),
    ],
)
def test_bad_options_are_named(shared_lab: Lab, guide_torchscript: bytes, options: str) -> None:
    _, token = shared_lab.add_user(f"o{uuid.uuid4().hex[:8]}")
    response = upload(shared_lab, token, guide_torchscript, options=options)
    assert response.status_code == 422
    assert "options" in response.json()["message"]


def test_nir_upload_compiles_to_the_same_configuration(
    shared_lab: Lab, guide_torchscript: bytes
) -> None:
    _, token = shared_lab.add_user("nia")
    a = upload(shared_lab, token, guide_torchscript).json()
    b = upload(shared_lab, token, nir_bytes(guide_network())).json()
    assert b["format"] == "nir"
    configs = [
        shared_lab.client.get(f"/v1/models/{m['id']}/config", headers=bearer(token)).json()
        for m in (a, b)
    ]
    assert configs[0]["cnn_layers"] == configs[1]["cnn_layers"]


def test_delete_removes_the_model(shared_lab: Lab, guide_torchscript: bytes) -> None:
    _, token = shared_lab.add_user("del")
    model = upload(shared_lab, token, guide_torchscript).json()
    assert (
        shared_lab.client.delete(f"/v1/models/{model['id']}", headers=bearer(token)).status_code
        == 204
    )
    assert (
        shared_lab.client.get(f"/v1/models/{model['id']}", headers=bearer(token)).status_code == 404
    )
