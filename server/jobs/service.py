"""Submit, list, show, cancel evaluation jobs and read their results.

A job is stored with the chip configuration it runs (in ``data_dir/jobs``, under its sha256:
the configuration hash of the reproducibility record) and split into chunks that the
runners of the lab's hosts claim (``queue.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version

import anyio
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.errors import DomainError
from specklab.schemas.jobs import (
    JobCreate,
    JobPublic,
    JobState,
    JobSummary,
    Readout,
    Reproducibility,
)
from specklab.schemas.patch import PatchError

from ..auth.ownership import get_owned, visible_rows
from ..auth.principal import Principal
from ..booking import lab
from ..chips import SUPPORTED_DEVICES
from ..datasets.service import DatasetService
from ..devices.manager import DeviceManager
from ..devices.suggest import unknown_device
from ..models import ModelService
from ..storage import Database
from ..storage.blobs import BlobStore
from ..storage.tables import DatasetRecord, DeviceRecord, JobChunk, JobRecord, User
from ..storage.types import utcnow
from . import queue
from .booked import BookedDevices
from .evaluate import counted_layers, job_config
from .limits import check_sample_limits, chunk_size
from .results import columns, npz_bytes
from .runner import JobRunner

#: Jobs one user may have queued or running at once.
MAX_UNFINISHED_PER_USER = 16


def _specklab_version() -> str:
    try:
        return version("specklab")
    except PackageNotFoundError:
        return "0+unknown"


def _devices_refused(message: str) -> DomainError:
    return DomainError(422, "invalid_request", f"options.devices: {message}")


def _unfit(message: str) -> DomainError:
    return DomainError(422, "dataset_does_not_fit", message)


def check_fit(config: ChipConfig, dataset: DatasetRecord) -> None:
    """422 unless every event of the dataset lands inside the model's input."""
    if config.dvs_layer is not None:
        size = config.dvs_layer.input_size
        width, height, features = size.x, size.y, 2
    else:
        if not config.inputs:
            raise _unfit("the model has no input layer")
        shape = config.cnn_layers[config.core(config.inputs[0])].dimensions.input_shape
        width, height, features = shape.size.x, shape.size.y, shape.feature_count
    if dataset.max_x >= width or dataset.max_y >= height or dataset.max_p >= features:
        raise _unfit(
            f"the dataset's events reach x {dataset.max_x}, y {dataset.max_y}, p {dataset.max_p}; "
            f"the model's input is {width} wide, {height} high, with {features} features"
        )


@dataclass(eq=False, repr=False)
class JobService:
    db: Database
    store: BlobStore
    models: ModelService
    datasets: DatasetService
    runner: JobRunner
    devices: DeviceManager
    booked: BookedDevices
    #: After this long without a check-in, another host's devices count as offline.
    stale_after: timedelta

    async def create(self, user: Principal, body: JobCreate) -> JobPublic:
        model, dataset = await self.db.run(
            lambda s: (
                self.models.get(s, user, body.model_id),
                self.datasets.get(s, user, body.dataset_id),
            )
        )
        options = body.options
        config = await self.models.config(model)
        try:
            run_config = job_config(config, options)
            layers = counted_layers(config, options)
        except (PatchError, IndexError) as exc:
            raise DomainError(422, "invalid_request", f"options.monitor_layers: {exc}") from exc
        if options.readout is Readout.READOUT_LAYER and not (
            config.readout is not None and config.readout.enable
        ):
            raise DomainError(
                422, "invalid_request", "options.readout: this model has no readout layer"
            )
        check_fit(config, dataset)
        device = f"virtual {run_config.chip}"
        if options.devices is not None:
            device_ids, device = await self._check_devices(user, options.devices, run_config.chip)
            options = options.model_copy(update={"devices": device_ids})
        dataset = await self.datasets.with_figures(dataset)
        check_sample_limits(options, run_config, dataset)
        size = chunk_size(options, dataset.samples)
        config_sha = await anyio.to_thread.run_sync(
            lambda: self.store.put(run_config.model_dump_json().encode())
        )
        record = Reproducibility(
            model_sha256=model.sha256,
            dataset_sha256=dataset.sha256,
            compile_options=model.options,
            chip_config_sha256=config_sha,
            device=device,
            specklab_version=_specklab_version(),
            options=options,
        )

        def insert(session: Session) -> JobPublic:
            unfinished = session.scalar(
                select(func.count()).where(
                    JobRecord.user_id == user.id, JobRecord.state.in_(queue.UNFINISHED)
                )
            )
            if unfinished >= MAX_UNFINISHED_PER_USER:
                raise DomainError(
                    429,
                    "too_many_jobs",
                    f"{user.name} has {unfinished} jobs queued or running, the most at once",
                    detail={"limit": MAX_UNFINISHED_PER_USER},
                )
            job = JobRecord(
                user_id=user.id,
                model_id=model.id,
                dataset_id=dataset.id,
                dataset_sha256=dataset.sha256,
                config_sha256=config_sha,
                options=options.model_dump(mode="json"),
                reproducibility=record.model_dump(mode="json"),
                layers=layers,
                state=JobState.QUEUED.value,
                samples=dataset.samples,
                samples_done=0,
                sample_time_s=0.0,
            )
            session.add(job)
            session.flush()
            self.store.share(session, config_sha)
            devices = options.devices
            session.add_all(
                JobChunk(
                    job_id=job.id,
                    user_id=user.id,
                    start=k * size,
                    stop=min((k + 1) * size, dataset.samples),
                    state=queue.QUEUED,
                    device=None if devices is None else devices[k % len(devices)],
                )
                for k in range(math.ceil(dataset.samples / size))
            )
            session.commit()
            return _public(job, user.name)

        public = await self.db.run(insert, write=True)
        self.runner.wake()
        self.booked.wake()
        return public

    async def _check_devices(
        self, user: Principal, refs: list[str], chip: str
    ) -> tuple[list[str], str]:
        """The ids of the devices ``refs`` name and how the reproducibility record describes
        them: 404 for a device the lab does not know, 409 unless ``user`` holds its running
        booking, 422 for a device that cannot take the model or is named twice."""

        def resolve(session: Session) -> list[tuple[str, str]]:
            now = utcnow()
            found = []
            for ref in refs:
                row = lab.resolve_device(
                    session, ref, user_id=user.id, now=now, stale_after=self.stale_after
                )
                if row is None:
                    known = session.scalars(select(DeviceRecord.id)).all()
                    raise unknown_device(ref, known, where=" in this lab")
                found.append((row.id, row.device_type))
            held = lab.current_bookings(session, now=now, device_ids=[i for i, _ in found])
            for device_id, _ in found:
                booking = held.get(device_id)
                if booking is None or booking.user_id != user.id:
                    # Whoever else holds it, and until when, is not this caller's business.
                    raise DomainError(
                        409,
                        "not_booked",
                        f"{device_id} is not booked by you now: book it first",
                        {"device_id": device_id},
                    )
                booking.lease_renewed_at = now
            session.commit()
            return found

        found = await self.db.run(resolve, write=True)
        ids = [device_id for device_id, _ in found]
        for device_id, device_type in found:
            if ids.count(device_id) > 1:
                raise _devices_refused(f"{device_id} is named twice")
            carries = SUPPORTED_DEVICES.get(device_type)
            if carries is None:
                raise _devices_refused(
                    f"{device_id} is a {device_type}, which cannot take a network"
                )
            if carries != chip:
                raise _devices_refused(
                    f"{device_id} carries a {carries}, the model is compiled for {chip}"
                )
        states = {state.description.id: state for state in self.devices.states()}
        described = []
        for device_id in ids:
            state = states.get(device_id)
            if state is None:  # booked, on another host of the lab
                described.append(device_id)
                continue
            description = state.description
            kind = "virtual" if description.virtual else f"serial {description.serial_number}"
            described.append(f"{device_id} ({description.type}, {kind})")
        return ids, ", ".join(described)

    def list(self, session: Session, user: Principal) -> list[JobPublic]:
        rows = visible_rows(session, JobRecord, user)
        return [_public(job, owner) for job, owner in rows]

    def get(self, session: Session, user: Principal, job_id: int) -> JobPublic:
        job = get_owned(session, JobRecord, job_id, user, what="job")
        return _public(job, _owner(session, job))

    def cancel(self, session: Session, user: Principal, job_id: int) -> JobPublic:
        """Cancel a queued or running job (its workers stop within a second); a finished
        job is left as it is."""
        job = get_owned(session, JobRecord, job_id, user, what="job")
        session.refresh(job, with_for_update=True)
        if job.state in queue.UNFINISHED:
            queue.end_job(session, job, JobState.CANCELLED)
            session.commit()
            self.runner.cancel_job(job.id)
            self.booked.cancel_job(job.id)
        return _public(job, _owner(session, job))

    def summary(self, session: Session, user: Principal, job_id: int) -> JobSummary:
        job = self._done(session, user, job_id)
        return JobSummary(
            job=_public(job, _owner(session, job)),
            layers=job.layers,
            reproducibility=Reproducibility.model_validate(job.reproducibility),
            **(job.summary or {}),
        )

    def samples_npz(self, session: Session, user: Principal, job_id: int) -> bytes:
        job = self._done(session, user, job_id)
        if job.samples_npz is not None:
            return job.samples_npz
        # Finished before migration 0010, which made it at the end: made from the rows.
        return npz_bytes(columns(queue.chunk_rows(session, job.id), len(job.layers)))

    def _done(self, session: Session, user: Principal, job_id: int) -> JobRecord:
        job = get_owned(session, JobRecord, job_id, user, what="job")
        if job.state != JobState.DONE:
            why = f" ({job.error})" if job.error else ""
            raise DomainError(
                409,
                "job_not_done",
                f"job {job_id} is {job.state}{why}; results come when it is done",
            )
        return job


def _owner(session: Session, job: JobRecord) -> str:
    owner = session.get(User, job.user_id)
    return owner.name if owner else ""


def _public(job: JobRecord, owner: str) -> JobPublic:
    eta: float | None = None
    if job.state == JobState.RUNNING and job.samples_done and job.started_at is not None:
        elapsed = (utcnow() - job.started_at) / timedelta(seconds=1)
        eta = elapsed * (job.samples - job.samples_done) / job.samples_done
    return JobPublic(
        id=job.id,
        owner=owner,
        model_id=job.model_id,
        dataset_id=job.dataset_id,
        options=job.options,
        state=JobState(job.state),
        samples=job.samples,
        samples_done=job.samples_done,
        progress=job.samples_done / job.samples if job.samples else 1.0,
        eta_s=eta,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        error=job.error,
    )
