"""Device threads run below the daemon's other threads, so the event loop goes first."""

from __future__ import annotations

import os
import sys
import threading

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
