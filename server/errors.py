"""One error type for the API: raise :class:`ApiError` anywhere, the app renders ErrorBody."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from specklab.schemas.api import ErrorBody

from .devices.errors import DeviceError
from .storage.db import is_retryable

log = logging.getLogger("specklab.server")
#: Seconds a client is told to wait after a 503 of a busy database.
BUSY_RETRY_AFTER_S = 1


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(code=code, message=message, detail=detail)
        #: E.g. ``WWW-Authenticate`` on a 401.
        self.headers = headers


def json_error_response(
    status: int, body: ErrorBody, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(status_code=status, content=body.model_dump(), headers=headers)


def _out_of_range() -> JSONResponse:
    body = ErrorBody(code="invalid_request", message="a value in the request is out of range")
    return json_error_response(422, body)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return json_error_response(exc.status, exc.body, exc.headers)

    @app.exception_handler(DeviceError)
    async def _device_error(request: Request, exc: DeviceError) -> JSONResponse:
        body = ErrorBody(code=exc.code, message=exc.message, detail=exc.detail)
        return json_error_response(exc.http_status, body)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        detail = [{k: err[k] for k in ("loc", "msg", "type")} for err in exc.errors()]
        body = ErrorBody(code="invalid_request", message="; ".join(problems), detail=detail)
        return json_error_response(422, body)

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        # Contention outlasting the retries (``commit_retrying``) or SQLite's busy timeout:
        # the request did nothing and may be sent again.
        if is_retryable(exc) or "database is locked" in str(exc.orig):
            body = ErrorBody(code="busy", message="the database is busy; try again")
            return json_error_response(503, body, {"Retry-After": str(BUSY_RETRY_AFTER_S)})
        if str(getattr(exc.orig, "sqlstate", "")).startswith("22"):
            # PostgreSQL's "data exception" class: a value the columns cannot hold.
            return _out_of_range()
        log.error("database error on %s %s", request.method, request.url.path, exc_info=exc)
        body = ErrorBody(code="internal_error", message="the database failed this request")
        return json_error_response(500, body)

    @app.exception_handler(OverflowError)
    async def _overflow(request: Request, exc: OverflowError) -> JSONResponse:
        # SQLite's driver refuses integers past 64 bits, datetime past year 9999: the
        # caller's numbers, wherever a route forgot to bound them.
        return _out_of_range()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Still logged by Starlette with its traceback; the caller gets the documented body.
        body = ErrorBody(code="internal_error", message="the daemon failed this request")
        return json_error_response(500, body)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}
        body = ErrorBody(code=code.get(exc.status_code, "http_error"), message=str(exc.detail))
        return json_error_response(exc.status_code, body, getattr(exc, "headers", None))
