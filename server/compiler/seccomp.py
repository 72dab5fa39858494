"""A seccomp filter for the compile worker: the system calls a compile never needs fail.

Refused with EPERM: ``socket`` (any family: no network, no UNIX socket such as a database's or
a container runtime's), ``ptrace`` and ``process_vm_readv/writev`` (reading or steering another
process), ``kill``/``tgkill`` aimed at any process but this one and ``tkill``, ``execve``/
``execveat`` (starting programs), mounts and namespaces (``mount``, ``umount2``,
``pivot_root``, ``chroot``, ``unshare``, ``setns``, the new mount API, ``clone`` with a
namespace flag), and kernel attack surface a compile has no use for (``bpf``,
``perf_event_open``, ``userfaultfd``, keyrings, ``io_uring``, modules, ``kexec``,
``open_by_handle_at``). ``clone3`` answers ENOSYS (its flags are behind a pointer the filter
cannot read), so the C library falls back to ``clone``, whose flags it can. A foreign system
call ABI (x32 on x86_64, another architecture) kills the process.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

from .syscalls import PR_SET_NO_NEW_PRIVS, machine, prctl, syscall

_DENIED = (
    "socket",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "tkill",
    "execve",
    "execveat",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "open_by_handle_at",
)

#: Per architecture: the audit arch value, the first number of a foreign ABI sharing it (x32),
#: and the numbers of the system calls the filter looks at.
_COMMON = {
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "clone3": 435,
    "mount_setattr": 442,
    "io_uring_setup": 425,
}
_ARCHES: dict[str, tuple[int, int | None, dict[str, int]]] = {
    "x86_64": (
        0xC000003E,
        0x40000000,
        _COMMON
        | {
            "seccomp": 317,
            "socket": 41,
            "ptrace": 101,
            "process_vm_readv": 310,
            "process_vm_writev": 311,
            "kill": 62,
            "tkill": 200,
            "tgkill": 234,
            "execve": 59,
            "execveat": 322,
            "mount": 165,
            "umount2": 166,
            "pivot_root": 155,
            "chroot": 161,
            "unshare": 272,
            "setns": 308,
            "clone": 56,
            "bpf": 321,
            "perf_event_open": 298,
            "userfaultfd": 323,
            "keyctl": 250,
            "add_key": 248,
            "request_key": 249,
            "init_module": 175,
            "finit_module": 313,
            "delete_module": 176,
            "kexec_load": 246,
            "open_by_handle_at": 304,
        },
    ),
    "aarch64": (
        0xC00000B7,
        None,
        _COMMON
        | {
            "seccomp": 277,
            "socket": 198,
            "ptrace": 117,
            "process_vm_readv": 270,
            "process_vm_writev": 271,
            "kill": 129,
            "tkill": 130,
            "tgkill": 131,
            "execve": 221,
            "execveat": 281,
            "mount": 40,
            "umount2": 39,
            "pivot_root": 41,
            "chroot": 51,
            "unshare": 97,
            "setns": 268,
            "clone": 220,
            "bpf": 280,
            "perf_event_open": 241,
            "userfaultfd": 282,
            "keyctl": 219,
            "add_key": 217,
            "request_key": 218,
            "init_module": 105,
            "finit_module": 273,
            "delete_module": 106,
            "kexec_load": 104,
            "open_by_handle_at": 265,
        },
    ),
}

#: CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
_NAMESPACE_FLAGS = 0x7E020000

# Classic BPF over struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]}.
_LD_W_ABS = 0x20
_JEQ = 0x15
_JGE = 0x35
_JSET = 0x45
_RET = 0x06
_NR, _ARCH, _ARG0 = 0, 4, 16  # the low 32 bits of args[0] on a little-endian machine
_ALLOW = 0x7FFF0000
_KILL_PROCESS = 0x80000000
_ERRNO = 0x00050000
_EPERM = _ERRNO | errno.EPERM
_ENOSYS = _ERRNO | errno.ENOSYS
_SET_MODE_FILTER = 1
_FILTER_FLAG_TSYNC = 1

Instruction = tuple[int, int, int, int]


def _load(offset: int) -> Instruction:
    return (_LD_W_ABS, 0, 0, offset)


def _ret(action: int) -> Instruction:
    return (_RET, 0, 0, action)


def _only_for_self(number: int, own_pid: int) -> list[Instruction]:
    """``number`` is allowed when its first argument is this process's pid, refused otherwise."""
    return [
        (_JEQ, 0, 4, number),
        _load(_ARG0),
        (_JEQ, 0, 1, own_pid),
        _ret(_ALLOW),
        _ret(_EPERM),
    ]


def program(arch: str, own_pid: int) -> list[Instruction]:
    """The filter for ``arch`` (a ``uname -m`` value), for the process whose pid is ``own_pid``."""
    audit_arch, foreign_from, numbers = _ARCHES[arch]
    code: list[Instruction] = [_load(_ARCH), (_JEQ, 1, 0, audit_arch), _ret(_KILL_PROCESS)]
    code.append(_load(_NR))
    if foreign_from is not None:
        code += [(_JGE, 0, 1, foreign_from), _ret(_KILL_PROCESS)]
    for name in _DENIED:
        code += [(_JEQ, 0, 1, numbers[name]), _ret(_EPERM)]
    code += [(_JEQ, 0, 1, numbers["clone3"]), _ret(_ENOSYS)]
    code += _only_for_self(numbers["kill"], own_pid)
    code += _only_for_self(numbers["tgkill"], own_pid)
    code += [
        (_JEQ, 0, 4, numbers["clone"]),
        _load(_ARG0),
        (_JSET, 1, 0, _NAMESPACE_FLAGS),
        _ret(_ALLOW),
        _ret(_EPERM),
    ]
    code.append(_ret(_ALLOW))
    return code


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install() -> None:
    """Apply the filter to every thread of this process, for good (sets no-new-privileges)."""
    arch = machine()
    if arch not in _ARCHES:
        raise OSError(errno.ENOSYS, f"seccomp: no system call table for {arch}")
    code = program(arch, os.getpid())
    packed = b"".join(struct.pack("=HBBI", *instruction) for instruction in code)
    buffer = ctypes.create_string_buffer(packed, len(packed))
    fprog = _SockFprog(len(code), ctypes.cast(buffer, ctypes.c_void_p))
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    number = _ARCHES[arch][2]["seccomp"]
    syscall(number, _SET_MODE_FILTER, _FILTER_FLAG_TSYNC, ctypes.byref(fprog), what="seccomp")
