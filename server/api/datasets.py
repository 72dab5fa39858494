"""Datasets: upload (``.npz`` or HDF5), make from recordings, list, show, delete."""

from __future__ import annotations

from fastapi import APIRouter, Request

from specklab.schemas.errors import DomainError
from specklab.schemas.jobs import DatasetFromRecordings, DatasetInfo

from ..models.receive import NAME_LIMIT, receive_form, upload_body
from .deps import CurrentUser, DatasetsDep, RecordingsDep, RowId, SessionDep, WriterUser

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


@router.post("", status_code=201, response_model=DatasetInfo, openapi_extra=upload_body())
async def upload_dataset(request: Request, user: WriterUser, datasets: DatasetsDep) -> DatasetInfo:
    """Upload a dataset (multipart: ``file``, optional ``name``): the layout is in
    docs/jobs.md."""
    limit = datasets.limits.max_upload_bytes
    async with receive_form(request, datasets.store, max_file_bytes=limit) as form:
        form.refuse_unknown_fields({"name"})
        name = form.fields.get("name") or form.filename or "dataset"
        if len(name) > NAME_LIMIT:
            raise DomainError(422, "invalid_request", f"name: at most {NAME_LIMIT} characters")
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
