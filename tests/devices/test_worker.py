"""Device threads run below the daemon's other threads, so the event loop goes first."""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import Future

import pytest

from specklab.server.devices.worker import DEVICE_NICE, DeviceThread


def _own_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="a nice value per thread is Linux's")
async def test_a_device_thread_runs_device_nice_steps_lower() -> None:
    caller = _own_nice()
    thread = DeviceThread("test-device")
    try:
        assert await thread.call(_own_nice, timeout=10) == min(caller + DEVICE_NICE, 19)
    finally:
        thread.shutdown()
    assert _own_nice() == caller  # only the device's thread runs lower


async def test_run_here_runs_on_the_caller_when_the_thread_is_idle() -> None:
    thread = DeviceThread("test-device")
    try:
        assert thread.run_here(threading.current_thread) is threading.current_thread()
        assert await thread.call(threading.current_thread, timeout=10) is not (
            threading.current_thread()
        )
    finally:
        thread.shutdown()


async def test_run_here_declines_while_a_call_runs_or_waits() -> None:
    thread = DeviceThread("test-device")
    started, release = threading.Event(), threading.Event()

    def blocking() -> str:
        started.set()
        release.wait(10)
        return "blocked"

    try:
        running = thread.submit(blocking)
        assert started.wait(10)
        queued = thread.submit(lambda: "queued")
        assert thread.run_here(lambda: "here") is None  # running, and one queued
        release.set()
        assert running.result(10) == "blocked" and queued.result(10) == "queued"
        assert thread.run_here(lambda: "here") == "here"
    finally:
        thread.shutdown()


async def test_a_call_submitted_during_run_here_waits_for_it() -> None:
    thread = DeviceThread("test-device")
    order: list[str] = []
    submitted: list[Future[None]] = []

    def here() -> str:
        submitted.append(thread.submit(lambda: order.append("thread")))
        time.sleep(0.05)  # the thread would run that call now, were this not a call of its own
        order.append("here")
        return "done"

    try:
        assert thread.run_here(here) == "done"
        submitted[0].result(10)
        assert order == ["here", "thread"]
    finally:
        thread.shutdown()
