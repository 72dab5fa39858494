"""Error bodies become the typed exceptions of one tree."""

from __future__ import annotations

import pytest

from specklab.client import (
    ApiError,
    AuthenticationError,
    BookingConflict,
    Conflict,
    DeviceBusy,
    DeviceError,
    DeviceOffline,
    InvalidRequest,
    ModelDoesNotFit,
    NotFound,
    PermissionDenied,
    ServerError,
    SpecklabError,
)
from specklab.client._errors import api_error
from specklab.schemas.api import ErrorBody
from specklab.schemas.compile import CompileReport, Problem
from specklab.schemas.render import report_table


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "unreadable_model", InvalidRequest),
        (401, "invalid_token", AuthenticationError),
        (403, "admin_only", PermissionDenied),
        (404, "not_found", NotFound),
        (404, "device_not_found", NotFound),
        (409, "booking_not_running", Conflict),
        (409, "booking_conflict", BookingConflict),
        (409, "device_booked", BookingConflict),
        (413, "too_large", InvalidRequest),
        (415, "unknown_format", InvalidRequest),
        (422, "invalid_request", InvalidRequest),
        (422, "model_does_not_fit", ModelDoesNotFit),
        (503, "device_offline", DeviceOffline),
        (409, "device_busy", DeviceBusy),
        (504, "device_timeout", DeviceError),
        (500, "internal", ServerError),
        (418, "teapot", ApiError),
    ],
)
def test_status_and_code_pick_the_exception(status: int, code: str, expected: type) -> None:
    error = api_error(status, ErrorBody(code=code, message="the daemon's words"))
    assert type(error) is expected
    assert isinstance(error, SpecklabError)
    assert (error.status, error.code, error.message) == (status, code, "the daemon's words")
    assert "the daemon's words" in str(error)


def test_booking_conflict_carries_next_free() -> None:
    detail = {"device_id": "speck2fdevkit:0", "next_free": "2030-01-01T10:00:00+00:00"}
    error = api_error(409, ErrorBody(code="booking_conflict", message="taken", detail=detail))
    assert isinstance(error, BookingConflict)
    assert error.device_id == "speck2fdevkit:0"
    assert error.next_free is not None and error.next_free.year == 2030
    assert error.free_until is None


def test_booking_conflict_without_detail_still_raises_cleanly() -> None:
    error = api_error(409, ErrorBody(code="booking_conflict", message="taken"))
    assert isinstance(error, BookingConflict) and error.next_free is None


def test_model_does_not_fit_is_an_invalid_request_with_the_report() -> None:
    report = CompileReport(
        ok=False,
        chip="speck2f",
        format="nir",
        input_shape=(1, 8, 8),
        problems=[Problem(severity="error", code="too_many_layers", message="10 layers > 9")],
    )
    body = ErrorBody(code="model_does_not_fit", message="no", detail=report.model_dump(mode="json"))
    error = api_error(422, body)
    assert isinstance(error, InvalidRequest)
    assert error.report == report
    assert "error too_many_layers: 10 layers > 9" in report_table(error.report)


def test_model_does_not_fit_reads_the_daemons_reason_problems_and_report() -> None:
    problem = Problem(severity="error", code="kernel_too_large", message="17 > 16", layer=0)
    detail = {
        "reason": "hardware_limit",
        "problems": [problem.model_dump(mode="json")],
        "report": None,
    }
    error = api_error(422, ErrorBody(code="model_does_not_fit", message="no", detail=detail))
    assert isinstance(error, ModelDoesNotFit)
    assert (error.reason, error.problems, error.report) == ("hardware_limit", [problem], None)


def test_model_does_not_fit_with_an_unreadable_report_keeps_the_detail() -> None:
    error = api_error(422, ErrorBody(code="model_does_not_fit", message="no", detail={"x": 1}))
    assert isinstance(error, ModelDoesNotFit)
    assert error.report is None and error.detail == {"x": 1}
