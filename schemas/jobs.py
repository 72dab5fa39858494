"""REST bodies of datasets and evaluation jobs (``docs/jobs.md``)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator


class DatasetInfo(BaseModel):
    id: int
    name: str
    owner: str
    #: sha256 of the uploaded file: the same upload is stored once.
    sha256: str
    format: Literal["npz", "hdf5", "aedat4", "recordings"]
    samples: int
    events: int
    #: Distinct labels; classes are 0 .. max(label).
    classes: int
    #: Largest x, y and p of any event (what the model's input must hold).
    max_x: int
    max_y: int
    max_p: int
    #: The longest sample's span in microseconds (its last event's time + 1).
    longest_sample_us: int = 0
    #: The most events one sample holds.
    largest_sample_events: int = 0
    #: What it takes on the daemon's disk, and counts against your dataset quota: the upload
    #: and its canonical form (uncompressed), or the canonical form of recordings.
    size_bytes: int
    created_at: datetime


class DatasetFromRecordings(BaseModel):
    """A dataset of your DVS recordings: one sample per recording, labelled in order."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="recordings", max_length=200)
    recordings: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(
        min_length=1, max_length=10_000
    )
    labels: list[Annotated[int, Field(ge=0, lt=2**15)]] = Field(min_length=1, max_length=10_000)


class Readout(StrEnum):
    #: The output layer's feature with the most spikes (ties: the lowest index).
    SPIKE_COUNT = "spike_count"
    #: The output layer's feature that spikes first.
    FIRST_SPIKE = "first_spike"
    #: The class the chip's readout layer reports most often.
    READOUT_LAYER = "readout"


#: Booked devices one job may run on.
MAX_JOB_DEVICES = 16


def _printable_device_ref(ref: str) -> str:
    if not ref.isprintable() or ref != ref.strip():
        raise ValueError("a device id holds no control characters nor surrounding spaces")
    if ref == "virtual":
        raise ValueError("'virtual' is not a device: leave devices out for the evaluation workers")
    return ref


#: A device's lab-wide id or its name on its host (``speck2fdevkit:0``).
DeviceRef = Annotated[
    str, Field(min_length=1, max_length=128), AfterValidator(_printable_device_ref)
]


class JobOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Each sample runs from 0 to this many microseconds (events after it are not sent);
    #: None: until its last event.
    #: At most a minute (``docs/jobs.md``, per-sample limits).
    duration_us: int | None = Field(default=None, ge=1, le=60_000_000)
    readout: Readout = Readout.SPIKE_COUNT
    #: Neurons, decimators and readout back to their initial state before every sample.
    reset: bool = True
    #: Model layers whose spikes and synaptic operations are counted (negative from the end);
    #: None: every layer. The output layer is always monitored.
    monitor_layers: list[int] | None = Field(default=None, max_length=9)
    #: Slow clock for leaks and the readout; None: the model's own.
    slow_clock_hz: float | None = Field(default=None, gt=0, le=1_000_000)
    #: None: the hosts' evaluation workers, in parallel; or the lab-wide ids (or names) of 1 to
    #: 16 devices you have booked (real devkits, or virtual devkits of the devices list): the
    #: job's chunks are spread over them (chunk k on device k mod n), each run one sample after
    #: the other for as long as you hold its booking; a chunk whose device's booking ends is
    #: handed over to another of them. The results are those of the evaluation workers.
    #: (``device``, one id or ``virtual``, is read as the one-device form of this list.)
    devices: list[DeviceRef] | None = Field(default=None, min_length=1, max_length=MAX_JOB_DEVICES)
    #: Samples per chunk: the unit of work a worker claims, and what a restart repeats;
    #: None: a sixteenth of the dataset (1 to 500 samples), so workers share the work and
    #: each chunk's database round trips cost little next to its samples. A job has at most
    #: 10,000 chunks (422 ``too_many_chunks``).
    chunk_size: int | None = Field(default=None, ge=1, le=10_000)

    @model_validator(mode="before")
    @classmethod
    def _one_device(cls, data: Any) -> Any:
        """The one-device form ``device`` (``virtual``: the workers) as ``devices``."""
        if not isinstance(data, dict) or "device" not in data:
            return data
        data = dict(data)
        device = data.pop("device")
        if data.get("devices") is not None:
            raise ValueError("give devices or device, not both")
        if device is not None and device != "virtual":
            data["devices"] = [device]
        return data

    @field_validator("devices")
    @classmethod
    def _distinct(cls, devices: list[str] | None) -> list[str] | None:
        if devices is not None:
            twice = sorted({d for d in devices if devices.count(d) > 1})
            if twice:
                raise ValueError(f"a device named twice: {', '.join(twice)}")
        return devices


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: int = Field(ge=1, le=2**31 - 1)
    dataset_id: int = Field(ge=1, le=2**31 - 1)
    options: JobOptions = Field(default_factory=JobOptions)


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobPublic(BaseModel):
    id: int
    owner: str
    model_id: int
    dataset_id: int
    options: JobOptions
    state: JobState
    samples: int
    samples_done: int
    #: samples_done / samples.
    progress: float
    #: Seconds left at the pace so far; None before the first chunk finishes.
    eta_s: float | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    #: Why the job failed, when it did.
    error: str | None = None


class Reproducibility(BaseModel):
    model_sha256: str
    dataset_sha256: str
    compile_options: dict[str, Any]
    #: sha256 of the chip configuration the job ran (monitors and slow clock applied).
    chip_config_sha256: str
    device: str
    specklab_version: str
    options: JobOptions
    #: No randomness is involved in a run; kept so records of seeded runs compare.
    seed: int | None = None


class JobSummary(BaseModel):
    job: JobPublic
    accuracy: float
    #: ``confusion[label][prediction]``; samples with no prediction are in ``no_output``.
    confusion: list[list[int]]
    per_class_accuracy: list[float | None]
    no_output: list[int]
    #: Model layers counted, in the order of the per-layer columns.
    layers: list[int]
    mean_spikes_per_layer: list[float]
    mean_synops_per_layer: list[float]
    #: Mean first-spike latency in microseconds over samples whose output spiked.
    mean_latency_us: float | None
    #: Seconds from the first chunk claimed to the last finished, and summed over samples.
    wall_time_s: float
    sample_time_s: float
    reproducibility: Reproducibility
