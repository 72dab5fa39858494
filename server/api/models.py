"""Models: upload (compiled on the way in), list, show, the chip configuration, delete."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Form, Response, UploadFile
from pydantic import ValidationError

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.compile import CompileOptions
from specklab.schemas.models import ModelInfo

from ..errors import ApiError
from .deps import CurrentUser, ModelsDep, SessionDep, WriterUser

router = APIRouter(prefix="/v1/models", tags=["models"])

_CHUNK = 1 << 20


async def _read_limited(upload: UploadFile, limit: int) -> bytes:
    """The upload's bytes, refusing it as soon as it passes ``limit``."""
    parts: list[bytes] = []
    size = 0
    while chunk := await upload.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise ApiError(
                413,
                "upload_too_large",
                f"the upload is over the limit of {limit} bytes",
                detail={"limit": limit},
            )
        parts.append(chunk)
    return b"".join(parts)


def _options(text: str) -> CompileOptions:
    try:
        return CompileOptions.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ApiError(422, "invalid_request", f"options: not JSON: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"options.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
        )
        raise ApiError(422, "invalid_request", problems) from exc


@router.post("", status_code=201, response_model=ModelInfo)
async def upload_model(
    file: UploadFile,
    options: Annotated[str, Form(description="CompileOptions as JSON")],
    session: SessionDep,
    user: WriterUser,
    models: ModelsDep,
    name: Annotated[str, Form(max_length=200)] = "",
) -> ModelInfo:
    compile_options = _options(options)
    data = await _read_limited(file, models.limits.archive.max_upload_bytes)
    return await models.upload(
        session, user, name=name or file.filename or "model", data=data, options=compile_options
    )


@router.get("", response_model=list[ModelInfo])
def list_models(session: SessionDep, user: CurrentUser, models: ModelsDep) -> list[ModelInfo]:
    return models.list(session, user)


@router.get("/{model_id}", response_model=ModelInfo)
def get_model(
    model_id: int, session: SessionDep, user: CurrentUser, models: ModelsDep
) -> ModelInfo:
    return models.info(session, user, model_id)


@router.get("/{model_id}/config", response_model=ChipConfig)
async def get_model_config(
    model_id: int, session: SessionDep, user: CurrentUser, models: ModelsDep
) -> Response:
    record = models.get(session, user, model_id)
    return Response(await models.config_json(record), media_type="application/json")


@router.delete("/{model_id}", status_code=204)
def delete_model(model_id: int, session: SessionDep, user: WriterUser, models: ModelsDep) -> None:
    models.delete(session, user, model_id)
