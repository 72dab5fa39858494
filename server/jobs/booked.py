"""Jobs on booked devices: chunks run one sample after the other on a device of this host,
through the device interface, for as long as the job's owner holds the device's booking.

A job whose ``options.devices`` names booked devices queues chunks marked with them, chunk
``k`` with device ``k mod n`` (``queue.py``). Each host runs a :class:`BookedDevices`
supervisor that starts a :class:`~.runner.JobRunner` of one slot for every device of its own
that chunks wait for;
the runner claims, renews, stores and resumes those chunks as it does the workers' chunks,
and runs them with a :class:`DeviceExecutor`. Each chunk opens a hold on the device, applies
the job's configuration and runs every sample as a batch (``Device.forward``), the neuron
states reset before each one when ``options.reset`` says so; the hold is released after the
chunk, so between chunks the device is free for its owner's deployments. A chunk that finds
the booking of its device gone (when it starts, or while it runs) fails, and
``queue.fail`` hands it, with the job's other chunks of that device, over to another device of
the job that its owner still holds; the job fails when there is none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio.from_thread
from sqlalchemy.orm import Session

from specklab.schemas.chipconfig import ChipConfig

from ..booking import lab
from ..datasets.formats import Samples, load_canonical
from ..devices.base import DeviceOutput
from ..devices.errors import DeviceError
from ..devices.manager import DeviceHold, DeviceManager
from ..storage import Database
from ..storage.types import utcnow
from . import queue
from .evaluate import Plan, job_config
from .pool import ChunkCancelled, ChunkFailed, ChunkTask
from .runner import JobRunner

log = logging.getLogger(__name__)

#: Seconds a device may take past a sample's last input to answer it.
SETTLE_S = 1.0
#: Seconds between two looks at the device's booking while a chunk runs (a booking released
#: early ends the chunk; one that runs out is known from its end time).
BOOKING_CHECK_S = 1.0


class DeviceExecutor:
    """Runs a runner's chunks on one device (one slot: a device runs one sample at a time)."""

    size = 1

    def __init__(self, db: Database, devices: DeviceManager, device_id: str) -> None:
        self.db = db
        self.devices = devices
        self.device_id = device_id
        self._cancel = threading.Event()
        self._dataset: tuple[Path, Samples] | None = None

    def run(self, slot: int, task: ChunkTask) -> list[dict[str, Any]]:
        """Blocking, from a worker thread of the event loop's (the runner's ``to_thread``)."""
        self._cancel.clear()
        return anyio.from_thread.run(self._run, task)

    def cancel(self, slot: int) -> None:
        self._cancel.set()

    async def _run(self, task: ChunkTask) -> list[dict[str, Any]]:
        owner, ends_at = await self.db.run(lambda s: self._booking(s, task.user_id), write=True)
        try:
            config = ChipConfig.model_validate_json(task.config_path.read_bytes())
            samples = await anyio.to_thread.run_sync(self._samples, task.dataset_path)
        except (OSError, ValueError) as exc:
            raise ChunkFailed(f"the job's files cannot be read: {exc}") from exc
        plan = Plan.of(job_config(config, task.options), task.options)
        try:
            hold = await self.devices.open_hold(self.device_id, owner=owner)
        except DeviceError as exc:
            raise ChunkFailed(exc.message) from exc
        try:
            await hold.apply(plan.config)
            rows = []
            checked = time.monotonic()
            for index in range(task.start, task.stop):
                if self._cancel.is_set():
                    raise ChunkCancelled()
                if time.monotonic() - checked >= BOOKING_CHECK_S:  # released early, perhaps
                    checked = time.monotonic()
                    _, ends_at = await self.db.run(
                        lambda s: self._booking(s, task.user_id), write=True
                    )
                if utcnow() >= ends_at:
                    raise ChunkFailed(f"the booking of {self.device_id} ended")
                rows.append(await _sample(hold, plan, samples, index))
            return rows
        except DeviceError as exc:
            raise ChunkFailed(exc.message) from exc
        finally:
            with contextlib.suppress(DeviceError):
                await hold.close()

    def _booking(self, session: Session, user_id: int) -> tuple[str, datetime]:
        """The job owner's name and when their running booking of the device ends; the chunk
        counts as use of the booking."""
        now = utcnow()
        booking = lab.current_bookings(session, now=now, device_ids=[self.device_id]).get(
            self.device_id
        )
        if booking is None or booking.user_id != user_id:
            raise ChunkFailed(f"the job's owner no longer holds a booking of {self.device_id}")
        booking.lease_renewed_at = now
        found = booking.user.name, booking.ends_at
        session.commit()
        return found

    def _samples(self, path: Path) -> Samples:
        if self._dataset is None or self._dataset[0] != path:
            self._dataset = path, load_canonical(path.read_bytes())
        return self._dataset[1]


async def _sample(hold: DeviceHold, plan: Plan, samples: Samples, index: int) -> dict[str, Any]:
    started = time.perf_counter()
    if plan.options.reset:
        await hold.reset_states()
    events, end = plan.cut(samples.sample(index))
    if not len(events):
        output = DeviceOutput()
    elif plan.dvs_input:
        output = await hold.forward(dvs=events, settle_s=SETTLE_S)
    else:
        output = await hold.forward(spikes=plan.input_spikes(events), settle_s=SETTLE_S)
    # The simulator stops at ``end``: so are outputs after it not counted here either.
    spikes = output.spikes[output.spikes["t"] < end]
    readout = output.readout[output.readout["t"] < end]
    return plan.row(events, samples.labels[index], spikes, readout, started)


class BookedDevices:
    """This host's runners of booked-device chunks, one per device that chunks wait for."""

    def __init__(
        self,
        db: Database,
        devices: DeviceManager,
        *,
        host: str,
        config_path: Callable[[str], Path],
        dataset_path: Callable[[str], Path],
        fetch: Callable[[str, str], None],
        lease_s: float,
        poll_s: float = 0.25,
    ) -> None:
        self.db = db
        self.devices = devices
        self.poll_s = poll_s
        self._runner_options: dict[str, Any] = {
            "host": host,
            "config_path": config_path,
            "dataset_path": dataset_path,
            "fetch": fetch,
            "lease_s": lease_s,
            "poll_s": poll_s,
        }
        self._runners: dict[str, tuple[JobRunner, asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()
        for runner, _ in self._runners.values():
            runner.wake()

    def cancel_job(self, job_id: int) -> None:
        for runner, _ in list(self._runners.values()):
            runner.cancel_job(job_id)

    async def serve(self) -> None:
        """Start a runner for each of this host's devices that queued chunks wait for."""
        try:
            while True:
                try:
                    waited = await self.db.run(queue.queued_devices)
                except Exception:  # the database briefly away: try again at the next wake
                    log.exception("looking for booked-device jobs failed")
                    waited = set()
                here = {state.description.id for state in self.devices.states()}
                for device_id in (waited & here) - set(self._runners):
                    self._start(device_id)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_s)
        finally:
            tasks = [task for _, task in self._runners.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, device_id: str) -> None:
        executor = DeviceExecutor(self.db, self.devices, device_id)
        runner = JobRunner(self.db, executor, device=device_id, **self._runner_options)
        task = asyncio.create_task(runner.serve(), name=f"job-runner {device_id}")
        self._runners[device_id] = runner, task
