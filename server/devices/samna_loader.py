"""Import the real samna lazily, off the event loop, with a timeout; never the PyPI stub.

The probe (:mod:`.samna_probe`) reads files only; the import happens the first time devices are
scanned, on a daemon thread, and only when the probe found the real package. An import that
outlives the timeout is not started again: later scans pick up its result once it is done.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from enum import StrEnum
from types import ModuleType

from .samna_probe import SamnaState, SamnaStatus, probe_samna

log = logging.getLogger("specklab.devices.samna")


class SamnaLoad(StrEnum):
    NOT_INSTALLED = "not installed"
    PYPI_STUB = "PyPI stub present, real package not installed (not imported)"
    NOT_LOADED = "installed, not imported yet"
    IMPORTING = "importing (timed out once, still trying)"
    LOADED = "loaded"
    FAILED = "import failed"


@dataclass(frozen=True, slots=True)
class SamnaReport:
    state: SamnaLoad
    version: str | None = None
    detail: str | None = None


class SamnaLoader:
    def __init__(
        self,
        *,
        timeout_s: float,
        module_name: str = "samna",
        probe: Callable[[], SamnaStatus] = probe_samna,
    ) -> None:
        self._timeout_s = timeout_s
        self._module_name = module_name
        self._probe = probe
        self._status: SamnaStatus | None = None
        self._future: Future[ModuleType] | None = None
        self._module: ModuleType | None = None
        self._error: str | None = None

    def report(self) -> SamnaReport:
        status = self._status or self._probe()
        version = status.version
        if self._module is not None:
            return SamnaReport(SamnaLoad.LOADED, getattr(self._module, "__version__", version))
        if self._error is not None:
            return SamnaReport(SamnaLoad.FAILED, version, self._error)
        if status.state is SamnaState.NOT_INSTALLED:
            return SamnaReport(SamnaLoad.NOT_INSTALLED)
        if status.state is SamnaState.PYPI_STUB:
            return SamnaReport(SamnaLoad.PYPI_STUB, version)
        if self._future is not None:
            return SamnaReport(SamnaLoad.IMPORTING, version)
        return SamnaReport(SamnaLoad.NOT_LOADED, version)

    async def module(self) -> ModuleType | None:
        """The samna module, or None when it is absent, the stub, broken or still importing."""
        if self._module is not None or self._error is not None:
            return self._module
        if self._future is None:
            self._status = self._probe()
            if not self._status.usable:
                return None
            self._future = self._start_import()
            waiting = asyncio.wrap_future(self._future)
            try:
                await asyncio.wait_for(asyncio.shield(waiting), self._timeout_s)
            except TimeoutError:
                log.warning("samna import still running after %gs", self._timeout_s)
                return None
            except Exception:
                pass  # recorded below from the future
        if not self._future.done():
            return None
        error = self._future.exception()
        if error is not None:
            self._error = f"{type(error).__name__}: {error}"
            log.error("samna import failed: %s", self._error)
            return None
        self._module = self._future.result()
        log.info("samna loaded", extra={"samna": getattr(self._module, "__version__", None)})
        return self._module

    def _start_import(self) -> Future[ModuleType]:
        future: Future[ModuleType] = Future()

        def target() -> None:
            try:
                future.set_result(importlib.import_module(self._module_name))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=target, name="samna-import", daemon=True).start()
        return future
