"""Start-up and shutdown of the dataset store, the job service, its runner and its pool."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI

from ..background import background
from ..datasets.service import SAMPLES, DatasetLimits, DatasetService
from ..settings import Settings
from ..storage import Database
from ..storage.blobs import BlobStore
from ..storage.lab_blobs import LabBlobs
from .booked import BookedDevices
from .pool import EvaluationPool
from .runner import JobRunner
from .service import JobService


def worker_count(setting: int) -> int:
    """``setting``, or with 0 every core this process may run on."""
    return setting or len(os.sched_getaffinity(0))


@asynccontextmanager
async def job_service(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    db: Database = app.state.db
    # Any host of a lab may run a job's chunks: both stores have the lab's copy.
    datasets = DatasetService(
        BlobStore(settings.data_dir / "datasets", LabBlobs.for_lab(db, "datasets")),
        db,
        DatasetLimits(
            max_upload_bytes=settings.max_dataset_bytes,
            max_events=settings.max_dataset_events,
            quota_bytes=settings.dataset_quota_bytes,
        ),
    )
    configs = BlobStore(settings.data_dir / "jobs", LabBlobs.for_lab(db, "jobs"))
    pool = EvaluationPool(worker_count(settings.job_workers))

    def fetch(config: str, dataset: str) -> None:
        configs.fetch_missing(config)
        datasets.store.fetch_missing(dataset, SAMPLES)

    paths: dict[str, Any] = {
        "host": settings.host_name,
        "config_path": configs.path,
        "dataset_path": lambda digest: datasets.store.path(digest, SAMPLES),
        "fetch": fetch,
        "lease_s": settings.job_lease_s,
    }
    runner = JobRunner(db, pool, **paths)
    booked = BookedDevices(db, app.state.devices, **paths)
    app.state.datasets = datasets
    app.state.jobs = JobService(
        db,
        configs,
        app.state.models,
        datasets,
        runner,
        app.state.devices,
        booked,
        app.state.booking_policy.host_stale_after,
    )
    try:
        async with (
            background(runner.serve(), name="job-runner"),
            background(booked.serve(), name="booked-device-jobs"),
        ):
            yield
    finally:
        await anyio.to_thread.run_sync(pool.close)
