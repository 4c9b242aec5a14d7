"""WASI preview 1: the ``path_*`` functions, each confined to the directory descriptor it names.

Every path is resolved by :func:`haven.libos.vfs.resolve` beneath that directory (see there for the
escape rules); two-directory operations (link, rename) across different mounts are EXDEV.
"""

from __future__ import annotations

from haven.libos.abi import wasi
from haven.libos.context import WasiContext
from haven.libos.errno import (
    FDFLAGS_ALL,
    LOOKUPFLAGS_ALL,
    OFLAGS_ALL,
    RIGHTS_ALL,
    Errno,
    Fdflags,
    Filetype,
    Lookupflags,
    Oflags,
    Rights,
    WasiError,
)
from haven.libos.errors import bad_value
from haven.libos.fdtable import DirDesc, FileDesc, dir_rights, file_rights
from haven.libos.vfs import resolve, resolve_parent
from haven.libos.wasi_fd import new_times, write_filestat


def _path(ctx: WasiContext, ptr: int, length: int) -> bytes:
    return ctx.memory.string(ptr, length)


def _lookupflags(flags: int) -> bool:
    if flags & ~LOOKUPFLAGS_ALL:
        raise bad_value("$lookupflags", flags)
    return bool(flags & Lookupflags.SYMLINK_FOLLOW)


@wasi("path_create_directory", "i32 i32 i32")
def path_create_directory(ctx: WasiContext, fd: int, path: int, path_len: int) -> int:
    d = ctx.fds.dir(fd, Rights.PATH_CREATE_DIRECTORY)
    res = resolve(d.backend, d.node, _path(ctx, path, path_len), follow=False)
    if res.node is not None or res.name is None:
        raise WasiError(Errno.EXIST)
    assert res.parent is not None
    d.backend.mkdir(res.parent, res.name)
    return 0


@wasi("path_filestat_get", "i32 i32 i32 i32 i32")
def path_filestat_get(ctx: WasiContext, fd: int, flags: int, path: int, path_len: int, out: int) -> int:
    follow = _lookupflags(flags)
    d = ctx.fds.dir(fd, Rights.PATH_FILESTAT_GET)
    res = resolve(d.backend, d.node, _path(ctx, path, path_len), follow=follow)
    node, _ = res.existing()
    write_filestat(ctx, out, res.stat or d.backend.stat(node), d.backend.device)
    return 0


@wasi("path_filestat_set_times", "i32 i32 i32 i32 i64 i64 i32")
def path_filestat_set_times(
    ctx: WasiContext, fd: int, flags: int, path: int, path_len: int, atim: int, mtim: int, fst: int
) -> int:
    follow = _lookupflags(flags)
    atime, mtime = new_times(ctx, atim, mtim, fst)
    d = ctx.fds.dir(fd, Rights.PATH_FILESTAT_SET_TIMES)
    node, _ = resolve(d.backend, d.node, _path(ctx, path, path_len), follow=follow).existing()
    d.backend.set_times(node, atime, mtime)
    return 0


@wasi("path_link", "i32 i32 i32 i32 i32 i32 i32")
def path_link(
    ctx: WasiContext, old_fd: int, old_flags: int, old: int, old_len: int, new_fd: int, new: int, new_len: int
) -> int:
    follow = _lookupflags(old_flags)
    src = ctx.fds.dir(old_fd, Rights.PATH_LINK_SOURCE)
    dst = ctx.fds.dir(new_fd, Rights.PATH_LINK_TARGET)
    old_path, new_path = _path(ctx, old, old_len), _path(ctx, new, new_len)
    if follow:
        raise WasiError(Errno.INVAL)  # linkat(AT_SYMLINK_FOLLOW): not offered, as in wasmtime
    node, ftype = resolve(src.backend, src.node, old_path, follow=False).existing()
    parent, name, res = resolve_parent(dst.backend, dst.node, new_path)
    if src.backend is not dst.backend:
        raise WasiError(Errno.XDEV)
    if ftype == Filetype.DIRECTORY:
        raise WasiError(Errno.PERM)  # no hard links to directories (link(2))
    if res.node is not None:
        raise WasiError(Errno.EXIST)
    if res.trailing_slash:
        raise WasiError(Errno.NOENT)
    dst.backend.link(node, parent, name)
    return 0


def _check_open_values(oflags: int, base: int, inheriting: int, fdflags: int) -> None:
    if oflags & ~OFLAGS_ALL:
        raise bad_value("$oflags", oflags)
    if (base | inheriting) & ~RIGHTS_ALL:
        raise bad_value("$rights", base | inheriting)
    if fdflags & ~FDFLAGS_ALL:
        raise bad_value("$fdflags", fdflags)


def _check_open_rights(oflags: int, base: int, inheriting: int, fdflags: int, dir: DirDesc) -> None:
    needed = int(Rights.PATH_OPEN)
    if oflags & Oflags.CREAT:
        needed |= Rights.PATH_CREATE_FILE
    if oflags & Oflags.TRUNC:
        needed |= Rights.PATH_FILESTAT_SET_SIZE
    dir.require(needed)
    # A descriptor opened through a directory gets at most the directory's inheriting rights.
    if (base | inheriting) & ~dir.rights_inheriting:
        raise WasiError(Errno.NOTCAPABLE)
    if fdflags & Fdflags.DSYNC and not base & (Rights.FD_DATASYNC | Rights.FD_SYNC):
        raise WasiError(Errno.NOTCAPABLE)
    if fdflags & (Fdflags.SYNC | Fdflags.RSYNC) and not base & Rights.FD_SYNC:
        raise WasiError(Errno.NOTCAPABLE)


@wasi("path_open", "i32 i32 i32 i32 i32 i64 i64 i32 i32")
def path_open(
    ctx: WasiContext,
    fd: int,
    dirflags: int,
    path: int,
    path_len: int,
    oflags: int,
    base: int,
    inheriting: int,
    fdflags: int,
    out: int,
) -> int:
    follow = _lookupflags(dirflags)
    _check_open_values(oflags, base, inheriting, fdflags)
    raw = _path(ctx, path, path_len)
    d = ctx.fds.dir(fd, file_errno=Errno.NOTDIR)
    _check_open_rights(oflags, base, inheriting, fdflags, d)
    backend = d.backend
    creat = bool(oflags & Oflags.CREAT)
    excl = creat and bool(oflags & Oflags.EXCL)
    if creat and raw.endswith(b"/") and raw.strip(b"/"):
        # A file cannot be created as "name/" (open(2)): once the way to "name" is known to be a
        # valid one (an escape on the way is still EPERM), that is EISDIR, as wasmtime answers.
        resolve(backend, d.node, raw.rstrip(b"/"), follow=False)
        raise WasiError(Errno.ISDIR)
    # O_CREAT|O_EXCL never follows a link in the last component (open(2)): an existing link is EEXIST.
    res = resolve(backend, d.node, raw, follow=follow and not excl)
    read, write = bool(base & Rights.FD_READ), bool(base & Rights.FD_WRITE)
    node, ftype = res.node, res.filetype
    if node is None:
        if not creat:
            raise WasiError(Errno.NOENT)
        if oflags & Oflags.DIRECTORY:
            raise WasiError(Errno.INVAL)
        assert res.parent is not None and res.name is not None
        node, ftype = backend.create(res.parent, res.name, exclusive=True), Filetype.REGULAR_FILE
    elif excl:
        raise WasiError(Errno.EXIST)
    if ftype == Filetype.SYMBOLIC_LINK:
        raise WasiError(Errno.LOOP)  # a link reached without following it: O_NOFOLLOW's answer
    if ftype == Filetype.DIRECTORY:
        if write or creat or oflags & Oflags.TRUNC:
            raise WasiError(Errno.ISDIR)
        b, i = dir_rights(base, inheriting)
        new: DirDesc | FileDesc = DirDesc(Filetype.DIRECTORY, b, i, fdflags, backend=backend, node=node)
    else:
        if oflags & Oflags.DIRECTORY or res.trailing_slash:
            raise WasiError(Errno.NOTDIR)
        if ftype != Filetype.REGULAR_FILE:
            raise WasiError(Errno.NOTSUP)  # devices, sockets and fifos are not served from a mount
        if oflags & Oflags.TRUNC and not write:  # O_RDONLY|O_TRUNC still truncates (Linux, wasmtime)
            truncating = backend.open(node, read=False, write=True)
            try:
                truncating.truncate(0)
            finally:
                truncating.close()
        file = backend.open(node, read=read, write=write)
        try:
            if oflags & Oflags.TRUNC and write:
                file.truncate(0)
            b, i = file_rights(base, inheriting)
            new = FileDesc(
                ftype, b, i, fdflags, backend=backend, node=node, file=file, readable=read, writable=write
            )
            fd_new = ctx.fds.add(new)
        except BaseException:
            file.close()
            raise
        ctx.memory.put_u32(out, fd_new)
        return 0
    ctx.memory.put_u32(out, ctx.fds.add(new))
    return 0


@wasi("path_readlink", "i32 i32 i32 i32 i32 i32")
def path_readlink(
    ctx: WasiContext, fd: int, path: int, path_len: int, buf: int, buf_len: int, out: int
) -> int:
    d = ctx.fds.dir(fd, Rights.PATH_READLINK)
    node, ftype = resolve(d.backend, d.node, _path(ctx, path, path_len), follow=False).existing()
    if ftype != Filetype.SYMBOLIC_LINK:
        raise WasiError(Errno.INVAL)
    target = d.backend.readlink(node)
    if target.startswith(b"/"):
        raise WasiError(Errno.PERM)  # a host path the guest has no business learning (as wasmtime)
    target = target[:buf_len]
    ctx.memory.write(buf, target)
    ctx.memory.put_u32(out, len(target))
    return 0


@wasi("path_remove_directory", "i32 i32 i32")
def path_remove_directory(ctx: WasiContext, fd: int, path: int, path_len: int) -> int:
    d = ctx.fds.dir(fd, Rights.PATH_REMOVE_DIRECTORY)
    raw = _path(ctx, path, path_len)
    res = resolve(d.backend, d.node, raw, follow=False)
    if res.trailing_slash:
        raise WasiError(Errno.INVAL)  # as wasmtime (cap-std) answers "dir/"
    if res.name is None:
        raise WasiError(
            Errno.INVAL if raw.rstrip(b"/").endswith(b".") and not raw.endswith(b"..") else Errno.NOTEMPTY
        )
    if res.node is None:
        raise WasiError(Errno.NOENT)
    if res.filetype != Filetype.DIRECTORY:
        raise WasiError(Errno.NOTDIR)
    assert res.parent is not None
    d.backend.rmdir(res.parent, res.name)
    return 0


@wasi("path_rename", "i32 i32 i32 i32 i32 i32")
def path_rename(
    ctx: WasiContext, fd: int, old: int, old_len: int, new_fd: int, new: int, new_len: int
) -> int:
    src = ctx.fds.dir(fd, Rights.PATH_RENAME_SOURCE)
    dst = ctx.fds.dir(new_fd, Rights.PATH_RENAME_TARGET)
    old_path, new_path = _path(ctx, old, old_len), _path(ctx, new, new_len)
    sparent, sname, sres = resolve_parent(src.backend, src.node, old_path)
    dparent, dname, dres = resolve_parent(dst.backend, dst.node, new_path)
    if sres.node is None:
        raise WasiError(Errno.NOENT)
    if src.backend is not dst.backend:
        raise WasiError(Errno.XDEV)
    if sres.filetype != Filetype.DIRECTORY and (sres.trailing_slash or dres.trailing_slash):
        raise WasiError(Errno.NOTDIR)
    dst.backend.rename(sparent, sname, dparent, dname)
    return 0


@wasi("path_symlink", "i32 i32 i32 i32 i32")
def path_symlink(ctx: WasiContext, old: int, old_len: int, fd: int, new: int, new_len: int) -> int:
    target = _path(ctx, old, old_len)
    d = ctx.fds.dir(fd, Rights.PATH_SYMLINK)
    parent, name, res = resolve_parent(d.backend, d.node, _path(ctx, new, new_len))
    if b"\0" in target:
        raise WasiError(Errno.INVAL)
    if not target:
        raise WasiError(Errno.NOENT)
    if target.startswith(b"/"):
        raise WasiError(Errno.PERM)  # a link that could only ever lead out of the mount
    if res.node is not None:
        raise WasiError(Errno.EXIST)
    if res.trailing_slash:
        raise WasiError(Errno.NOENT)
    d.backend.symlink(parent, name, target)
    return 0


@wasi("path_unlink_file", "i32 i32 i32")
def path_unlink_file(ctx: WasiContext, fd: int, path: int, path_len: int) -> int:
    d = ctx.fds.dir(fd, Rights.PATH_UNLINK_FILE)
    res = resolve(d.backend, d.node, _path(ctx, path, path_len), follow=False)
    if res.name is None:
        raise WasiError(Errno.ISDIR)
    if res.node is None:
        raise WasiError(Errno.NOENT)
    if res.filetype == Filetype.DIRECTORY:
        raise WasiError(Errno.ISDIR)
    if res.trailing_slash:
        raise WasiError(Errno.NOTDIR)
    assert res.parent is not None
    d.backend.unlink(res.parent, res.name)
    return 0
