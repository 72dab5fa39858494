"""Every REST call of the API, written once as an operation (see :mod:`._core`)."""

from __future__ import annotations

import io
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import quote

import numpy as np

from specklab.schemas.accounts import Role, TokenCreate, TokenCreated, TokenPublic, UserCreate
from specklab.schemas.accounts import UserPublic as User
from specklab.schemas.api import ErrorBody, Health, Version
from specklab.schemas.audit import AuditEntryPublic
from specklab.schemas.booking import (
    BookingCreate,
    BookingExtend,
    BookingPreempt,
    BookingPublic,
    LeasePublic,
)
from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.compile import CompileOptions
from specklab.schemas.deploy import Deployment, DeploymentRequest, NeuronStates
from specklab.schemas.devices import DeviceList, DevicePublic, DeviceType
from specklab.schemas.jobs import DatasetInfo, JobCreate, JobOptions, JobPublic, JobSummary
from specklab.schemas.models import ModelInfo
from specklab.schemas.patch import ConfigPatch
from specklab.schemas.recordings import Recording, RecordingRequest, RecordingSource, ReplayRequest

from ._core import BaseClient, Op, UploadProgress, ticking
from ._errors import api_error, warn_all
from ._payload import ModelSource, model_file
from ._remote import RemoteModel

#: The two files a recording can be downloaded as.
RecordingFormat = Literal["npy", "aedat4"]


def _segment(value: str | int) -> str:
    """A path segment; device ids hold ``:``, which is fine in a path."""
    return quote(str(value), safe=":")


def _id(value: Any) -> str:
    """The id of a resource object (a booking, model, recording...) or the id itself."""
    return _segment(getattr(value, "id", value))


def device_id(device: Any) -> str:
    """A device's id from the id itself, a device listing entry or a deployment."""
    for attribute in ("id", "device_id"):
        value = getattr(device, attribute, None)
        if isinstance(value, str):
            return value
    if isinstance(device, str):
        return device
    raise TypeError(f"a device is its id (e.g. 'speck2fdevkit:0'), got {type(device).__name__}")


def model_id(model: Any) -> int:
    """A model's id from a :class:`RemoteModel`, its id, or the id's digits (as typed)."""
    value = getattr(model, "id", model)
    if isinstance(value, str) and value.isdecimal():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError(f"a model is a RemoteModel or its id (e.g. 12), got {model!r}")


class Operations(BaseClient):
    """Operations on the daemon; ``Client`` runs them blocking, ``AsyncClient`` awaiting."""

    def health(self) -> Op[Health]:
        """The daemon's liveness (needs no token)."""
        return self.fetch("GET", "/v1/health", Health)

    def version(self) -> Op[Version]:
        """Versions of the daemon and of what it runs on (needs no token)."""
        return self.fetch("GET", "/v1/version", Version)

    # Accounts.
    def me(self) -> Op[User]:
        """The user the token belongs to."""
        return self.fetch("GET", "/v1/users/me", User)

    def users(self) -> Op[list[User]]:
        """Every user (admins only)."""
        return self.fetch("GET", "/v1/users", list[User])

    def create_user(self, name: str, role: Role | str = Role.USER) -> Op[User]:
        """Create a user (admins only); give it a token with :meth:`create_token`."""
        body = UserCreate(name=name, role=Role(role))
        return self.fetch("POST", "/v1/users", User, json=body)

    def tokens(self, *, user_id: int | None = None) -> Op[list[TokenPublic]]:
        """The caller's API tokens (admins: another user's); never the secrets."""
        return self.fetch("GET", "/v1/tokens", list[TokenPublic], params={"user_id": user_id})

    def create_token(
        self, name: str, *, expires_in_days: int | None = 90, user_id: int | None = None
    ) -> Op[TokenCreated]:
        """A new API token; its secret (``.token``) is shown in this answer only."""
        body = TokenCreate(name=name, expires_in_days=expires_in_days, user_id=user_id)
        return self.fetch("POST", "/v1/tokens", TokenCreated, json=body)

    def revoke_token(self, token: Any) -> Op[TokenPublic]:
        return self.fetch("DELETE", f"/v1/tokens/{_id(token)}", TokenPublic)

    # Devices.
    def lab_status(self) -> Op[DeviceList]:
        """Every device with its status and booking, and the host's samna state, in one answer."""
        return self.fetch("GET", "/v1/devices", DeviceList)

    def devices(self) -> Op[list[DevicePublic]]:
        """Every device the lab knows, with its status and current booking."""
        listing = yield from self.lab_status()
        return listing.devices

    def device(self, device: Any) -> Op[DevicePublic]:
        return self.fetch("GET", f"/v1/devices/{_segment(device_id(device))}", DevicePublic)

    def device_types(self) -> Op[list[DeviceType]]:
        """The guide's ``device_types``: every type name and its samna name."""
        return self.fetch("GET", "/v1/device-types", list[DeviceType])

    def supported_devices(self) -> Op[list[str]]:
        """The device types that can take a network (the guide's ``supported_devices``)."""
        types = yield from self.device_types()
        return [t.type for t in types if t.supported]

    # Bookings.
    def create_booking(
        self,
        target: Any,
        *,
        minutes: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        wait: bool = False,
    ) -> Op[BookingPublic]:
        """Book a device (an id such as ``speck2fdevkit:0``) or any device of a type
        (``speck2fdevkit``) for ``minutes`` or until ``end``, from ``start`` (default now).

        A type whose devices are all busy then is refused with the next free time
        (:class:`~specklab.client.BookingConflict`); ``wait`` books that later slot instead."""
        name = target if isinstance(target, str) else device_id(target)
        by = {"device_id": name} if ":" in name else {"device_type": name}
        body = BookingCreate(**by, minutes=minutes, starts_at=start, ends_at=end, next_free=wait)
        return self.fetch("POST", "/v1/bookings", BookingPublic, json=body)

    def bookings(
        self, *, device: Any = None, user_id: int | None = None, current: bool = False
    ) -> Op[list[BookingPublic]]:
        """Your bookings (admins: everyone's), newest first; ``current`` keeps upcoming and
        running ones."""
        params = {
            "device_id": None if device is None else device_id(device),
            "user_id": user_id,
            "current": "true" if current else None,
        }
        return self.fetch("GET", "/v1/bookings", list[BookingPublic], params=params)

    def booking(self, booking: Any) -> Op[BookingPublic]:
        return self.fetch("GET", f"/v1/bookings/{_id(booking)}", BookingPublic)

    def cancel(self, booking: Any) -> Op[BookingPublic]:
        """Cancel a booking that has not started, or release one that runs."""
        return self.fetch("DELETE", f"/v1/bookings/{_id(booking)}", BookingPublic)

    def extend(
        self, booking: Any, *, minutes: int | None = None, end: datetime | None = None
    ) -> Op[BookingPublic]:
        """Move a booking's end later by ``minutes``, or to ``end``."""
        body = BookingExtend(minutes=minutes, ends_at=end)
        return self.fetch("POST", f"/v1/bookings/{_id(booking)}/extend", BookingPublic, json=body)

    def heartbeat(self, booking: Any) -> Op[LeasePublic]:
        """Renew the lease of a running booking (``book`` does this for you)."""
        return self.fetch("POST", f"/v1/bookings/{_id(booking)}/heartbeat", LeasePublic)

    def preempt(self, booking: Any, reason: str = "") -> Op[BookingPublic]:
        """End someone's booking early (admins only)."""
        body = BookingPreempt(reason=reason)
        return self.fetch("POST", f"/v1/bookings/{_id(booking)}/preempt", BookingPublic, json=body)

    # Models.
    def upload(
        self,
        model: ModelSource,
        *,
        options: CompileOptions | dict[str, Any],
        name: str | None = None,
        progress: bool = False,
    ) -> Op[RemoteModel]:
        """Upload a model and compile it with ``options`` (``CompileOptions`` or its fields);
        ``name`` defaults to the file's name, or a module's class name.
        ``progress``: a bar while the file goes out, then the compile's place in the queue.

        ``model``: a path or the bytes of a TorchScript, ``.pt2`` or NIR file, a
        ``torch.nn.Module`` (exported here, with ``options.input_shape``) or a NIR graph.
        """
        options = CompileOptions.model_validate(options)
        file = model_file(model, input_shape=options.input_shape)
        name = name or file.default_name
        fields = {"options": options.model_dump_json(exclude_unset=True), "name": name}
        if progress:
            # Token and role first: nothing is drawn for an upload refused before it starts.
            user = yield from self.me()
            if user.role == Role.OBSERVER:
                message = f"{user.name} is an observer: observers can only read"
                raise api_error(403, ErrorBody(code="read_only", message=message))
        shown = UploadProgress(name, len(file.content), progress)
        try:
            response = yield self.upload_call(file.filename, file.content, fields, shown)
        finally:
            shown.close()
        model = RemoteModel(self.parse(response, ModelInfo))
        warn_all([problem.message for problem in model.report.warnings])
        return model

    def compile(
        self,
        /,
        model: ModelSource,
        input_shape: tuple[int, int, int],
        *,
        name: str | None = None,
        progress: bool = False,
        **options: Any,
    ) -> Op[RemoteModel]:
        """Compile a model for the chip, as the guide's ``DynapcnnNetwork(...)`` does.

        ``options`` are ``CompileOptions`` fields: ``spike_threshold``, ``min_v_mem``,
        ``add_spiking_output``, ``dvs_input``, ``discretize``, ``chip``,
        ``chip_layers_ordering``, ``readout`` ... A model that does not fit raises
        :class:`~specklab.client.ModelDoesNotFit` with the compiler's report.
        """
        body = CompileOptions(input_shape=input_shape, **options)
        return self.upload(model, options=body, name=name, progress=progress)

    def models(self) -> Op[list[RemoteModel]]:
        """Your models (admins: everyone's)."""
        infos = yield from self.fetch("GET", "/v1/models", list[ModelInfo])
        return [RemoteModel(info) for info in infos]

    def model(self, model: Any) -> Op[RemoteModel]:
        info = yield from self.fetch("GET", f"/v1/models/{_id(model)}", ModelInfo)
        return RemoteModel(info)

    def delete_model(self, model: Any) -> Op[None]:
        return self.fetch("DELETE", f"/v1/models/{_id(model)}", None)

    def chip_config(self, model: Any) -> Op[ChipConfig]:
        """The chip configuration the compiler made of a model."""
        return self.fetch("GET", f"/v1/models/{_id(model)}/config", ChipConfig)

    # Datasets and evaluation jobs (docs/jobs.md).
    def upload_dataset(
        self, file: str | os.PathLike[str] | bytes, *, name: str | None = None
    ) -> Op[DatasetInfo]:
        """Upload a labelled event dataset: a ``.npz`` or HDF5 file of the documented layout,
        or a zip or tar of AEDAT4 recordings with a ``labels.csv`` (docs/jobs.md)."""
        if isinstance(file, bytes):
            content, filename = file, "dataset"
        else:
            content, filename = Path(file).read_bytes(), Path(file).name
        fields = {"name": name or filename}
        return self.fetch(
            "POST", "/v1/datasets", DatasetInfo, files={"file": (filename, content)}, data=fields
        )

    def datasets(self) -> Op[list[DatasetInfo]]:
        return self.fetch("GET", "/v1/datasets", list[DatasetInfo])

    def delete_dataset(self, dataset: Any) -> Op[None]:
        return self.fetch("DELETE", f"/v1/datasets/{_id(dataset)}", None)

    def submit_job(self, /, model: Any, dataset: Any, **options: Any) -> Op[JobPublic]:
        """Queue an evaluation of ``model`` over ``dataset``; ``options`` are ``JobOptions``
        fields (``duration_us``, ``readout``, ``monitor_layers``...). ``devices``: devices
        you have booked (ids, listing entries or bookings) to run it on instead of the
        evaluation workers."""
        if options.get("devices") is not None:
            options["devices"] = [device_id(device) for device in options["devices"]]
        body = JobCreate(
            model_id=int(_id(model)), dataset_id=int(_id(dataset)), options=JobOptions(**options)
        )
        return self.fetch("POST", "/v1/jobs", JobPublic, json=body)

    def jobs(self) -> Op[list[JobPublic]]:
        return self.fetch("GET", "/v1/jobs", list[JobPublic])

    def job(self, job: Any) -> Op[JobPublic]:
        """A job's state, progress and ETA."""
        return self.fetch("GET", f"/v1/jobs/{_id(job)}", JobPublic)

    def cancel_job(self, job: Any) -> Op[JobPublic]:
        return self.fetch("DELETE", f"/v1/jobs/{_id(job)}", JobPublic)

    def job_summary(self, job: Any) -> Op[JobSummary]:
        """Accuracy, confusion, cost per layer and the reproducibility record of a done job."""
        return self.fetch("GET", f"/v1/jobs/{_id(job)}/summary", JobSummary)

    def job_samples(self, job: Any) -> Op[dict[str, np.ndarray]]:
        """A done job's per-sample rows as columns (``label``, ``prediction``, ``counts``...)."""
        response = yield self.call("GET", f"/v1/jobs/{_id(job)}/samples")
        self.check(response)
        with np.load(io.BytesIO(response.content), allow_pickle=False) as columns:
            return {name: columns[name] for name in columns.files}

    # Deployments.
    def deploy(
        self,
        model: Any,
        device: Any,
        *,
        chip_layers_ordering: Literal["auto"] | list[int] | dict[int, int] = "auto",
        monitor_layers: list[int | Literal["dvs"]] | Literal["all"] | None = None,
        config_patch: ConfigPatch | dict[str, Any] | None = None,
        slow_clock_hz: float | None = None,
    ) -> Op[Deployment]:
        """Put a compiled model on a booked device, as the guide's ``hw_model.to(device=...)``;
        the clients hand it back as a ``HardwareModel`` to call with events.

        ``chip_layers_ordering``: "auto", cores in model layer order, or a layer -> core map;
        ``monitor_layers``: the layers whose spikes come out (default ``[-1]``, the exits);
        ``config_patch``: a :class:`ConfigPatch` applied last; ``slow_clock_hz``: the slow clock
        that adds leaks and biases (unset: never).
        """
        body = DeploymentRequest(
            model_id=model_id(model),
            chip_layers_ordering=chip_layers_ordering,
            monitor_layers=[-1] if monitor_layers is None else monitor_layers,
            config_patch=None if config_patch is None else ConfigPatch.model_validate(config_patch),
            slow_clock_hz=slow_clock_hz,
        )
        path = f"/v1/devices/{_segment(device_id(device))}/deployment"
        deployment = yield from self.fetch("POST", path, Deployment, json=body)
        warn_all(deployment.warnings)
        return deployment

    def deployment(self, device: Any) -> Op[Deployment]:
        """What runs on a device now."""
        path = f"/v1/devices/{_segment(device_id(device))}/deployment"
        return self.fetch("GET", path, Deployment)

    def undeploy(self, device: Any) -> Op[None]:
        path = f"/v1/devices/{_segment(device_id(device))}/deployment"
        return self.fetch("DELETE", path, None)

    def reset_states(self, device: Any) -> Op[None]:
        """Set every neuron of the deployed network back to its initial state."""
        path = f"/v1/devices/{_segment(device_id(device))}/reset-states"
        return self.fetch("POST", path, None)

    def neuron_states(self, device: Any, layer: int) -> Op[NeuronStates]:
        """A deployed model layer's membrane potentials now (``.array()``: int32
        ``[feature, y, x]``)."""
        path = f"/v1/devices/{_segment(device_id(device))}/deployment/layers/{int(layer)}/states"
        return self.fetch("GET", path, NeuronStates)

    # Recordings.
    def record(
        self,
        device: Any,
        duration_s: float,
        *,
        source: RecordingSource = "dvs",
        name: str = "",
        progress: bool = False,
    ) -> Op[Recording]:
        """Record ``duration_s`` seconds of a device's events on the daemon; returns when done."""
        body = RecordingRequest(
            device_id=device_id(device), duration_s=duration_s, source=source, name=name
        )
        wait = duration_s + (self.timeout.read or 0.0)
        with ticking(duration_s, f"record {body.device_id}", progress):
            response = yield self.call("POST", "/v1/recordings", json=body, timeout=wait)
        return self.parse(response, Recording)

    def record_dvs(
        self, device: Any, duration_s: float, *, progress: bool = False
    ) -> Op[np.ndarray]:
        """Record the sensor's events for ``duration_s`` seconds and fetch them as an array."""
        recording = yield from self.record(device, duration_s, source="dvs", progress=progress)
        return (yield from self.recording_events(recording))

    def recordings(self) -> Op[list[Recording]]:
        return self.fetch("GET", "/v1/recordings", list[Recording])

    def recording(self, recording: Any) -> Op[Recording]:
        return self.fetch("GET", f"/v1/recordings/{_id(recording)}", Recording)

    def delete_recording(self, recording: Any) -> Op[None]:
        return self.fetch("DELETE", f"/v1/recordings/{_id(recording)}", None)

    def recording_events(self, recording: Any, *, progress: bool = False) -> Op[np.ndarray]:
        """A recording's events as an array of the schemas' dtypes."""
        path = f"/v1/recordings/{_id(recording)}/events.npy"
        return self.download_array(path, f"recording {_id(recording)}", progress)

    def download_recording(
        self,
        recording: Any,
        destination: str | os.PathLike[str] | IO[bytes],
        *,
        format: RecordingFormat | None = None,
        progress: bool = False,
    ) -> Op[None]:
        """Save a recording's events as ``.npy`` or AEDAT 4 (``format``, else from the file
        name's suffix) to a path or a binary file object. A path is written whole or not at all.
        """
        if format is None:
            name = str(getattr(destination, "name", destination))
            format = "aedat4" if name.endswith(".aedat4") else "npy"
        if format not in ("npy", "aedat4"):
            raise ValueError(f"recordings download as 'npy' or 'aedat4', not {format!r}")
        path = f"/v1/recordings/{_id(recording)}/events.{format}"
        description = f"recording {_id(recording)}.{format}"
        if not isinstance(destination, str | os.PathLike):
            yield from self.download(path, destination, description, progress)
            return
        target = Path(destination)
        partial = target.with_name(target.name + ".part")
        try:
            with partial.open("wb") as sink:
                yield from self.download(path, sink, description, progress)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)

    def replay(self, recording: Any, device: Any, *, speed: float = 1.0) -> Op[int]:
        """Start playing a DVS recording into the DVS layer of a device's deployment; the
        outputs come out on the device's continuous stream. Returns the number of events."""
        body = ReplayRequest(device_id=device_id(device), speed=speed)
        path = f"/v1/recordings/{_id(recording)}/replay"
        answer = yield from self.fetch("POST", path, dict[str, int], json=body)
        return answer["events"]

    # Audit.
    def audit(
        self,
        *,
        action: str | None = None,
        actor_id: int | None = None,
        target: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> Op[list[AuditEntryPublic]]:
        """The audit log, newest first (admins only); ``action`` ending in ``.`` matches a
        prefix (``booking.``)."""
        params = {
            "action": action,
            "actor_id": actor_id,
            "target": target,
            "since": None if since is None else since.isoformat(),
            "limit": limit,
        }
        return self.fetch("GET", "/v1/audit", list[AuditEntryPublic], params=params)


class JobProgress:
    """A bar of samples done (tqdm shows the rate and ETA), on stderr when enabled."""

    def __init__(self, job: JobPublic, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=job.samples, desc=f"job {job.id}", unit="sample", disable=not enabled)
        self.show(job)

    def show(self, job: JobPublic) -> None:
        self.bar.update(job.samples_done - self.bar.n)
        self.bar.set_postfix_str(job.state.value)

    def close(self) -> None:
        self.bar.close()


#: Seconds between looks at a job being waited for.
JOB_POLL_S = 0.5


def lease_interval(lease: LeasePublic) -> float:
    """Seconds between heartbeats: a third of the lease, so two may fail before it lapses."""
    length: timedelta = lease.expires_at - lease.renewed_at
    return max(length.total_seconds() / 3, 0.5)
