"""One thread per device, and the async bridge to it with timeouts.

Not a ``ThreadPoolExecutor``: its workers are joined when the interpreter exits, so one samna call
that never returns (a wedged USB transfer) would hang the daemon's shutdown. These threads are
daemon threads. A call that times out is withdrawn if it has not started, asked to stop if the
device can be interrupted, and otherwise reported as :class:`DeviceUnresponsive`: the thread
is then stuck, and the device manager gives the device a new thread and driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from .errors import DeviceTimeout, DeviceUnresponsive

T = TypeVar("T")

#: Seconds an interrupted call has to stop before its thread counts as stuck.
INTERRUPT_GRACE_S = 2.0
#: How much lower than the daemon's other threads a device thread runs (``nice`` steps): when
#: the cores are all busy, the event loop, which serves every stream (a 10-spike batch as much
#: as a frame of 2.8 MB), goes before the devices' bulk work (the simulator's compiled loop).
DEVICE_NICE = 5

_STOP = object()


class DeviceThread:
    """A single daemon thread running submitted calls in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        #: Held while a call runs, here or on the caller's thread (:meth:`run_here`).
        self._running = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        if self._closed:
            raise RuntimeError(f"thread {self.name} is shut down")
        future: Future[T] = Future()
        self._queue.put((future, fn, args))
        return future

    async def call(
        self,
        fn: Callable[..., T],
        *args: Any,
        timeout: float,
        what: str = "",
        interrupt: Callable[[], None] | None = None,
        grace_s: float = INTERRUPT_GRACE_S,
    ) -> T:
        """Run ``fn(*args)`` on this thread; DeviceTimeout after ``timeout`` seconds.

        At the timeout, a call still queued is withdrawn; a running one is asked to stop with
        ``interrupt`` (called from here, another thread) if given, and has ``grace_s`` more
        seconds to end. One that is still running raises :class:`DeviceUnresponsive`: this
        thread is stuck in it.
        """
        future = self.submit(fn, *args)
        waiter = asyncio.wrap_future(future)
        # Read the outcome even when nobody awaits it any more (no "never retrieved" warnings).
        waiter.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            done, _ = await asyncio.wait({waiter}, timeout=timeout)
        except asyncio.CancelledError:
            future.cancel()  # the caller is gone: a call not started yet is dropped
            raise
        if done:
            return waiter.result()
        label = what or getattr(fn, "__name__", "call")
        if future.cancel():
            raise DeviceTimeout(f"{label} on {self.name} waited over {timeout:g} s to start")
        if interrupt is not None:
            interrupt()
        done, _ = await asyncio.wait({waiter}, timeout=grace_s)
        if done:
            raise DeviceTimeout(f"{label} on {self.name} took over {timeout:g} s")
        raise DeviceUnresponsive(f"{label} on {self.name} took over {timeout:g} s and did not stop")

    def run_here(self, fn: Callable[[], T | None]) -> T | None:
        """``fn()`` on the calling thread if this thread is idle (no call running or queued),
        as one of its calls; None when it is not. For calls known to be short: nothing bounds
        or interrupts them here."""
        if self._closed or not self._queue.empty() or not self._running.acquire(blocking=False):
            return None
        try:
            return fn()
        finally:
            self._running.release()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def shutdown(self) -> None:
        """Stop after the queued calls; returns at once (a stuck call is abandoned)."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)

    def _run(self) -> None:
        _lower_priority(DEVICE_NICE)
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                with self._running:
                    result = fn(*args)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)


def _lower_priority(steps: int) -> None:
    """Run the calling thread ``steps`` nice levels lower (Linux schedules threads one by one;
    elsewhere, or where it is not allowed, the thread keeps its priority)."""
    with contextlib.suppress(AttributeError, OSError):
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + steps)


def call_with_timeout(fn: Callable[..., T], *args: Any, timeout: float, what: str) -> T:
    """Run a blocking call on a helper daemon thread; DeviceTimeout if it outlives ``timeout``.

    For the few samna calls known to hang (``apply_configuration`` until the board is reset);
    the helper thread is abandoned when it times out.
    """
    future: Future[T] = Future()

    def target() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=target, name=what, daemon=True).start()
    try:
        return future.result(timeout)
    except TimeoutError:
        raise DeviceTimeout(f"{what} did not finish within {timeout:g} s") from None
