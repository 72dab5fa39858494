"""Test-only: enter the compile worker's sandbox exactly as the worker does, then try attacks.

Run by ``test_sandbox.py`` through ``sandbox.start`` (the pool's own way of starting a worker)
as ``python -P sandbox_probe.py SETUP_JSON``, ``SETUP_JSON`` being ``{"layers": [...],
"targets": {...}, "then_signal": int | null}``. It calls ``sandbox.enter(layers)`` first, as
``worker.py`` does, then runs every probe and prints ``{probe: [allowed, detail]}`` as JSON.
The daemon never starts this file: no upload can reach it. :func:`worker_process` finds the
sandboxed process of a worker the pool started.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from specklab.server.compiler import sandbox

PROBE_PATH = Path(__file__)
_PTRACE_DETACH = 17
_PTRACE_SEIZE = 0x4206


def worker_process(started: int) -> int:
    """The innermost descendant of ``started`` (with the ``pid`` layer, its grandchild)."""
    pid = started
    while children := Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        [child] = children
        pid = int(child)
    return pid


def _ptrace(pid: int) -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(ctypes.c_long(_PTRACE_SEIZE), ctypes.c_long(pid), None, None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    libc.ptrace(ctypes.c_long(_PTRACE_DETACH), ctypes.c_long(pid), None, None)
    return "attached"


def _open_fds() -> list[int]:
    fds = []
    for fd in range(3, 1024):
        try:
            os.fstat(fd)
        except OSError:
            continue
        fds.append(fd)
    if fds:
        return fds
    raise OSError("no descriptor beyond stdin, stdout and stderr")


def _secrets_seen(secrets: list[str], daemon: int) -> list[str]:
    places = {"environment": "\0".join(f"{k}={v}" for k, v in os.environ.items())}
    for path in ("/proc/self/environ", "/proc/1/environ", "/proc/1/cmdline"):
        for where in (path, path.replace("/proc/", f"/proc/{daemon}/").replace("/1/", "/")):
            try:
                with open(where, "rb") as file:
                    places[where] = file.read().decode(errors="replace")
            except OSError:
                pass
    seen = [f"{where}" for where, text in places.items() if any(s in text for s in secrets)]
    if seen:
        return seen
    raise PermissionError("no secret visible")


def _create(path: str) -> str:
    with open(path, "x"):
        pass
    os.unlink(path)  # it could: leave no trace
    return path


def _socket_listed(name: str) -> str:
    with open("/proc/self/net/unix") as table:
        if name in table.read():
            return name
    raise LookupError(f"{name} not in this network namespace")


def _root_writable() -> str:
    if os.statvfs("/").f_flag & os.ST_RDONLY:
        raise PermissionError("/ is mounted read-only")
    return "/ is writable"


def _visible(path: str) -> str:
    if os.path.exists(path):
        return path
    raise FileNotFoundError(path)


def _same_uid(uid: int) -> int:
    if os.geteuid() == uid:
        return uid
    raise PermissionError(f"runs as uid {os.geteuid()}")


def _probes(t: dict[str, Any]) -> dict[str, Callable[[], object]]:
    daemon = t["daemon_pid"]
    return {
        "read the database": lambda: open(t["database"], "rb").read(16),
        "list the data dir": lambda: os.listdir(t["data_dir"]),
        "read another upload": lambda: open(t["upload"], "rb").read(16),
        "connect to the daemon's port": lambda: socket.create_connection(
            ("127.0.0.1", t["port"]), timeout=5
        ).close(),
        "open a network socket": lambda: socket.socket().close(),
        "signal the daemon": lambda: os.kill(daemon, 0),
        "ptrace the daemon": lambda: _ptrace(daemon),
        "read the daemon's cmdline": lambda: open(f"/proc/{daemon}/cmdline", "rb").read(),
        "read the daemon's environ": lambda: open(f"/proc/{daemon}/environ", "rb").read(),
        "see the daemon's process": lambda: _visible(f"/proc/{daemon}"),
        "unlink a file": lambda: os.unlink(t["victim"]),
        "create a file": lambda: _create(t["new_file"]),
        "create a file in /tmp": lambda: _create(f"/tmp/sandbox-probe-{daemon}"),
        "run a program": lambda: subprocess.run(["/bin/true"], check=True),
        "see inherited descriptors": _open_fds,
        "see the daemon's secrets": lambda: _secrets_seen(t["secrets"], daemon),
        "see the host's UNIX sockets": lambda: _socket_listed(t["abstract_socket"]),
        "list the root directory": lambda: os.listdir("/"),
        "write by the mount table": _root_writable,
        "run as the daemon's uid": lambda: _same_uid(t["daemon_uid"]),
    }


def _attempt(probe: Callable[[], object]) -> tuple[bool, str]:
    try:
        return True, repr(probe())[:200]
    except Exception as exc:  # every failure is a denial; the detail says which
        return False, f"{type(exc).__name__}: {exc}"


def main() -> None:
    setup = json.loads(sys.argv[1])
    sandbox.enter(setup["layers"])
    results = {name: _attempt(probe) for name, probe in _probes(setup["targets"]).items()}
    sys.stdout.write(json.dumps(results))
    sys.stdout.flush()
    if setup.get("then_signal"):
        os.kill(os.getpid(), signal.Signals(setup["then_signal"]))


if __name__ == "__main__":
    main()
