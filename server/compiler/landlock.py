"""Landlock: after :func:`restrict`, this process reads only the paths it was given, writes none.

Every file-system right the kernel's Landlock knows is handled, so whatever is not granted is
denied: no write, truncate, unlink, rename, mkdir, mknod, symlink or execute anywhere, and reads
only beneath the given paths. From ABI 4 on, TCP bind and connect are denied too; from ABI 6 on,
signals to processes outside the sandbox and abstract UNIX sockets of outside are too. The
restriction holds for this process and everything it starts, and cannot be lifted.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable
from pathlib import Path

from .syscalls import syscall

_CREATE_RULESET = 444
_ADD_RULE = 445
_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

_READ_FILE = 1 << 2
_READ_DIR = 1 << 3
_WRITE_FILE = 1 << 1
#: File-system rights by ABI version: 13 in ABI 1, then REFER (2), TRUNCATE (3), IOCTL_DEV (5).
_FS_RIGHTS = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET_BIND_AND_CONNECT_TCP = 0b11
_SCOPE_ABSTRACT_UNIX_AND_SIGNAL = 0b11


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi_version() -> int:
    """The kernel's Landlock ABI version; raises OSError when Landlock is missing or disabled."""
    return syscall(_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION, what="landlock")


def _ruleset(version: int) -> int:
    fs = _FS_RIGHTS[max(v for v in _FS_RIGHTS if v <= version)]
    attr = _RulesetAttr(handled_access_fs=fs)
    size = 8  # the struct grew with the ABI: pass only the fields this kernel knows
    if version >= 4:
        attr.handled_access_net = _NET_BIND_AND_CONNECT_TCP
        size = 16
    if version >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX_AND_SIGNAL
        size = 24
    return syscall(_CREATE_RULESET, ctypes.byref(attr), size, 0, what="landlock_create_ruleset")


def _allow(ruleset: int, path: Path, access: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        if not os.path.isdir(fd):
            access &= ~_READ_DIR  # a rule on a file may name file rights only
        rule = _PathBeneathAttr(allowed_access=access, parent_fd=fd)
        syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0, what=f"{path}")
    finally:
        os.close(fd)


def restrict(readable: Iterable[Path], writable_files: Iterable[Path]) -> None:
    """Allow reading beneath ``readable`` and reading and writing ``writable_files``, nothing else.

    Needs no-new-privileges (or CAP_SYS_ADMIN); paths that do not exist are skipped. Applies to
    the calling thread and its future threads and children: call it before starting threads.
    """
    ruleset = _ruleset(abi_version())
    try:
        for path, access in [
            *((p, _READ_FILE | _READ_DIR) for p in readable),
            *((p, _READ_FILE | _WRITE_FILE) for p in writable_files),
        ]:
            if path.exists():
                _allow(ruleset, path, access)
        syscall(_RESTRICT_SELF, ruleset, 0, what="landlock_restrict_self")
    finally:
        os.close(ruleset)
