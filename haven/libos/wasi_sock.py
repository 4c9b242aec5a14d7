"""WASI preview 1: the ``sock_*`` functions, for listeners the manifest preopens.

Descriptors that are not sockets answer ENOTSOCK (EBADF if not open), as wasmtime does. Socket
descriptors hold a :class:`haven.libos.net.Listener` (``accept()``) or a
:class:`haven.libos.net.Connection` (``recv_into(buffers, flags)``, ``send(buffers)``,
``shutdown(how)``): streams the host relays, with TLS terminated in the enclave on RA-TLS listeners.
Whether a call blocks follows the descriptor's ``FDFLAGS_NONBLOCK`` (EAGAIN instead of waiting);
a blocking call waits through the host's ``net_poll``, within the run's time limit.
"""

from __future__ import annotations

from typing import Any

from haven.libos.abi import wasi
from haven.libos.context import WasiContext
from haven.libos.errno import (
    FDFLAGS_ALL,
    RIFLAGS_ALL,
    RIGHTS_SOCKET,
    SDFLAGS_ALL,
    Errno,
    Filetype,
    Rights,
    WasiError,
)
from haven.libos.errors import bad_value
from haven.libos.fdtable import SocketDesc


def _socket(ctx: WasiContext, fd: int, right: int) -> Any:
    desc = ctx.fds.get(fd)
    if type(desc) is not SocketDesc:
        raise WasiError(Errno.NOTSOCK)
    desc.require(right)
    return desc.socket


@wasi("sock_accept", "i32 i32 i32")
def sock_accept(ctx: WasiContext, fd: int, flags: int, out: int) -> int:
    if flags & ~FDFLAGS_ALL:
        raise bad_value("$fdflags", flags)
    listener = _socket(ctx, fd, Rights.SOCK_ACCEPT)
    ctx.memory.check(out, 4, 4)  # a bad pointer faults before a connection is taken
    conn = listener.accept()
    desc = SocketDesc(Filetype.SOCKET_STREAM, RIGHTS_SOCKET, 0, flags, socket=conn)
    conn.desc = desc
    try:
        fd = ctx.fds.add(desc)
    except WasiError:
        conn.close()
        raise
    ctx.memory.put_u32(out, fd)
    return 0


@wasi("sock_recv", "i32 i32 i32 i32 i32 i32")
def sock_recv(ctx: WasiContext, fd: int, iovs: int, n: int, flags: int, out_len: int, out_flags: int) -> int:
    if flags & ~RIFLAGS_ALL:
        raise bad_value("$riflags", flags)
    iovecs = ctx.memory.iovecs(iovs, n)
    sock = _socket(ctx, fd, Rights.FD_READ)
    count, roflags = sock.recv_into(ctx.memory.buffers(iovecs), flags)
    ctx.memory.put_u32(out_len, count)
    ctx.memory.check(out_flags, 2, 2)
    ctx.memory.write(out_flags, int(roflags).to_bytes(2, "little"))
    return 0


@wasi("sock_send", "i32 i32 i32 i32 i32")
def sock_send(ctx: WasiContext, fd: int, iovs: int, n: int, flags: int, out: int) -> int:
    iovecs = ctx.memory.iovecs(iovs, n)
    sock = _socket(ctx, fd, Rights.FD_WRITE)
    if flags:
        raise WasiError(Errno.INVAL)  # $siflags: no flags are defined yet
    ctx.memory.put_u32(out, sock.send(ctx.memory.buffers(iovecs)))
    return 0


@wasi("sock_shutdown", "i32 i32")
def sock_shutdown(ctx: WasiContext, fd: int, how: int) -> int:
    if how & ~SDFLAGS_ALL:
        raise bad_value("$sdflags", how)
    sock = _socket(ctx, fd, Rights.SOCK_SHUTDOWN)
    if not how:
        raise WasiError(Errno.INVAL)
    sock.shutdown(how)
    return 0
