"""WASI preview 1: arguments, environment, clocks, randomness, polling, process and scheduling.

Arguments and environment come only from the measured manifest (the context is built from it); the
host has no way to add any. Each function's witx signature is in ``wasi_snapshot_preview1.witx``.
"""

from __future__ import annotations

import os
import struct
import time
from typing import Any

from haven.libos.abi import wasi
from haven.libos.context import WasiContext
from haven.libos.errno import (
    EVENTRWFLAGS_HANGUP,
    SIGNAL_COUNT,
    SUBCLOCKFLAGS_ABSTIME,
    SUBCLOCKFLAGS_ALL,
    Clockid,
    Errno,
    Eventtype,
    Rights,
    WasiError,
)
from haven.libos.errors import ProcExit, bad_value
from haven.libos.fdtable import FileDesc, SocketDesc, StreamDesc
from haven.libos.layout import EVENT, SUBSCRIPTION
from haven.libos.net import wait_sockets

_U64 = struct.Struct("<Q")

# proc_exit statuses wasmtime's WASI accepts: [0, 126); POSIX shells give 126 and up other meanings.
MAX_EXIT_STATUS = 125
# Waiting on stdin and sockets together alternates between them in slices of this many seconds.
_SHARED_WAIT = 0.02


def _strings(ctx: WasiContext, items: list[bytes], ptrs: int, buf: int) -> int:
    mem = ctx.memory
    blob = b"".join(s + b"\0" for s in items)
    mem.check(ptrs, 4 * len(items), 4)
    mem.check(buf, len(blob))
    at = buf
    for i, s in enumerate(items):
        mem.put_u32(ptrs + 4 * i, at)
        at += len(s) + 1
    mem.write(buf, blob)
    return 0


def _sizes(ctx: WasiContext, items: list[bytes], count_ptr: int, size_ptr: int) -> int:
    ctx.memory.put_u32(count_ptr, len(items))
    ctx.memory.put_u32(size_ptr, sum(len(s) + 1 for s in items))
    return 0


@wasi("args_get", "i32 i32")
def args_get(ctx: WasiContext, argv: int, argv_buf: int) -> int:
    return _strings(ctx, ctx.args, argv, argv_buf)


@wasi("args_sizes_get", "i32 i32")
def args_sizes_get(ctx: WasiContext, count: int, size: int) -> int:
    return _sizes(ctx, ctx.args, count, size)


@wasi("environ_get", "i32 i32")
def environ_get(ctx: WasiContext, environ: int, environ_buf: int) -> int:
    return _strings(ctx, ctx.env, environ, environ_buf)


@wasi("environ_sizes_get", "i32 i32")
def environ_sizes_get(ctx: WasiContext, count: int, size: int) -> int:
    return _sizes(ctx, ctx.env, count, size)


def now(ctx: WasiContext, clock_id: int) -> int:
    clock = ctx.clock
    if clock_id == Clockid.MONOTONIC:
        return clock.monotonic()
    if clock_id == Clockid.REALTIME:
        return clock.realtime()
    if clock_id == Clockid.PROCESS_CPUTIME_ID:
        return clock.process_cputime()
    if clock_id == Clockid.THREAD_CPUTIME_ID:
        return clock.thread_cputime()
    raise bad_value("$clockid", clock_id)


@wasi("clock_res_get", "i32 i32")
def clock_res_get(ctx: WasiContext, clock_id: int, out: int) -> int:
    if clock_id > Clockid.THREAD_CPUTIME_ID:
        raise bad_value("$clockid", clock_id)
    ctx.memory.put_u64(out, ctx.clock.resolution(clock_id))
    return 0


@wasi("clock_time_get", "i32 i64 i32")
def clock_time_get(ctx: WasiContext, clock_id: int, precision: int, out: int) -> int:
    # The most frequent WASI call of many programs: the monotonic floor and the write are inlined.
    if clock_id == Clockid.MONOTONIC:
        clock = ctx.clock
        t = clock.mono_source()
        if t < clock.mono_floor:
            t = clock.mono_floor
        else:
            clock.mono_floor = t
    else:
        t = now(ctx, clock_id)
    mem = ctx.memory
    if out + 8 > mem.size or out & 7:
        mem.check(out, 8, 8)
    _U64.pack_into(mem.view, out, t)
    return 0


@wasi("random_get", "i32 i32")
def random_get(ctx: WasiContext, buf: int, length: int) -> int:
    ctx.memory.check(buf, length)
    ctx.memory.write(buf, ctx.random.take(length))
    return 0


@wasi("sched_yield")
def sched_yield(ctx: WasiContext) -> int:
    os.sched_yield()
    return 0


@wasi("proc_exit", "i32", noreturn=True)
def proc_exit(ctx: WasiContext, status: int) -> int:
    raise ProcExit(status)


@wasi("proc_raise", "i32")
def proc_raise(ctx: WasiContext, sig: int) -> int:
    """No signal is delivered to the guest (there is no asynchronous entry into a WASI module);
    wasi-libc emulates ``raise`` inside the guest. Like wasmtime: ENOTSUP."""
    if sig >= SIGNAL_COUNT:
        raise bad_value("$signal", sig)
    raise WasiError(Errno.NOTSUP)


# --- poll_oneoff -------------------------------------------------------------------------------------


def _fd_event(ctx: WasiContext, kind: int, fd: int) -> tuple[int, int, bool]:
    """(nbytes, flags, ready-now) for an fd subscription; EBADF as the whole call's error, as wasmtime."""
    desc = ctx.fds.get(fd)
    if type(desc) is StreamDesc:
        if (kind == Eventtype.FD_READ) != (desc.stream == 0):
            raise WasiError(Errno.BADF)
        if desc.stream == 0:
            return 1, 0, ctx.console.wait_readable(0)
        return 1, 0, True
    if type(desc) is FileDesc:
        desc.require(int(Rights.POLL_FD_READWRITE))
        if kind == Eventtype.FD_READ:
            avail = max(0, desc.file.size() - desc.position)
            return 1, 0 if avail else EVENTRWFLAGS_HANGUP, True
        return 1, 0, True
    if type(desc) is SocketDesc:
        desc.require(int(Rights.POLL_FD_READWRITE))
        ready, nbytes, rwflags = desc.socket.readiness(kind == Eventtype.FD_READ)
        return nbytes, rwflags, ready
    raise WasiError(Errno.BADF)


@wasi("poll_oneoff", "i32 i32 i32 i32")
def poll_oneoff(ctx: WasiContext, subs: int, events: int, nsubs: int, nevents_out: int) -> int:
    if nsubs == 0:
        raise WasiError(Errno.INVAL)
    mem = ctx.memory
    mem.check(subs, nsubs * SUBSCRIPTION.size, 8)
    mem.check(events, nsubs * EVENT.size, 8)
    mono = ctx.clock.monotonic()
    clocks: list[tuple[int, int]] = []  # (userdata, monotonic deadline)
    fds: list[tuple[int, int, int, int, bool]] = []  # (userdata, type, nbytes, flags, ready)
    stdin_wait: list[tuple[int, int]] = []
    sock_wait: list[tuple[int, Any]] = []  # (index into ``fds``, socket) of sockets not ready yet
    for i in range(nsubs):
        userdata, tag, _, ident, _, timeout, _, flags, _ = mem.unpack(
            SUBSCRIPTION, subs + i * SUBSCRIPTION.size
        )
        if tag == Eventtype.CLOCK:
            if flags & ~SUBCLOCKFLAGS_ALL or ident > Clockid.THREAD_CPUTIME_ID:
                raise WasiError(Errno.INVAL)
            if ident in (Clockid.PROCESS_CPUTIME_ID, Clockid.THREAD_CPUTIME_ID):
                raise WasiError(Errno.INVAL)  # no timer on CPU clocks, as wasmtime
            if flags & SUBCLOCKFLAGS_ABSTIME:
                current = ctx.clock.realtime() if ident == Clockid.REALTIME else mono
                timeout = max(0, timeout - current)
            clocks.append((userdata, mono + timeout))
        elif tag in (Eventtype.FD_READ, Eventtype.FD_WRITE):
            nbytes, rwflags, ready = _fd_event(ctx, tag, ident)
            fds.append((userdata, tag, nbytes, rwflags, ready))
            if not ready:
                desc = ctx.fds.get(ident)
                if type(desc) is SocketDesc:
                    sock_wait.append((len(fds) - 1, desc.socket))
                else:
                    stdin_wait.append((len(fds) - 1, ident))
        else:
            raise WasiError(Errno.INVAL)
    out: list[tuple[int, int, int, int]] = [(u, t, n, f) for u, t, n, f, ready in fds if ready]
    if not out:
        out = _wait(ctx, clocks, fds, stdin_wait, sock_wait)
    else:
        mono = ctx.clock.monotonic()
        out += [(u, Eventtype.CLOCK, 0, 0) for u, deadline in clocks if deadline <= mono]
    for i, (userdata, etype, nbytes, rwflags) in enumerate(out):
        mem.pack(EVENT, events + i * EVENT.size, userdata, 0, etype, bytes(5), nbytes, rwflags, bytes(6))
    mem.put_u32(nevents_out, len(out))
    return 0


def _wait(
    ctx: WasiContext,
    clocks: list[tuple[int, int]],
    fds: list[tuple[int, int, int, int, bool]],
    stdin_wait: list[tuple[int, int]],
    sock_wait: list[tuple[int, Any]],
) -> list[tuple[int, int, int, int]]:
    """Block until the first clock expires, stdin becomes readable or a socket ready, within the run's
    time limit."""
    while True:
        mono = ctx.clock.monotonic()
        expired = [(u, int(Eventtype.CLOCK), 0, 0) for u, deadline in clocks if deadline <= mono]
        if expired:
            return expired
        wait = min((d - mono for _, d in clocks), default=None)
        timeout = None if wait is None else wait / 1e9
        left = ctx.remaining()
        if left is not None and (timeout is None or left < timeout):
            timeout = left
        if sock_wait:
            if stdin_wait:  # both at once: wait on each in turn, briefly
                timeout = _SHARED_WAIT if timeout is None else min(timeout, _SHARED_WAIT)
                if ctx.console.wait_readable(0):
                    return [(fds[i][0], fds[i][1], 1, 0) for i, _ in stdin_wait]
            wait_sockets([(sock, fds[i][1] == Eventtype.FD_READ) for i, sock in sock_wait], timeout)
            ready = []
            for i, sock in sock_wait:
                now_ready, nbytes, rwflags = sock.readiness(fds[i][1] == Eventtype.FD_READ)
                if now_ready:
                    ready.append((fds[i][0], fds[i][1], nbytes, rwflags))
            if ready:
                return ready
        elif stdin_wait:
            if ctx.console.wait_readable(timeout):
                return [(fds[i][0], fds[i][1], 1, 0) for i, _ in stdin_wait]
        elif timeout is None:
            raise WasiError(Errno.INVAL)  # nothing could ever wake the guest
        else:
            time.sleep(timeout)
