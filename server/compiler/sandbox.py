"""The compile worker's sandbox: if code from an upload ever ran there, it could do nothing.

A worker process calls :func:`enter` first thing, single-threaded, before it reads a request.
The layers (each one a name in :data:`LAYERS`; docs/security.md says what each stops):

``uid``
    The worker runs as uid/gid 65534 with no supplementary groups and no capabilities (only
    when the daemon is root). Without it the worker keeps the daemon's uid, in a user namespace
    of its own when it needs one to make the namespaces below, and drops every capability.
``mount``
    A private mount namespace whose every mount is read-only, with an empty read-only tmpfs on
    ``/tmp`` (the temporary directory torch and h5py ask for).
``network``
    An empty network namespace (a loopback that is down: nothing to reach, nothing listed).
``pid``
    A pid namespace (and IPC namespace) with its own ``/proc``: the daemon and every other
    process are out of sight, so out of reach of signals and ptrace.
``landlock``
    Reads only beneath the Python runtime, the system libraries, ``/proc/self``, ``/tmp`` and a
    few CPU facts; no write, unlink or create anywhere; no TCP; no signals out.
``seccomp``
    The system calls a compile never needs fail (``seccomp.py``): sockets, ptrace, signals to
    others, exec, mounts and namespaces.

Besides the layers, always: the worker gets a minimal environment (:func:`worker_env`), no file
descriptor but its three pipes, and a command line without secrets (the pool's concern).

The pid namespace needs a fork (``unshare`` moves only future children), and the first process
of a pid namespace ignores signals it has no handler for, the CPU-time limit's SIGXCPU
included. So with ``pid`` the process the pool started stays outside and waits, its child is
the namespace's init and waits, and the grandchild is the worker; each passes the exit status
on, a death by signal as that signal. Killing the outer process kills the namespace (the init
has a parent-death signal, and the kernel ends a namespace with its init).

:func:`missing_layers` says which layers this kernel cannot give, and why: it tries each in a
short-lived process, once per daemon.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import NoReturn

import specklab.schemas
import specklab.server

from . import landlock, seccomp
from .syscalls import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_REC,
    PR_SET_NO_NEW_PRIVS,
    PR_SET_PDEATHSIG,
    attach_mount,
    clone_mount,
    drop_capabilities,
    make_tree_read_only,
    mount,
    prctl,
    unshare,
)

LAYERS = ("uid", "mount", "network", "pid", "landlock", "seccomp")
#: The worker's uid and gid when the daemon is root ("nobody" on most systems).
SANDBOX_ID = 65534
#: The worker's temporary directory: the empty tmpfs of the ``mount`` layer.
TEMP_DIR = "/tmp"
_SYSTEM_LIBRARIES = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib")
#: Read by the dynamic loader, torch's CPU detection and os.urandom's fallback.
_SYSTEM_FILES = ("/etc/ld.so.cache", "/proc/cpuinfo", "/sys/devices/system/cpu", "/dev/urandom")


def worker_env() -> dict[str, str]:
    """A worker's whole environment: nothing of the daemon's (its database URL, its token)."""
    env = {
        "PATH": os.defpath,
        "LC_ALL": "C.UTF-8",
        "HOME": TEMP_DIR,
        "TMPDIR": TEMP_DIR,
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        # torch._dynamo creates its cache directory on import: let it find one that exists.
        "TORCHINDUCTOR_CACHE_DIR": TEMP_DIR,
    }
    if "PYTHONPATH" in os.environ:  # how the daemon found specklab, if not installed
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def start(arguments: list[str]) -> subprocess.Popen[bytes]:
    """Start ``python -P *arguments`` as a worker: its environment :func:`worker_env`, its
    stdin, stdout and stderr pipes to us, and no other file descriptor of ours."""
    return subprocess.Popen(
        [sys.executable, "-P", *arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=worker_env(),
        close_fds=True,
    )


def runtime_paths() -> list[Path]:
    """What a worker reads to import its code: the Python runtime, specklab, system libraries."""
    candidates = [
        *sys.path,
        *specklab.server.__path__,
        *specklab.schemas.__path__,
        sysconfig.get_config_var("LIBDIR") or "",
        *_SYSTEM_LIBRARIES,
    ]
    paths = {Path(c).resolve() for c in candidates if c and os.path.exists(c)}
    return sorted(p for p in paths if not any(a in paths for a in p.parents))


def enter(layers: Collection[str]) -> None:
    """Put this process in the sandbox ``layers`` name; raises OSError if one cannot be had.

    Returns in the sandboxed worker (with ``pid``, a grandchild: see the module docstring).
    """
    unknown = set(layers) - set(LAYERS)
    if unknown:
        raise ValueError(f"unknown sandbox layers: {sorted(unknown)}")
    tempfile.tempdir = TEMP_DIR  # so nothing probes for a writable one (there is none)
    as_nobody = "uid" in layers
    readable = runtime_paths()
    flags = _namespace_flags(layers)
    if flags & CLONE_NEWUSER:
        uid, gid = os.getuid(), os.getgid()
        unshare(flags)
        _map_ids(uid, gid)
    elif flags:
        unshare(flags)
    if "pid" in layers:
        _fork_into_pid_namespace()
    if flags & CLONE_NEWNS:
        _mount(layers, readable)
    if as_nobody:
        os.setgroups([])
        os.setresgid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID)
        os.setresuid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID)  # this clears every capability
    else:
        drop_capabilities()
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    if "landlock" in layers:
        extra = [Path(p) for p in _SYSTEM_FILES] + [Path("/proc/self").resolve()]
        if "mount" in layers:
            extra.append(Path(TEMP_DIR))
        landlock.restrict([*readable, *extra], writable_files=[Path(os.devnull)])
    if "seccomp" in layers:
        seccomp.install()


def _namespace_flags(layers: Collection[str]) -> int:
    flags = 0
    if {"uid", "mount", "pid"} & set(layers):
        flags |= CLONE_NEWNS  # "uid" needs one to keep the runtime readable: see _keep_readable
    if "network" in layers:
        flags |= CLONE_NEWNET
    if "pid" in layers:
        flags |= CLONE_NEWPID | CLONE_NEWIPC
    if flags and "uid" not in layers:
        # Without root, namespaces come with a user namespace; with root, not making one keeps
        # the kernel's user-namespace code (a frequent source of exploits) out of reach.
        flags |= CLONE_NEWUSER
    return flags


def _map_ids(uid: int, gid: int) -> None:
    """In the new user namespace, be root mapped onto the daemon's own ids (nothing more)."""
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
    Path("/proc/self/gid_map").write_text(f"0 {gid} 1")


def _fork_into_pid_namespace() -> None:
    init = os.fork()
    if init:
        _pass_on_exit_status(init)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    worker = os.fork()
    if worker:
        _pass_on_exit_status(worker)


def _pass_on_exit_status(child: int) -> NoReturn:
    os.close(0)  # only the worker holds the pool's pipes, so the pool sees its end as EOF
    os.close(1)
    code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    signum = -code if code < 0 else code - 128 if code > 128 else 0
    if signum and os.getpid() != 1:  # a namespace's init cannot die of its own signal
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    os._exit(128 + signum if signum else code)


def _mount(layers: Collection[str], readable: list[Path]) -> None:
    # Nothing done here may propagate to the daemon's mount namespace.
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    if "pid" in layers:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if "uid" in layers:
        for directory, inside in _closed_directories(readable, SANDBOX_ID).items():
            _cover(directory, inside)
    if "mount" in layers:
        temp = Path(TEMP_DIR)
        _cover(temp, [path for path in readable if temp in path.parents])
        make_tree_read_only("/")


def _closed_directories(paths: Iterable[Path], uid: int) -> dict[Path, list[Path]]:
    """The topmost directories above ``paths`` that ``uid`` may not enter, each with its paths.

    Python is often installed under /root (pyenv), which is mode 0700.
    """
    closed: dict[Path, list[Path]] = {}
    for path in paths:
        for directory in reversed(path.parents):
            info = os.stat(directory)
            if info.st_uid != uid and not info.st_mode & stat.S_IXOTH:
                closed.setdefault(directory, []).append(path)
                break
    return closed


def _cover(directory: Path, keep: Iterable[Path]) -> None:
    """An empty tmpfs over ``directory``, with ``keep`` (paths beneath it) mounted back in.

    Whatever else the directory held (root's own files, a data directory) is out of sight.
    """
    trees = [(path, path.is_dir(), clone_mount(str(path))) for path in keep]
    mount("tmpfs", str(directory), "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
    for path, is_dir, tree in trees:
        os.makedirs(path if is_dir else path.parent, mode=0o755, exist_ok=True)
        if not is_dir:
            path.touch()
        attach_mount(tree, str(path))
        os.close(tree)


_checking = threading.Lock()


def missing_layers() -> dict[str, str]:
    """The layers this kernel cannot give, each with the reason (tried once per process)."""
    with _checking:
        return _missing_layers()


@functools.cache
def _missing_layers() -> dict[str, str]:
    try:
        code = f"from {__name__} import report; report()"
        with start(["-c", code]) as process:
            out, err = process.communicate(timeout=120)
        if process.returncode:
            raise OSError(f"exit status {process.returncode}: {err.decode(errors='replace')}")
        return json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return {layer: f"could not test the sandbox: {exc}" for layer in LAYERS}


def available_layers() -> frozenset[str]:
    return frozenset(LAYERS) - missing_layers().keys()


def _try(layers: Collection[str]) -> str | None:
    """Why ``layers`` cannot be entered (tried in a child process), or None if they can."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read)
        try:
            enter(layers)
            for path in runtime_paths():  # the runtime is still readable
                os.listdir(path) if path.is_dir() else path.read_bytes()[:1]
            os._exit(0)
        except BaseException as exc:  # any failure means: not available
            os.write(write, f"{type(exc).__name__}: {exc}".encode())
            os._exit(1)
    os.close(write)
    with os.fdopen(read, "rb") as reason:
        message = reason.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    return None if code == 0 else message or f"exit status {code}"


def report() -> None:
    """Print :func:`missing_layers`' answer as JSON (run in a fresh process: see there)."""
    missing: dict[str, str] = {}
    if _try(LAYERS) is not None:
        reasons = {layer: _try([layer]) for layer in LAYERS}
        missing = {layer: reason for layer, reason in reasons.items() if reason is not None}
    print(json.dumps(missing))
