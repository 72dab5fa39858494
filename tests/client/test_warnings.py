"""The SDK says what the daemon warns about: Python warnings from deploy and upload, and one
plain line each from the CLI."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from specklab.client import SpecklabWarning
from specklab.client._operations import Operations
from specklab.schemas.compile import CompileReport, Problem
from specklab.schemas.deploy import Deployment
from specklab.schemas.models import ModelInfo

LEAK = "model layers [0, 1] have biases: deploy with slow_clock_hz"


def _answer(op: Any, status: int, body: Any) -> Any:
    call = next(op)
    try:
        op.send(httpx.Response(status, content=body, request=call.request))
    except StopIteration as done:
        return done.value
    raise AssertionError("the operation asked for more than one request")


def _deployment(warned: list[str]) -> bytes:
    return (
        Deployment(
            device_id="virtual-speck2fdevkit:0",
            model_id=1,
            owner="ada",
            deployed_at=datetime.now(UTC),
            layers={0: 0, 1: 1},
            inputs=[0],
            monitored=[1],
            dvs_input=False,
            dvs_monitored=False,
            summary="model 1",
            warnings=warned,
        )
        .model_dump_json()
        .encode()
    )


def test_deploy_warns_with_the_deployments_warnings() -> None:
    ops = Operations("http://lab.invalid", "spk_x")
    with pytest.warns(SpecklabWarning, match="slow_clock_hz"):
        deployment = _answer(ops.deploy(1, "virtual-speck2fdevkit:0"), 201, _deployment([LEAK]))
    assert deployment.warnings == [LEAK]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _answer(ops.deploy(1, "virtual-speck2fdevkit:0"), 201, _deployment([]))


def test_upload_warns_with_every_warning_of_the_report() -> None:
    report = CompileReport(
        ok=True,
        chip="speck2f",
        format="torchscript",
        input_shape=(1, 8, 8),
        problems=[
            Problem(severity="warning", code="zero_weights", message="layer 2: 90% quantize to 0"),
            Problem(severity="warning", code="bias_needs_slow_clock", message=LEAK),
        ],
    )
    info = ModelInfo(
        id=3,
        name="net",
        format="torchscript",
        owner="ada",
        created_at=datetime.now(UTC),
        sha256="0" * 64,
        size_bytes=4,
        options={"input_shape": [1, 8, 8]},
        report=report,
    )
    ops = Operations("http://lab.invalid", "spk_x")
    with pytest.warns(SpecklabWarning) as caught:
        model = _answer(
            ops.upload(b"PK\x03\x04", options={"input_shape": (1, 8, 8)}),
            201,
            info.model_dump_json().encode(),
        )
    assert model.id == 3
    assert [str(w.message) for w in caught] == ["layer 2: 90% quantize to 0", LEAK]


def test_the_cli_prints_each_sdk_warning_as_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from argparse import Namespace

    from specklab.client._cli.running import runner
    from specklab.client._errors import warn_all

    run = runner(lambda client, args: warn_all([LEAK, "layer 2: 90% quantize to 0"]))
    assert run(Namespace(url="http://lab.invalid", token="spk_x", json=False)) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [f"specklab: warning: {LEAK}", "specklab: warning: layer 2: 90% quantize to 0"]
