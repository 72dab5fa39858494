"""The one domain error: every family is one, the REST handler and the stream-frame mapper
render any of them the same way."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from specklab.schemas.errors import DomainError
from specklab.schemas.frames import FrameError
from specklab.schemas.patch import PatchError
from specklab.server.api.errors import install_error_handlers, stream_error
from specklab.server.booking.rules import BookingRuleError
from specklab.server.compiler.errors import (
    ArchiveBomb,
    PlacementFailed,
    UnknownFormat,
    error_from_code,
)
from specklab.server.devices.errors import DeviceBusy, DeviceTimeout, InputQueueFull
from specklab.server.recordings.aedat import ExportFailed

# (error, HTTP status, wire code, wire detail)
CASES: list[tuple[DomainError, int, str, Any]] = [
    (DomainError(404, "booking_not_found", "no booking 3"), 404, "booking_not_found", None),
    (DeviceBusy("held by ada"), 409, "device_busy", None),
    (DeviceTimeout("too slow"), 504, "device_timeout", None),
    (InputQueueFull("full"), 429, "input_queue_full", None),
    (UnknownFormat("what is it", detail={"magic": "ab"}), 415, "unknown_format", {"magic": "ab"}),
    (ArchiveBomb("too big"), 413, "archive_bomb", None),
    (BookingRuleError("too_far_ahead", "too far", {"max_days_ahead": 90}), 422, "too_far_ahead",
     {"max_days_ahead": 90}),
    (BookingRuleError("quota_exceeded", "over", status=409), 409, "quota_exceeded", None),
    (PatchError("dvs.cut.x", "outside"), 422, "invalid_patch", {"loc": "dvs.cut.x"}),
    (FrameError("malformed", "not msgpack"), 400, "malformed", None),
    (ExportFailed("the library aborted"), 500, "export_failed", None),
]  # fmt: skip


@pytest.mark.parametrize(("error", "status", "code", "detail"), CASES)
def test_every_family_is_the_domain_error(
    error: DomainError, status: int, code: str, detail: Any
) -> None:
    assert isinstance(error, DomainError)
    assert (error.status, error.body.code, error.body.detail) == (status, code, detail)
    assert error.body.message == str(error)


def test_a_model_that_does_not_fit_answers_with_its_reason() -> None:
    error = PlacementFailed("no core takes layer 3")
    wire = (error.status, error.code, error.body.code)
    assert wire == (422, "no_placement", "model_does_not_fit")
    assert error.body.detail == {"reason": "no_placement", "problems": [], "report": None}
    # The worker's wire keeps the specific code: the same class comes back.
    assert type(error_from_code(error.code, error.message)) is PlacementFailed


def _app(error: DomainError) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/fail")
    async def fail() -> None:
        raise error

    return TestClient(app)


@pytest.mark.parametrize(("error", "status", "code", "detail"), CASES)
def test_rest_answers_every_family_with_its_error_body(
    error: DomainError, status: int, code: str, detail: Any
) -> None:
    response = _app(error).get("/fail")
    assert response.status_code == status
    assert response.json() == {"code": code, "message": str(error), "detail": detail}


def test_rest_answers_carry_the_errors_headers() -> None:
    error = DomainError(401, "token_invalid", "no", headers={"WWW-Authenticate": "Bearer"})
    response = _app(error).get("/fail")
    assert (response.status_code, response.headers["www-authenticate"]) == (401, "Bearer")


@pytest.mark.parametrize(("error", "status", "code", "detail"), CASES)
def test_streams_get_the_same_code_message_and_detail(
    error: DomainError, status: int, code: str, detail: Any
) -> None:
    frame, close_code = stream_error(error)
    assert (frame.code, frame.message, frame.detail) == (code, str(error), detail)
    assert frame.fatal
    assert close_code == 4000 + status
