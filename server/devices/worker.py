"""One thread per device, and the async bridge to it with timeouts.

Not a ``ThreadPoolExecutor``: its workers are joined when the interpreter exits, so one samna call
that never returns (a wedged USB transfer) would hang the daemon's shutdown. These threads are
daemon threads; a call that times out keeps its thread busy and later calls queue behind it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from .errors import DeviceTimeout

T = TypeVar("T")

_STOP = object()


class DeviceThread:
    """A single daemon thread running submitted calls in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        if self._closed:
            raise RuntimeError(f"thread {self.name} is shut down")
        future: Future[T] = Future()
        self._queue.put((future, fn, args))
        return future

    async def call(self, fn: Callable[..., T], *args: Any, timeout: float, what: str = "") -> T:
        """Run ``fn(*args)`` on this thread; DeviceTimeout after ``timeout`` seconds."""
        future = asyncio.wrap_future(self.submit(fn, *args))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            label = what or getattr(fn, "__name__", "call")
            raise DeviceTimeout(f"{label} on {self.name} took over {timeout:g} s") from None

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def shutdown(self) -> None:
        """Stop after the queued calls; returns at once (a stuck call is abandoned)."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)


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
