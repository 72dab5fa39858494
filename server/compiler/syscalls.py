"""The few Linux calls the compile sandbox needs that Python 3.11's ``os`` lacks, via ctypes.

Each raises :class:`OSError` with the call's errno when the kernel refuses. Only for
``sandbox.py``, ``landlock.py`` and ``seccomp.py``.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38

# Syscalls added since 5.x have one number on every architecture.
_OPEN_TREE = 428
_MOVE_MOUNT = 429
_MOUNT_SETATTR = 442
_OPEN_TREE_CLONE = 1
_AT_FDCWD = -100
_AT_RECURSIVE = 0x8000
_AT_EMPTY_PATH = 0x1000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_RDONLY = 0x1
_CAPSET_X86_64 = 126
_CAPSET_AARCH64 = 91
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def _c(argument: object) -> object:
    # Variadic calls pass Python ints as C int: widen them, or 64-bit arguments lose bits.
    return ctypes.c_long(argument) if isinstance(argument, int) else argument


def syscall(number: int, *arguments: object, what: str) -> int:
    return _check(_libc.syscall(ctypes.c_long(number), *map(_c, arguments)), what)


def machine() -> str:
    return os.uname().machine


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    encoded = [None if s is None else s.encode() for s in (source, target, fstype, data)]
    result = _libc.mount(*encoded[:3], ctypes.c_ulong(flags), encoded[3])
    _check(result, f"mount {target}")


def clone_mount(path: str) -> int:
    """A detached copy of the mount tree at ``path`` (a file descriptor), to attach elsewhere."""
    flags = _OPEN_TREE_CLONE | _AT_RECURSIVE | os.O_CLOEXEC
    return syscall(_OPEN_TREE, _AT_FDCWD, path.encode(), flags, what=f"open_tree {path}")


def attach_mount(tree: int, target: str) -> None:
    flags = _MOVE_MOUNT_F_EMPTY_PATH
    syscall(_MOVE_MOUNT, tree, b"", _AT_FDCWD, target.encode(), flags, what=f"move_mount {target}")


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def make_tree_read_only(path: str) -> None:
    """Every mount at and below ``path`` read-only (in this mount namespace)."""
    attr = _MountAttr(attr_set=_MOUNT_ATTR_RDONLY)
    size = ctypes.sizeof(attr)
    syscall(
        _MOUNT_SETATTR,
        _AT_FDCWD,
        path.encode(),
        _AT_RECURSIVE,
        ctypes.byref(attr),
        size,
        what="mount_setattr",
    )


def prctl(option: int, value: int) -> None:
    _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(value), 0, 0, 0), f"prctl {option}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def drop_capabilities() -> None:
    """Clear this process's effective, permitted and inheritable capability sets."""
    number = {"x86_64": _CAPSET_X86_64, "aarch64": _CAPSET_AARCH64}.get(machine())
    if number is None:
        raise OSError(38, f"capset: no syscall number known for {machine()}")
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()  # version 3: two 32-bit halves, all zero
    syscall(number, ctypes.byref(header), data, what="capset")
