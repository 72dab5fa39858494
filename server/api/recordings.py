"""Recordings: record a device for N seconds, list, download (.npy, .aedat4), delete, replay."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
from fastapi import APIRouter
from fastapi.responses import Response, StreamingResponse

from specklab.schemas.recordings import Recording, RecordingRequest, ReplayRequest

from ..booking.devices_view import resolve_device_id
from .deps import CurrentUser, DatabaseDep, PolicyDep, RecordingsDep, RowId, WriterUser

router = APIRouter(prefix="/v1/recordings", tags=["recordings"])


@router.post("", status_code=201, response_model=Recording)
async def record(
    request: RecordingRequest,
    user: WriterUser,
    recordings: RecordingsDep,
    db: DatabaseDep,
    policy: PolicyDep,
) -> Recording:
    """Record for ``duration_s`` seconds; answers when the recording is stored."""
    device_id = await resolve_device_id(db, policy, request.device_id, user.id)
    return await recordings.record(user, request.model_copy(update={"device_id": device_id}))


@router.get("", response_model=list[Recording])
async def list_recordings(user: CurrentUser, recordings: RecordingsDep) -> list[Recording]:
    return await recordings.list(user)


@router.get("/{recording_id}", response_model=Recording)
async def get_recording(
    recording_id: RowId, user: CurrentUser, recordings: RecordingsDep
) -> Recording:
    return await recordings.get(user, recording_id)


@router.get("/{recording_id}/events.npy", response_class=Response)
async def download_npy(
    recording_id: RowId, user: CurrentUser, recordings: RecordingsDep
) -> Response:
    events = await recordings.events(user, recording_id)
    buffer = io.BytesIO()
    np.save(buffer, events, allow_pickle=False)
    return Response(
        buffer.getvalue(),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="recording-{recording_id}.npy"'},
    )


@router.get("/{recording_id}/events.aedat4", response_class=StreamingResponse)
async def download_aedat4(
    recording_id: RowId, user: CurrentUser, recordings: RecordingsDep
) -> StreamingResponse:
    handle = await recordings.open_aedat4(user, recording_id)
    return StreamingResponse(
        _chunks(handle),
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="recording-{recording_id}.aedat4"',
            "Content-Length": str(os.fstat(handle.fileno()).st_size),
        },
    )


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    """The file in 1 MiB pieces (Starlette reads a plain iterator on worker threads)."""
    with handle:
        while chunk := handle.read(1 << 20):
            yield chunk


@router.delete("/{recording_id}", status_code=204)
async def delete_recording(
    recording_id: RowId, user: WriterUser, recordings: RecordingsDep
) -> None:
    await recordings.delete(user, recording_id)


@router.post("/{recording_id}/replay", status_code=202)
async def replay(
    recording_id: RowId,
    request: ReplayRequest,
    user: WriterUser,
    recordings: RecordingsDep,
    db: DatabaseDep,
    policy: PolicyDep,
) -> dict[str, int]:
    """Start replaying a DVS recording into a deployment's DVS layer; outputs come out on the
    device's continuous stream."""
    device_id = await resolve_device_id(db, policy, request.device_id, user.id)
    request = request.model_copy(update={"device_id": device_id})
    return {"events": await recordings.replay(user, recording_id, request)}
