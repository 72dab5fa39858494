"""Datasets: upload (``.npz`` or HDF5), make from recordings, list, show, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from specklab.schemas.errors import DomainError
from specklab.schemas.jobs import DatasetFromRecordings, DatasetInfo

from ..models.receive import receive_form
from .deps import CurrentUser, DatasetsDep, RecordingsDep, RowId, SessionDep, WriterUser

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

_NAME_LIMIT = 200
# The body is read by ``receive_form`` after authentication (see api/models.py).
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "name": {"type": "string", "maxLength": _NAME_LIMIT},
                    },
                }
            }
        },
    }
}


@router.post("", status_code=201, response_model=DatasetInfo, openapi_extra=_UPLOAD_BODY)
async def upload_dataset(request: Request, user: WriterUser, datasets: DatasetsDep) -> DatasetInfo:
    """Upload a dataset (multipart: ``file``, optional ``name``): the layout is in
    docs/jobs.md."""
    limit = datasets.limits.max_upload_bytes
    async with receive_form(request, datasets.store, max_file_bytes=limit) as form:
        unknown = sorted(set(form.fields) - {"name"})
        if unknown:
            raise DomainError(422, "invalid_request", f"unknown form fields: {', '.join(unknown)}")
        name = form.fields.get("name") or form.filename or "dataset"
        if len(name) > _NAME_LIMIT:
            raise DomainError(422, "invalid_request", f"name: at most {_NAME_LIMIT} characters")
        return await datasets.upload(user, form.file, name)


@router.post("/from-recordings", status_code=201, response_model=DatasetInfo)
async def dataset_from_recordings(
    body: DatasetFromRecordings,
    user: WriterUser,
    datasets: DatasetsDep,
    recordings: RecordingsDep,
) -> DatasetInfo:
    return await datasets.from_recordings(user, recordings, body.recordings, body.labels, body.name)


@router.get("", response_model=list[DatasetInfo])
def list_datasets(
    session: SessionDep, user: CurrentUser, datasets: DatasetsDep
) -> list[DatasetInfo]:
    return datasets.list(session, user)


@router.get("/{dataset_id}", response_model=DatasetInfo)
def get_dataset(
    dataset_id: RowId, session: SessionDep, user: CurrentUser, datasets: DatasetsDep
) -> DatasetInfo:
    return datasets.info(session, user, dataset_id)


@router.delete("/{dataset_id}", status_code=204)
def delete_dataset(
    dataset_id: RowId, session: SessionDep, user: WriterUser, datasets: DatasetsDep
) -> None:
    datasets.delete(session, user, dataset_id)
