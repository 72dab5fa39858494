"""Models: upload (compiled on the way in), its status while it waits, list, show, the chip
configuration, delete."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Header, Path, Request, Response
from pydantic import ValidationError

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.compile import CompileOptions
from specklab.schemas.errors import DomainError
from specklab.schemas.models import CompileStatus, ModelInfo

from ..models.receive import NAME_LIMIT, UploadForm, receive_form, upload_body
from ..models.service import Upload, stopping
from .deps import CurrentUser, DatabaseDep, ModelsDep, SessionDep, WriterUser

router = APIRouter(prefix="/v1/models", tags=["models"])

#: A client-chosen id for an upload, to ask where it is while it waits.
COMPILE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_UPLOAD_BODY = upload_body(
    options={"type": "string", "description": "CompileOptions as JSON"},
)

CompileId = Annotated[
    str | None,
    Header(
        alias="X-Compile-Id",
        pattern=COMPILE_ID_PATTERN,
        description="any id of yours: GET /v1/models/compiles/{id} answers where the upload is",
    ),
]


def _options(text: str | None) -> CompileOptions:
    if text is None:
        raise DomainError(422, "invalid_request", "options: the form needs an options field")
    try:
        return CompileOptions.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise DomainError(422, "invalid_request", f"options: not JSON: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"options.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
        )
        raise DomainError(422, "invalid_request", problems) from exc


def _upload(form: UploadForm) -> Upload:
    form.refuse_unknown_fields({"options", "name"})
    name = form.fields.get("name")
    if name is not None and len(name) > NAME_LIMIT:
        raise DomainError(422, "invalid_request", f"name: at most {NAME_LIMIT} characters")
    name = name or form.filename[:NAME_LIMIT] or "model"
    return Upload(form.file, name, _options(form.fields.get("options")))


@router.post("", status_code=201, response_model=ModelInfo, openapi_extra=_UPLOAD_BODY)
async def upload_model(
    request: Request,
    user: WriterUser,
    models: ModelsDep,
    db: DatabaseDep,
    compile_id: CompileId = None,
) -> ModelInfo:
    """Upload a model (multipart: ``file``, ``options``, optional ``name``) and compile it.

    Answers once compiled. With an ``X-Compile-Id`` header, the upload's place in the compile
    queue can be polled meanwhile at ``GET /v1/models/compiles/{id}``.
    """
    models.check_open()
    ticket = models.track(user, compile_id)
    try:
        max_file_bytes = models.limits.archive.max_upload_bytes
        async with receive_form(request, models.uploads, max_file_bytes=max_file_bytes) as form:
            return await models.upload(db, user, _upload(form), ticket)
    except asyncio.CancelledError:
        # uvicorn cancels the requests still running when its graceful shutdown time is up,
        # and answers a plain-text 500 for them; this upload says why it stopped instead.
        raise stopping() from None
    finally:
        models.untrack(user, compile_id)


@router.get("/compiles/{compile_id}", response_model=CompileStatus)
async def compile_status(
    compile_id: Annotated[str, Path(pattern=COMPILE_ID_PATTERN)],
    user: CurrentUser,
    models: ModelsDep,
) -> CompileStatus:
    """Where one of your uploads in flight is: arriving, queued (and how many go first),
    compiling. 404 once it is answered."""
    return models.status(user, compile_id)


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
    model_id: int, db: DatabaseDep, user: CurrentUser, models: ModelsDep
) -> Response:
    record = await db.run(lambda session: models.get(session, user, model_id))
    return Response(await models.config_json(record), media_type="application/json")


@router.delete("/{model_id}", status_code=204)
def delete_model(model_id: int, session: SessionDep, user: WriterUser, models: ModelsDep) -> None:
    models.delete(session, user, model_id)
