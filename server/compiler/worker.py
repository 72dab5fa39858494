"""The compile worker: a separate process that reads uploads, so the daemon never does.

Started by :class:`~.pool.CompilerPool` as ``python -P -m specklab.server.compiler.worker
SETUP_JSON`` (``{"limits": ..., "warm": bool, "layers": [...]}``). Before anything else it
enters the sandbox (``sandbox.py``: the ``layers`` named), then limits itself (address space,
no file writes, no core dumps), imports torch, torch.export's deserializer, nir and h5py once
when ``warm`` (that is what makes warm compiles fast), says it is ready, then answers
requests until its stdin closes. Each request gets a fresh CPU-time budget (RLIMIT_CPU is
cumulative, so the soft limit moves up by the budget each time); exceeding it kills the
process with SIGXCPU, which the pool reports and replaces.

Protocol (both ways): a 4-byte big-endian length, then a msgpack map. Requests
``{"op": "compile", "data": bytes, "options": json}``; replies ``{"ok": true, "config":
bytes, "report": json}`` or ``{"ok": false, "code", "message", "detail", "report", "fatal"}``.
Only plain data crosses: msgpack and JSON, never pickle.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import traceback
from typing import Any

from . import sandbox
from .protocol import read_message, write_message


def _limit_memory(memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _forbid_file_writes() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def _warm_up() -> None:
    """Import everything a compile needs, so the first request costs no more than the next."""
    import h5py  # noqa: F401
    import nir  # noqa: F401
    import torch
    import torch._export.serde.serialize
    import torch.export.pt2_archive._package

    from . import nirgraph, torchexport, torchscript  # noqa: F401

    torch.set_num_threads(1)


def _cpu_seconds_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _budget(cpu_seconds: int) -> None:
    soft = int(_cpu_seconds_used()) + 1 + cpu_seconds
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _compile(request: dict[str, Any], archive_limits: Any) -> dict[str, Any]:
    from specklab.schemas.compile import CompileOptions

    from .errors import CompileError
    from .pipeline import compile_upload

    try:
        options = CompileOptions.model_validate_json(request["options"])
        result = compile_upload(request["data"], options, archive_limits)
    except CompileError as exc:
        return {
            "ok": False,
            "code": exc.code,
            "message": exc.message,
            "detail": json.dumps(exc.detail, default=str),
            "report": exc.report.model_dump_json() if exc.report is not None else None,
            "fatal": False,
        }
    except MemoryError:
        return {
            "ok": False,
            "code": "resource_limit",
            "message": "reading the model exceeded the worker's memory limit",
            "detail": "null",
            "report": None,
            "fatal": True,
        }
    return {"ok": True, "config": result.config_json, "report": result.report.model_dump_json()}


def main() -> int:
    from .archive import ArchiveLimits

    setup = json.loads(sys.argv[1])
    sandbox.enter(setup["layers"])
    limits = setup["limits"]
    archive_limits = ArchiveLimits(**limits["archive"])
    channel_in = sys.stdin.buffer
    channel_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt replies
    _limit_memory(limits["memory_bytes"])
    _forbid_file_writes()
    if setup["warm"]:
        _warm_up()
    write_message(channel_out, {"ok": True, "ready": True})
    while (request := read_message(channel_in)) is not None:
        _budget(limits["cpu_seconds"])
        try:
            reply = _compile(request, archive_limits)
        except Exception as exc:  # a compiler bug: report it, keep the traceback in the log
            traceback.print_exc()
            reply = {
                "ok": False,
                "code": "worker_crashed",
                "message": f"internal compiler error: {type(exc).__name__}: {exc}",
                "detail": "null",
                "report": None,
                "fatal": True,
            }
        write_message(channel_out, reply)
        if reply.get("fatal"):
            return 1
    return 0


if __name__ == "__main__":
    status = main()
    sys.stderr.flush()
    # Skip interpreter teardown: torch's exit handlers take seconds and there is nothing to save.
    os._exit(status)
