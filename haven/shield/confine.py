"""Confinement: after boot, the enclave process reaches the OS only through its host channel.

A seccomp filter (Linux ``seccomp(2)``, ``SECCOMP_SET_MODE_FILTER``), built with libseccomp
(``libseccomp.so.2``, Debian package ``libseccomp2``) through ctypes. It is an allow-list: what
CPython and wasmtime need to *compute* — memory, futexes, clocks, randomness, signals for wasmtime's
trap handling, threads — and I/O on the channel's socket (and the console's stderr, for the fail-stop
line) only, by file-descriptor number, plus the channel's receive and send timeouts. Everything else
(``open``, ``socket``, ``connect``, ``execve``, ``fork``, ``ptrace``, ...) fails with ``EPERM``.

Why ``EPERM`` rather than killing the process or ``ENOSYS``: a refused call surfaces as a Python
``PermissionError`` that the shield reports like any other refusal, instead of a silent kill that
hides which call was attempted; and ``ENOSYS`` invites C libraries to fall back to an older system
call that might be allowed. The one deliberate ``ENOSYS`` is ``clone3``, whose flags live in memory
where a filter cannot read them: glibc then falls back to ``clone``, whose flags the filter checks
(``CLONE_THREAD`` must be set — threads, never processes).

The filter is loaded with ``SCMP_FLTATR_CTL_TSYNC`` so every thread of the process (wasmtime and
CPython start helpers before boot ends) is confined at once, and with ``NO_NEW_PRIVS`` (libseccomp's
default), so it needs no privilege. It cannot be removed: confinement is for the life of the process.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
from typing import Any

from haven.errors import HavenError

# libseccomp, seccomp.h: actions (SCMP_ACT_*) are the kernel's SECCOMP_RET_* values
# (include/uapi/linux/seccomp.h), with the errno in the low 16 bits for SCMP_ACT_ERRNO.
_ACT_ALLOW = 0x7FFF0000
_ACT_ERRNO = 0x00050000
# seccomp.h, enum scmp_filter_attr.
_FLTATR_CTL_NNP = 3
_FLTATR_CTL_TSYNC = 4
# seccomp.h, enum scmp_compare.
_CMP_EQ = 4
_CMP_MASKED_EQ = 7
# include/uapi/linux/sched.h: a clone that makes a thread of this process, not a new process.
_CLONE_THREAD = 0x00010000

# Calls that take no file descriptor and touch nothing outside the process.
COMPUTE_CALLS = (
    # memory (CPython's allocator, wasmtime's linear memories, guard pages and code)
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "membarrier",
    # threads and their synchronisation
    "futex", "futex_waitv", "sched_yield", "sched_getaffinity", "set_robust_list", "get_robust_list",
    "rseq", "getpid", "gettid",
    # signals: wasmtime turns faults in guest code into traps with SIGSEGV/SIGILL/SIGFPE handlers
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "restart_syscall",
    # clocks, sleeping, randomness
    "clock_gettime", "clock_getres", "gettimeofday", "time", "clock_nanosleep", "nanosleep", "getrandom",
    # waiting for the channel: readiness only; reading and writing are filtered by descriptor below
    "poll", "ppoll",
    "close",
    "exit", "exit_group",
)  # fmt: skip
# Calls allowed only on the channel (reads) or on the channel and the console (writes).
READ_CALLS = ("read", "readv", "recvfrom", "recvmsg")
WRITE_CALLS = ("write", "writev", "sendto", "sendmsg")


class ConfinementError(HavenError):
    """The process cannot be confined (no seccomp in this kernel, or no libseccomp)."""


class _ArgCmp(ctypes.Structure):
    # seccomp.h, struct scmp_arg_cmp
    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


def _library() -> Any:
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        raise ConfinementError(
            "libseccomp is not installed (Debian: apt-get install libseccomp2)"
        ) from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = (ctypes.c_uint32,)
    lib.seccomp_release.argtypes = (ctypes.c_void_p,)
    lib.seccomp_attr_set.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32)
    lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_rule_add_array.argtypes = (
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp),
    )  # fmt: skip
    lib.seccomp_load.argtypes = (ctypes.c_void_p,)
    return lib


def _kernel_has_seccomp() -> bool:
    # proc(5): the "Seccomp" line of /proc/self/status exists only on a kernel built with
    # CONFIG_SECCOMP; /proc/sys/kernel/seccomp/actions_avail lists what the filter mode can do.
    try:
        with open("/proc/sys/kernel/seccomp/actions_avail", encoding="ascii") as f:
            actions = f.read().split()
    except OSError:
        return False
    return {"allow", "errno"} <= set(actions)


def seccomp_available() -> bool:
    """Whether this kernel and this machine's libseccomp can confine a process."""
    if not _kernel_has_seccomp():
        return False
    try:
        _library()
    except ConfinementError:
        return False
    return True


def confine(channel_fd: int, console_fd: int | None = 2) -> None:
    """Load the filter: from here on, this process computes, and talks to ``channel_fd`` (and writes
    to ``console_fd``), and nothing else. Raises :class:`ConfinementError` if it cannot."""
    if not _kernel_has_seccomp():
        raise ConfinementError("this kernel has no seccomp filter mode: the enclave cannot be confined")
    lib = _library()
    ctx = lib.seccomp_init(_ACT_ERRNO | errno.EPERM)
    if not ctx:
        raise ConfinementError("seccomp_init failed")
    try:
        _check(lib.seccomp_attr_set(ctx, _FLTATR_CTL_NNP, 1), "seccomp_attr_set(NNP)")
        _check(lib.seccomp_attr_set(ctx, _FLTATR_CTL_TSYNC, 1), "seccomp_attr_set(TSYNC)")
        for name in COMPUTE_CALLS:
            _rule(lib, ctx, _ACT_ALLOW, name)
        writers = [channel_fd] + ([console_fd] if console_fd is not None else [])
        for name in READ_CALLS:
            _rule(lib, ctx, _ACT_ALLOW, name, (0, _CMP_EQ, channel_fd, 0))
        for name in WRITE_CALLS:
            for fd in writers:
                _rule(lib, ctx, _ACT_ALLOW, name, (0, _CMP_EQ, fd, 0))
        # The channel's receive and send timeouts (how long the host may take to answer), and no
        # other socket option.
        for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
            on_channel = (0, _CMP_EQ, channel_fd, 0)
            _rule(lib, ctx, _ACT_ALLOW, "setsockopt",
                  on_channel, (1, _CMP_EQ, socket.SOL_SOCKET, 0), (2, _CMP_EQ, option, 0))  # fmt: skip
        # A signal only to this process's own threads (abort(3) raises SIGABRT with tgkill).
        _rule(lib, ctx, _ACT_ALLOW, "tgkill", (0, _CMP_EQ, os.getpid(), 0))
        _rule(lib, ctx, _ACT_ALLOW, "clone", (0, _CMP_MASKED_EQ, _CLONE_THREAD, _CLONE_THREAD))
        _rule(lib, ctx, _ACT_ERRNO | errno.ENOSYS, "clone3")
        _check(lib.seccomp_load(ctx), "seccomp_load")
    finally:
        lib.seccomp_release(ctx)


def _rule(lib: Any, ctx: int, action: int, name: str, *cmps: tuple[int, int, int, int]) -> None:
    nr = lib.seccomp_syscall_resolve_name(name.encode("ascii"))
    if nr < 0:
        return  # not a system call on this architecture (e.g. "time" on arm64): nothing to allow
    array = (_ArgCmp * max(1, len(cmps)))(*(_ArgCmp(*c) for c in cmps))
    _check(lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), array), f"seccomp rule for {name}")


def _check(rc: int, what: str) -> None:
    # libseccomp returns a negative errno on failure.
    if rc < 0:
        raise ConfinementError(f"{what} failed: {os.strerror(-rc)}")
