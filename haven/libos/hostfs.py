"""A plain host directory as a LibOS backend: only for mounts the manifest marks ``untrusted``.

Nothing read from here is confidential or integrity-protected: the host serves it. What the backend
does guarantee is confinement: every node is a path relative to the mount's directory descriptor,
built by the LibOS's resolver from components it has looked up itself (``lstat``), so no path handed
to the host's kernel contains ``..``, is absolute, or crosses a symbolic link the guest made; the last
component is opened with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import os
import stat as st
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from haven.libos.errno import Errno, Filetype, WasiError, from_os_errno
from haven.libos.errors import MountError
from haven.libos.vfs import Buffers, DirEntry, Stat

T = TypeVar("T")

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def _oserror(e: OSError) -> WasiError:
    return WasiError(from_os_errno(e.errno))


def _call(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except OSError as e:
        raise _oserror(e) from None


def filetype_of(mode: int) -> Filetype:
    if st.S_ISREG(mode):
        return Filetype.REGULAR_FILE
    if st.S_ISDIR(mode):
        return Filetype.DIRECTORY
    if st.S_ISLNK(mode):
        return Filetype.SYMBOLIC_LINK
    if st.S_ISCHR(mode):
        return Filetype.CHARACTER_DEVICE
    if st.S_ISBLK(mode):
        return Filetype.BLOCK_DEVICE
    if st.S_ISSOCK(mode):
        return Filetype.SOCKET_STREAM
    return Filetype.UNKNOWN


def _join(node: bytes, name: bytes) -> bytes:
    return node + b"/" + name if node else name


def _rel(node: bytes) -> bytes:
    return node or b"."


class HostFile:
    """An open host file: positional reads and writes straight between the host fd and guest memory."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
        try:
            if len(buffers) == 1:
                return os.preadv(self._fd, buffers, offset)
            return os.preadv(self._fd, list(buffers), offset)
        except OSError as e:
            raise _oserror(e) from None

    def write(self, offset: int, buffers: Buffers) -> int:
        try:
            return os.pwritev(self._fd, buffers, offset)
        except OSError as e:
            raise _oserror(e) from None

    def append(self, buffers: Buffers) -> tuple[int, int]:
        end = self.size()
        n = self.write(end, buffers)
        return n, end + n

    def size(self) -> int:
        return _call(lambda: os.fstat(self._fd).st_size)

    def stat(self) -> Stat:
        s = _call(lambda: os.fstat(self._fd))
        return _stat(s)

    def truncate(self, size: int) -> None:
        _call(lambda: os.ftruncate(self._fd, size))

    def allocate(self, offset: int, length: int) -> None:
        _call(lambda: os.posix_fallocate(self._fd, offset, length))

    def set_times(self, atime_ns: int | None, mtime_ns: int | None) -> None:
        s = _call(lambda: os.fstat(self._fd))
        ns = (
            s.st_atime_ns if atime_ns is None else atime_ns,
            s.st_mtime_ns if mtime_ns is None else mtime_ns,
        )
        _call(lambda: os.utime(self._fd, ns=ns))

    def sync(self, data_only: bool) -> None:
        _call(lambda: os.fdatasync(self._fd) if data_only else os.fsync(self._fd))

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def _stat(s: os.stat_result, dev: int | None = None) -> Stat:
    return Stat(
        filetype=filetype_of(s.st_mode),
        ino=s.st_ino,
        nlink=s.st_nlink,
        size=s.st_size,
        atime_ns=s.st_atime_ns,
        mtime_ns=s.st_mtime_ns,
        ctime_ns=s.st_ctime_ns,
        dev=s.st_dev if dev is None else dev,
    )


class HostDirBackend:
    """A host directory. Nodes are relative paths (bytes, ``b""`` for the root) under ``root_fd``."""

    untrusted = True

    def __init__(self, path: Path, *, read_only: bool = False, device: int = 0) -> None:
        try:
            self._root = os.open(path, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
        except OSError as e:
            raise MountError(f"cannot open host directory {path}: {e.strerror or type(e).__name__}") from None
        self.path = Path(path)
        self.read_only = read_only
        self.device = device

    def __repr__(self) -> str:
        return f"HostDirBackend({str(self.path)!r}, read_only={self.read_only})"

    def _writable(self) -> None:
        if self.read_only:
            raise WasiError(Errno.ROFS)

    def root(self) -> bytes:
        return b""

    def lookup(self, dir: bytes, name: bytes) -> tuple[bytes, Stat]:
        node = _join(dir, name)
        return node, _stat(_call(lambda: os.lstat(node, dir_fd=self._root)), self.device or None)

    def stat(self, node: bytes) -> Stat:
        return _stat(_call(lambda: os.lstat(_rel(node), dir_fd=self._root)), self.device or None)

    def readlink(self, node: bytes) -> bytes:
        return _call(lambda: os.readlink(node, dir_fd=self._root))

    def open(self, node: bytes, *, read: bool, write: bool) -> HostFile:
        if write:
            self._writable()
        mode = os.O_RDWR if read and write else os.O_WRONLY if write else os.O_RDONLY
        fd = _call(lambda: os.open(_rel(node), mode | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=self._root))
        return HostFile(fd)

    def create(self, dir: bytes, name: bytes, *, exclusive: bool) -> bytes:
        self._writable()
        node = _join(dir, name)
        flags = os.O_RDONLY | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC | (os.O_EXCL if exclusive else 0)
        os.close(_call(lambda: os.open(node, flags, 0o644, dir_fd=self._root)))
        return node

    def mkdir(self, dir: bytes, name: bytes) -> None:
        self._writable()
        _call(lambda: os.mkdir(_join(dir, name), 0o755, dir_fd=self._root))

    def symlink(self, dir: bytes, name: bytes, target: bytes) -> None:
        self._writable()
        _call(lambda: os.symlink(target, _join(dir, name), dir_fd=self._root))

    def link(self, node: bytes, dir: bytes, name: bytes) -> None:
        self._writable()
        _call(
            lambda: os.link(
                node, _join(dir, name), src_dir_fd=self._root, dst_dir_fd=self._root, follow_symlinks=False
            )
        )

    def unlink(self, dir: bytes, name: bytes) -> None:
        self._writable()
        _call(lambda: os.unlink(_join(dir, name), dir_fd=self._root))

    def rmdir(self, dir: bytes, name: bytes) -> None:
        self._writable()
        _call(lambda: os.rmdir(_join(dir, name), dir_fd=self._root))

    def rename(self, src_dir: bytes, src: bytes, dst_dir: bytes, dst: bytes) -> None:
        self._writable()
        _call(
            lambda: os.rename(
                _join(src_dir, src), _join(dst_dir, dst), src_dir_fd=self._root, dst_dir_fd=self._root
            )
        )

    def readdir(self, dir: bytes, cookie: int) -> Iterator[DirEntry]:
        """Entries in the host's order; the cookie after entry i is i + 1 (wasmtime's numbering)."""
        fd = _call(
            lambda: os.open(
                _rel(dir), os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=self._root
            )
        )
        try:
            with os.scandir(fd) as it:
                entries = list(it)
        except OSError as err:
            raise _oserror(err) from None
        finally:
            os.close(fd)
        for i in range(cookie, len(entries)):
            e = entries[i]
            try:
                ftype = (
                    Filetype.SYMBOLIC_LINK
                    if e.is_symlink()
                    else Filetype.DIRECTORY
                    if e.is_dir(follow_symlinks=False)
                    else Filetype.REGULAR_FILE
                    if e.is_file(follow_symlinks=False)
                    else filetype_of(e.stat(follow_symlinks=False).st_mode)
                )
            except OSError:
                ftype = Filetype.UNKNOWN  # gone since the listing: report it, as getdents did
            yield DirEntry(i + 1, os.fsencode(e.name), e.inode(), ftype)

    def set_times(self, node: bytes, atime_ns: int | None, mtime_ns: int | None) -> None:
        self._writable()
        s = _call(lambda: os.lstat(_rel(node), dir_fd=self._root))
        ns = (
            s.st_atime_ns if atime_ns is None else atime_ns,
            s.st_mtime_ns if mtime_ns is None else mtime_ns,
        )
        _call(lambda: os.utime(_rel(node), ns=ns, dir_fd=self._root, follow_symlinks=False))

    def sync(self) -> None:
        _call(lambda: os.fsync(self._root))

    def close(self) -> None:
        fd, self._root = self._root, -1
        if fd >= 0:
            os.close(fd)
