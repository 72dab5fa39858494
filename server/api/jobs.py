"""Evaluation jobs: submit, list, show (progress, ETA), cancel, results."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from specklab.schemas.jobs import JobCreate, JobPublic, JobSummary

from .deps import CurrentUser, JobsDep, RowId, SessionDep, WriterUser

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("", status_code=201, response_model=JobPublic)
async def submit_job(body: JobCreate, user: WriterUser, jobs: JobsDep) -> JobPublic:
    """Queue a model's evaluation over a dataset; answers at once (poll ``GET``)."""
    return await jobs.create(user, body)


@router.get("", response_model=list[JobPublic])
def list_jobs(session: SessionDep, user: CurrentUser, jobs: JobsDep) -> list[JobPublic]:
    return jobs.list(session, user)


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: RowId, session: SessionDep, user: CurrentUser, jobs: JobsDep) -> JobPublic:
    return jobs.get(session, user, job_id)


@router.delete("/{job_id}", response_model=JobPublic)
def cancel_job(job_id: RowId, session: SessionDep, user: WriterUser, jobs: JobsDep) -> JobPublic:
    """Cancel a queued or running job; its workers stop within a second."""
    return jobs.cancel(session, user, job_id)


@router.get("/{job_id}/summary", response_model=JobSummary)
def job_summary(job_id: RowId, session: SessionDep, user: CurrentUser, jobs: JobsDep) -> JobSummary:
    """Accuracy, confusion, per-layer cost and the reproducibility record (409 until done)."""
    return jobs.summary(session, user, job_id)


@router.get(
    "/{job_id}/samples",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def job_samples(job_id: RowId, session: SessionDep, user: CurrentUser, jobs: JobsDep) -> Response:
    """Per-sample rows as a ``.npz`` of columns (docs/jobs.md); 409 until done."""
    return Response(
        jobs.samples_npz(session, user, job_id),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="job-{job_id}-samples.npz"'},
    )
