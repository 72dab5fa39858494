"""One error type for the API: raise :class:`ApiError` anywhere, the app renders ErrorBody."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from specklab.schemas.api import ErrorBody

from .devices.errors import DeviceError


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


def _response(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=body.model_dump(), headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _response(exc.status, exc.body, exc.headers)

    @app.exception_handler(DeviceError)
    async def _device_error(request: Request, exc: DeviceError) -> JSONResponse:
        return _response(exc.http_status, ErrorBody(code=exc.code, message=exc.message))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        detail = [{k: err[k] for k in ("loc", "msg", "type")} for err in exc.errors()]
        body = ErrorBody(code="invalid_request", message="; ".join(problems), detail=detail)
        return _response(422, body)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}
        body = ErrorBody(code=code.get(exc.status_code, "http_error"), message=str(exc.detail))
        return _response(exc.status_code, body, getattr(exc, "headers", None))
