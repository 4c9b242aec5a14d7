"""WASI preview 1: the ``fd_*`` functions.

Where witx leaves an error open, the answer is wasmtime's (its ``wasmtime-wasi`` preview 1 adapter),
so that unmodified programs see the same errors under ``haven run`` as under ``wasmtime run``: e.g.
``fd_seek`` on a stream is ESPIPE, a write through a descriptor opened without ``fd_write`` is EBADF.
"""

from __future__ import annotations

from haven.libos.abi import wasi
from haven.libos.context import WasiContext
from haven.libos.errno import (
    FDFLAGS_ALL,
    FSTFLAGS_ALL,
    RIGHTS_ALL,
    Advice,
    Errno,
    Fdflags,
    Filetype,
    Fstflags,
    Preopentype,
    Rights,
    WasiError,
    Whence,
)
from haven.libos.errors import bad_value
from haven.libos.fdtable import Descriptor, DirDesc, FileDesc, SocketDesc, StreamDesc
from haven.libos.layout import DIRENT, FDSTAT, FILESTAT, PRESTAT
from haven.libos.vfs import Stat

MAX_OFFSET = (1 << 63) - 1  # off_t: offsets and sizes beyond it are EINVAL / EFBIG
_SYNC_FLAGS = int(Fdflags.DSYNC | Fdflags.SYNC | Fdflags.RSYNC)
_PAD3, _PAD5, _PAD6, _PAD7 = bytes(3), bytes(5), bytes(6), bytes(7)


def _close(desc: Descriptor) -> None:
    file = getattr(desc, "file", None)
    if file is not None:
        file.close()
    sock = getattr(desc, "socket", None)
    if sock is not None:
        sock.close()


@wasi("fd_advise", "i32 i64 i64 i32")
def fd_advise(ctx: WasiContext, fd: int, offset: int, length: int, advice: int) -> int:
    if advice > Advice.NOREUSE:
        raise bad_value("$advice", advice)
    ctx.fds.file(fd, Rights.FD_ADVISE)
    return 0  # advice only: nothing the LibOS's caches need to change for it


@wasi("fd_allocate", "i32 i64 i64")
def fd_allocate(ctx: WasiContext, fd: int, offset: int, length: int) -> int:
    desc = ctx.fds.file(fd, Rights.FD_ALLOCATE)
    if not desc.writable:
        raise WasiError(Errno.BADF)
    if offset > MAX_OFFSET or length > MAX_OFFSET or offset + length > MAX_OFFSET:
        raise WasiError(Errno.FBIG)
    if length == 0:
        raise WasiError(Errno.INVAL)
    desc.file.allocate(offset, length)
    return 0


@wasi("fd_close", "i32")
def fd_close(ctx: WasiContext, fd: int) -> int:
    _close(ctx.fds.remove(fd))
    return 0


def _sync(ctx: WasiContext, fd: int, right: int, data_only: bool) -> int:
    desc = ctx.fds.get(fd)
    if type(desc) is FileDesc:
        desc.require(right)
        desc.file.sync(data_only)
    elif type(desc) is DirDesc:
        desc.backend.sync()
    else:
        raise WasiError(Errno.BADF)
    return 0


@wasi("fd_datasync", "i32")
def fd_datasync(ctx: WasiContext, fd: int) -> int:
    return _sync(ctx, fd, Rights.FD_DATASYNC, True)


@wasi("fd_sync", "i32")
def fd_sync(ctx: WasiContext, fd: int) -> int:
    return _sync(ctx, fd, Rights.FD_SYNC, False)


@wasi("fd_fdstat_get", "i32 i32")
def fd_fdstat_get(ctx: WasiContext, fd: int, out: int) -> int:
    d = ctx.fds.get(fd)
    ctx.memory.pack(FDSTAT, out, d.filetype, b"\0", d.fdflags, bytes(4), d.rights_base, d.rights_inheriting)
    return 0


@wasi("fd_fdstat_set_flags", "i32 i32")
def fd_fdstat_set_flags(ctx: WasiContext, fd: int, flags: int) -> int:
    if flags & ~FDFLAGS_ALL:
        raise bad_value("$fdflags", flags)
    desc = ctx.fds.get(fd)
    if type(desc) not in (FileDesc, SocketDesc):
        raise WasiError(Errno.BADF)
    desc.require(Rights.FD_FDSTAT_SET_FLAGS)
    if flags & _SYNC_FLAGS:
        raise WasiError(Errno.INVAL)  # synchronous modes are chosen at open, as wasmtime requires
    desc.fdflags = (desc.fdflags & _SYNC_FLAGS) | flags
    return 0


@wasi("fd_fdstat_set_rights", "i32 i64 i64")
def fd_fdstat_set_rights(ctx: WasiContext, fd: int, base: int, inheriting: int) -> int:
    """Rights can only be dropped (witx): asking for one the descriptor lacks is ENOTCAPABLE."""
    if (base | inheriting) & ~RIGHTS_ALL:
        raise bad_value("$rights", base | inheriting)
    desc = ctx.fds.get(fd)
    if base & ~desc.rights_base or inheriting & ~desc.rights_inheriting:
        raise WasiError(Errno.NOTCAPABLE)
    desc.rights_base, desc.rights_inheriting = base, inheriting
    return 0


def write_filestat(ctx: WasiContext, out: int, s: Stat, dev: int) -> None:
    ctx.memory.pack(
        FILESTAT, out, dev, s.ino, s.filetype, _PAD7, s.nlink, s.size, s.atime_ns, s.mtime_ns, s.ctime_ns
    )


@wasi("fd_filestat_get", "i32 i32")
def fd_filestat_get(ctx: WasiContext, fd: int, out: int) -> int:
    d = ctx.fds.get(fd)
    d.require(Rights.FD_FILESTAT_GET)
    if type(d) is FileDesc:
        write_filestat(ctx, out, d.file.stat(), d.backend.device)
    elif type(d) is DirDesc:
        write_filestat(ctx, out, d.backend.stat(d.node), d.backend.device)
    else:
        write_filestat(ctx, out, Stat(d.filetype, 0, 0, 0, 0, 0, 0), 0)
    return 0


@wasi("fd_filestat_set_size", "i32 i64")
def fd_filestat_set_size(ctx: WasiContext, fd: int, size: int) -> int:
    desc = ctx.fds.file(fd)
    if not desc.writable:
        raise WasiError(Errno.INVAL)  # ftruncate(2) on a descriptor not open for writing
    desc.require(Rights.FD_FILESTAT_SET_SIZE)
    if size > MAX_OFFSET:
        raise WasiError(Errno.INVAL)
    desc.file.truncate(size)
    return 0


def new_times(ctx: WasiContext, atim: int, mtim: int, flags: int) -> tuple[int | None, int | None]:
    """The (atime, mtime) to set, None meaning unchanged; EINVAL for a value and NOW both asked."""
    if flags & ~FSTFLAGS_ALL:
        raise bad_value("$fstflags", flags)
    out: list[int | None] = []
    for value, given, now in (
        (atim, Fstflags.ATIM, Fstflags.ATIM_NOW),
        (mtim, Fstflags.MTIM, Fstflags.MTIM_NOW),
    ):
        if flags & given and flags & now:
            raise WasiError(Errno.INVAL)
        out.append(value if flags & given else ctx.clock.realtime() if flags & now else None)
    return out[0], out[1]


@wasi("fd_filestat_set_times", "i32 i64 i64 i32")
def fd_filestat_set_times(ctx: WasiContext, fd: int, atim: int, mtim: int, flags: int) -> int:
    atime, mtime = new_times(ctx, atim, mtim, flags)
    d = ctx.fds.get(fd)
    if type(d) is FileDesc:
        d.require(Rights.FD_FILESTAT_SET_TIMES)
        d.file.set_times(atime, mtime)
    elif type(d) is DirDesc:
        d.require(Rights.FD_FILESTAT_SET_TIMES)
        d.backend.set_times(d.node, atime, mtime)
    else:
        raise WasiError(Errno.BADF)
    return 0


def _readable(ctx: WasiContext, fd: int, positional: bool) -> FileDesc:
    desc = ctx.fds.get(fd)
    if type(desc) is not FileDesc:
        raise WasiError(Errno.SPIPE if positional and type(desc) is StreamDesc else Errno.BADF)
    if not desc.readable or not desc.rights_base & Rights.FD_READ:
        raise WasiError(Errno.BADF)
    return desc


def _writable(ctx: WasiContext, fd: int) -> FileDesc:
    desc = ctx.fds.get(fd)
    if type(desc) is not FileDesc:
        raise WasiError(Errno.SPIPE if type(desc) is StreamDesc else Errno.BADF)
    if not desc.writable or not desc.rights_base & Rights.FD_WRITE:
        raise WasiError(Errno.BADF)
    return desc


@wasi("fd_pread", "i32 i32 i32 i64 i32")
def fd_pread(ctx: WasiContext, fd: int, iovs: int, n: int, offset: int, out: int) -> int:
    iovecs = ctx.memory.iovecs(iovs, n)
    desc = _readable(ctx, fd, True)
    if offset > MAX_OFFSET:
        raise WasiError(Errno.INVAL)
    count = desc.file.read_into(offset, ctx.memory.buffers(iovecs))
    ctx.memory.put_u32(out, count)
    return 0


@wasi("fd_pwrite", "i32 i32 i32 i64 i32")
def fd_pwrite(ctx: WasiContext, fd: int, iovs: int, n: int, offset: int, out: int) -> int:
    iovecs = ctx.memory.iovecs(iovs, n)
    desc = _writable(ctx, fd)
    if offset > MAX_OFFSET:
        raise WasiError(Errno.INVAL)
    buffers = ctx.memory.buffers(iovecs)
    if desc.fdflags & Fdflags.APPEND:  # Linux pwrite on O_APPEND appends, and wasmtime follows it
        count = desc.file.append(buffers)[0]
    else:
        count = desc.file.write(offset, buffers)
    _after_write(desc)
    ctx.memory.put_u32(out, count)
    return 0


def _after_write(desc: FileDesc) -> None:
    if desc.fdflags & (Fdflags.SYNC | Fdflags.DSYNC):
        desc.file.sync(not desc.fdflags & Fdflags.SYNC)


@wasi("fd_read", "i32 i32 i32 i32")
def fd_read(ctx: WasiContext, fd: int, iovs: int, n: int, out: int) -> int:
    iovecs = ctx.memory.iovecs(iovs, n)
    desc = ctx.fds.get(fd)
    if type(desc) is FileDesc:
        if not desc.readable or not desc.rights_base & Rights.FD_READ:
            raise WasiError(Errno.BADF)
        count = desc.file.read_into(desc.position, ctx.memory.buffers(iovecs))
        desc.position += count
    elif type(desc) is StreamDesc and desc.stream == 0:
        count = ctx.console.read_into(ctx.memory.buffers(iovecs))
    elif type(desc) is SocketDesc:
        count = desc.socket.recv_into(ctx.memory.buffers(iovecs), 0)[0]
    else:
        raise WasiError(Errno.BADF)
    ctx.memory.put_u32(out, count)
    return 0


@wasi("fd_write", "i32 i32 i32 i32")
def fd_write(ctx: WasiContext, fd: int, iovs: int, n: int, out: int) -> int:
    iovecs = ctx.memory.iovecs(iovs, n)
    desc = ctx.fds.get(fd)
    if type(desc) is StreamDesc and desc.stream:
        count = ctx.console.write(desc.stream, ctx.memory.buffers(iovecs))
    elif type(desc) is FileDesc:
        if not desc.writable or not desc.rights_base & Rights.FD_WRITE:
            raise WasiError(Errno.BADF)
        buffers = ctx.memory.buffers(iovecs)
        if desc.fdflags & Fdflags.APPEND:
            count, desc.position = desc.file.append(buffers)
        else:
            count = desc.file.write(desc.position, buffers)
            desc.position += count
        _after_write(desc)
    elif type(desc) is SocketDesc:
        count = desc.socket.send(ctx.memory.buffers(iovecs))
    else:
        raise WasiError(Errno.BADF)
    ctx.memory.put_u32(out, count)
    return 0


@wasi("fd_prestat_get", "i32 i32")
def fd_prestat_get(ctx: WasiContext, fd: int, out: int) -> int:
    desc = ctx.fds.get(fd)
    if type(desc) is not DirDesc or desc.preopen is None:
        raise WasiError(Errno.BADF)
    ctx.memory.pack(PRESTAT, out, Preopentype.DIR, _PAD3, len(desc.preopen), align=4)
    return 0


@wasi("fd_prestat_dir_name", "i32 i32 i32")
def fd_prestat_dir_name(ctx: WasiContext, fd: int, path: int, path_len: int) -> int:
    desc = ctx.fds.get(fd)
    if type(desc) is not DirDesc or desc.preopen is None:
        raise WasiError(Errno.NOTDIR)
    if len(desc.preopen) > path_len:
        raise WasiError(Errno.NAMETOOLONG)
    ctx.memory.write(path, desc.preopen)
    return 0


@wasi("fd_readdir", "i32 i32 i32 i64 i32")
def fd_readdir(ctx: WasiContext, fd: int, buf: int, buf_len: int, cookie: int, out: int) -> int:
    """Entries from ``cookie`` on, packed as ``$dirent`` + name and cut at ``buf_len`` (a short count
    means the end). Cookies: 0 is ".", 1 is "..", 2 + c resumes the backend's listing at c."""
    desc = ctx.fds.dir(fd, Rights.FD_READDIR)
    ctx.memory.check(buf, buf_len)
    backend, node = desc.backend, desc.node
    data = bytearray()
    if cookie < 2:
        ino = backend.stat(node).ino
        for next_cookie, name in ((1, b"."), (2, b"..")):
            if next_cookie > cookie:
                data += DIRENT.pack(next_cookie, ino, len(name), Filetype.DIRECTORY, _PAD3) + name
    if len(data) < buf_len:
        for entry in backend.readdir(node, max(0, cookie - 2)):
            data += DIRENT.pack(entry.next_cookie + 2, entry.ino, len(entry.name), entry.filetype, _PAD3)
            data += entry.name
            if len(data) >= buf_len:
                break
    count = min(len(data), buf_len)
    ctx.memory.write(buf, memoryview(data)[:count])
    ctx.memory.put_u32(out, count)
    return 0


@wasi("fd_renumber", "i32 i32")
def fd_renumber(ctx: WasiContext, fd: int, to: int) -> int:
    old = ctx.fds.renumber(fd, to)
    if old is not None:
        _close(old)
    return 0


@wasi("fd_seek", "i32 i64 i32 i32")
def fd_seek(ctx: WasiContext, fd: int, offset: int, whence: int, out: int) -> int:
    if whence > Whence.END:
        raise bad_value("$whence", whence)
    desc = ctx.fds.get(fd)
    if type(desc) is not FileDesc:
        raise WasiError(Errno.SPIPE if type(desc) is StreamDesc else Errno.BADF)
    delta = offset - (1 << 64) if offset >= 1 << 63 else offset  # $filedelta is s64
    desc.require(Rights.FD_TELL if whence == Whence.CUR and delta == 0 else Rights.FD_SEEK)
    if whence == Whence.SET:
        pos = delta
    elif whence == Whence.CUR:
        pos = desc.position + delta
    else:
        pos = desc.file.size() + delta
    if pos < 0 or pos > MAX_OFFSET:
        raise WasiError(Errno.INVAL)
    ctx.memory.put_u64(out, pos)
    desc.position = pos
    return 0


@wasi("fd_tell", "i32 i32")
def fd_tell(ctx: WasiContext, fd: int, out: int) -> int:
    desc = ctx.fds.get(fd)
    if type(desc) is not FileDesc:
        raise WasiError(Errno.SPIPE if type(desc) is StreamDesc else Errno.BADF)
    desc.require(Rights.FD_TELL)
    ctx.memory.put_u64(out, desc.position)
    return 0
