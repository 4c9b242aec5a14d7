"""The file system inside an image: POSIX files, directories and symlinks over one B+tree.

:class:`FileSystem` is what the LibOS's WASI calls and the owner's image tools use. It works on inode
numbers (path walking, ``.`` and ``..``, and confinement to preopened directories are the caller's);
every refusal is an :class:`FsError` with a POSIX errno. Changes stay in memory until :meth:`sync`,
which writes them to the store and commits it — fsync, fdatasync and sync all end there, and a crash
before it leaves the image as the previous sync made it. A file system mounted read-only (over a store
on a read-only device) changes nothing, not even in memory, and refuses every change with EROFS.
See ``docs/storage-filesystem.md``.
"""

from __future__ import annotations

import errno
import functools
import time
from collections.abc import Callable, Iterator
from typing import Concatenate, NoReturn, ParamSpec, TypeVar, cast

from haven.shield.storage.errors import IntegrityError, NoSpaceError, StorageError
from haven.shield.storage.fs import paths
from haven.shield.storage.fs.data import FileData
from haven.shield.storage.fs.dirs import Directories, DirEntry, check_name
from haven.shield.storage.fs.errors import FsCorruptError, FsError
from haven.shield.storage.fs.records import (
    LINK_MAX,
    NAME_MAX,
    ROOT_INO,
    SYMLINK_CHUNK,
    SYMLINK_MAX,
    FileKind,
    InodeRecord,
    ItemKind,
    make_key,
)
from haven.shield.storage.fs.results import FsUsage, Stat
from haven.shield.storage.fs.volume import LogicalStore, Volume

_P = ParamSpec("_P")
_R = TypeVar("_R")
_FILE, _DIR, _SYMLINK = FileKind.FILE, FileKind.DIR, FileKind.SYMLINK


def _op(method: Callable[Concatenate[FileSystem, _P], _R]) -> Callable[Concatenate[FileSystem, _P], _R]:
    """A public operation: refused once the file system has stopped; a failure of the store stops it.

    A fault in the middle of an update leaves the in-memory tree half changed, so from then on every
    operation is refused, never answered from caches (fail stop, as the store below does). That holds
    for an integrity failure and for any other refusal of the store (a failed device write, a call it
    rejects): only the file system's own refusals (:class:`FsError`, raised before anything changes)
    leave it running. A store out of physical room is ENOSPC. Between operations the node cache is
    trimmed.
    """

    def run(self: FileSystem, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        if self._broken is not None:
            self._refuse()
        try:
            return method(self, *args, **kwargs)
        except (FsError, NoSpaceError) as e:
            if isinstance(e, FsError):
                raise
            raise FsError(errno.ENOSPC, f"{method.__name__}: {e}") from None
        except StorageError as e:
            self._stop(e)
            raise
        finally:
            if self._broken is None:
                self._vol.trim()

    functools.update_wrapper(run, method)
    return run


class FileSystem:
    """A mounted file system; see the module docstring."""

    def __init__(self, vol: Volume, *, writable: bool = True) -> None:
        self._vol = vol
        self._dirs = Directories(vol)
        self._data = FileData(vol)
        self._open: dict[int, int] = {}
        self._broken: tuple[type[StorageError], str] | None = None  # see _stop
        self.root = ROOT_INO
        self.writable = writable

    @classmethod
    def format(
        cls, store: LogicalStore, *, clock: Callable[[], int] = time.time_ns, cache_nodes: int = 8192
    ) -> FileSystem:
        """Write an empty file system (a root directory) into a freshly formatted store, and commit it."""
        vol = Volume.format(store, clock, cache_nodes)
        ino, _ = vol.new_inode(_DIR, 0o755, ROOT_INO)
        if ino != ROOT_INO:
            raise AssertionError("the root directory must be the first inode")
        fs = cls(vol)
        fs.sync()
        return fs

    @classmethod
    def mount(
        cls,
        store: LogicalStore,
        *,
        clock: Callable[[], int] = time.time_ns,
        cache_nodes: int = 8192,
        writable: bool = True,
    ) -> FileSystem:
        """Open the file system of a mounted store and reclaim inodes unlinked while they were open.

        The reclaim is not committed here: the next :meth:`sync` makes it durable. With ``writable``
        false (a store over a read-only device), the orphans are checked but left in place for the
        next writable mount, and every call that would change the file system raises EROFS.
        """
        fs = cls(Volume.mount(store, clock, cache_nodes), writable=writable)
        root = fs._vol.inode(ROOT_INO)
        if root.kind != _DIR:
            raise IntegrityError("file system: the root inode is not a directory")
        for ino in fs._orphans():
            try:
                orphan = fs._vol.inode(ino)
            except FsError:
                raise FsCorruptError(f"file system: orphan {ino} has no inode") from None
            if orphan.nlink:
                raise FsCorruptError(f"file system: orphan {ino} still has {orphan.nlink} links")
            if writable:
                fs._reclaim(ino)
        return fs

    # -- guards ---------------------------------------------------------------------------------

    def _stop(self, e: StorageError) -> None:
        """Refuse every operation from now on: ``e`` came from the middle of one (see ``_op``)."""
        if self._broken is None:
            if isinstance(e, IntegrityError):
                self._broken = (IntegrityError, f"file system stopped after an integrity failure: {e}")
            else:
                self._broken = (StorageError, f"file system stopped after the store failed: {e}")

    def _refuse(self) -> NoReturn:
        assert self._broken is not None
        cls, message = self._broken
        raise cls(message)

    def _changes(self, what: str) -> None:
        """EROFS on a read-only mount: called first by every operation that changes anything."""
        if not self.writable:
            raise FsError(errno.EROFS, f"{what}: the file system is mounted read-only")

    def _node(self, ino: int) -> InodeRecord:
        return self._vol.inode(ino)

    def _dir(self, ino: int, what: str) -> InodeRecord:
        rec = self._vol.inode(ino)
        if rec.kind != _DIR:
            raise FsError(errno.ENOTDIR, f"{what}: inode {ino} is not a directory")
        return rec

    def _orphans(self) -> list[int]:
        lo, hi = make_key(0, ItemKind.ORPHAN, 0), make_key(0, ItemKind.ORPHAN + 1, 0)
        return [key & ((1 << 64) - 1) for key, _ in self._vol.tree.scan(lo, hi)]

    # -- lookups --------------------------------------------------------------------------------

    @_op
    def lookup(self, dir_ino: int, name: bytes) -> int:
        """The inode ``name`` names in directory ``dir_ino`` (ENOENT, ENOTDIR)."""
        check_name(name, "lookup")
        found = self._dirs.find(dir_ino, self._dir(dir_ino, "lookup"), name)
        if found is None:
            raise FsError.of(errno.ENOENT, "lookup", name)
        return found[1]

    @_op
    def stat(self, ino: int) -> Stat:
        r = self._vol.inode(ino)
        return Stat(ino, FileKind(r.kind).label, r.mode, r.nlink, r.size, r.atime_ns, r.mtime_ns, r.ctime_ns)

    @_op
    def parent(self, dir_ino: int) -> int:
        """The directory holding directory ``dir_ino`` (the root is its own parent), for ``..``."""
        return self._dir(dir_ino, "parent").parent

    @_op
    def readdir(self, dir_ino: int, cookie: int = 0) -> Iterator[DirEntry]:
        """Entries after ``cookie`` (0: from the start); each entry's ``next_cookie`` resumes after it.

        Cookies are the entries' slots (u64, all >= 2**16): an entry keeps its cookie while it exists,
        so resuming returns every entry present throughout exactly once. "." and ".." are not stored.
        """
        self._dir(dir_ino, "readdir")
        if not 0 <= cookie < (1 << 64):
            raise FsError(errno.EINVAL, f"readdir: cookie {cookie} is not a u64")
        return self._guarded(self._dirs.entries(dir_ino, cookie))

    def _guarded(self, entries: Iterator[DirEntry]) -> Iterator[DirEntry]:
        """What ``_op`` does, for each step of a lazy listing."""
        while True:
            if self._broken is not None:
                self._refuse()
            try:
                entry = next(entries)
            except StopIteration:
                return
            except FsError:
                raise
            except StorageError as e:
                self._stop(e)
                raise
            yield entry

    @_op
    def readlink(self, ino: int) -> bytes:
        rec = self._node(ino)
        if rec.kind != _SYMLINK:
            raise FsError(errno.EINVAL, f"readlink: inode {ino} is not a symlink")
        lo = make_key(ino, ItemKind.SYMLINK, 0)
        target = b"".join(v for _, v in self._vol.tree.scan(lo, make_key(ino, ItemKind.SYMLINK + 1, 0)))
        if len(target) != rec.size:
            raise FsCorruptError(f"symlink {ino}: holds {len(target)} bytes, its inode says {rec.size}")
        return target

    @_op
    def statfs(self) -> FsUsage:
        bm = self._vol.bitmap
        return FsUsage(self._vol.block_size, bm.capacity, bm.free, self._vol.header.inode_count, NAME_MAX)

    # -- creating -------------------------------------------------------------------------------

    def _new_entry(
        self, dir_ino: int, name: bytes, kind: FileKind, mode: int, what: str
    ) -> tuple[int, InodeRecord]:
        check_name(name, what)
        parent = self._dir(dir_ino, what)
        if parent.nlink == 0:
            raise FsError.of(errno.ENOENT, f"{what} in a removed directory:", name)
        home = self._dirs.home(name)
        if self._dirs.find(dir_ino, parent, name, home) is not None:
            raise FsError.of(errno.EEXIST, what, name)
        if kind == _DIR and parent.nlink >= LINK_MAX:
            raise FsError.of(errno.EMLINK, what, name)
        self._vol.reserve(1 if kind == _SYMLINK else 0)
        ino, rec = self._vol.new_inode(kind, mode, dir_ino)
        self._dirs.add(dir_ino, parent, name, ino, kind, home)
        now = rec.ctime_ns
        parent.mtime_ns = parent.ctime_ns = now
        if kind == _DIR:
            parent.nlink += 1
        self._vol.put_inode(dir_ino, parent)
        return ino, rec

    @_op
    def create(self, dir_ino: int, name: bytes, mode: int = 0o644, *, exclusive: bool = True) -> int:
        """A new regular file; if ``name`` exists and not ``exclusive`` (O_CREAT without O_EXCL): it.

        On a read-only mount an existing file is still found that way (nothing changes); a new one
        is refused with EROFS.
        """
        if not exclusive:
            check_name(name, "create")
            found = self._dirs.find(dir_ino, self._dir(dir_ino, "create"), name)
            if found is not None:
                if found[2] == _DIR:
                    raise FsError.of(errno.EISDIR, "create", name)
                return found[1]
        self._changes("create")
        return self._new_entry(dir_ino, name, _FILE, mode, "create")[0]

    @_op
    def mkdir(self, dir_ino: int, name: bytes, mode: int = 0o755) -> int:
        self._changes("mkdir")
        return self._new_entry(dir_ino, name, _DIR, mode, "mkdir")[0]

    @_op
    def symlink(self, dir_ino: int, name: bytes, target: bytes) -> int:
        self._changes("symlink")
        if not target or b"\0" in target:
            raise FsError(errno.ENOENT if not target else errno.EINVAL, "symlink: empty or NUL in the target")
        if len(target) > SYMLINK_MAX:
            raise FsError(errno.ENAMETOOLONG, f"symlink: target longer than {SYMLINK_MAX} bytes")
        ino, rec = self._new_entry(dir_ino, name, _SYMLINK, 0o777, "symlink")
        for at in range(0, len(target), SYMLINK_CHUNK):
            self._vol.tree.insert(make_key(ino, ItemKind.SYMLINK, at), target[at : at + SYMLINK_CHUNK])
        rec.size = len(target)
        self._vol.put_inode(ino, rec)
        return ino

    @_op
    def link(self, ino: int, dir_ino: int, name: bytes) -> None:
        """A new name for an existing file or symlink (EPERM for a directory, EMLINK past LINK_MAX)."""
        self._changes("link")
        check_name(name, "link")
        rec = self._node(ino)
        if rec.kind == _DIR:
            raise FsError.of(errno.EPERM, "link: a directory cannot be hard-linked:", name)
        if rec.nlink == 0:
            raise FsError.of(errno.ENOENT, "link: the file was removed:", name)
        if rec.nlink >= LINK_MAX:
            raise FsError.of(errno.EMLINK, "link", name)
        parent = self._dir(dir_ino, "link")
        if parent.nlink == 0:
            raise FsError.of(errno.ENOENT, "link in a removed directory:", name)
        if self._dirs.find(dir_ino, parent, name) is not None:
            raise FsError.of(errno.EEXIST, "link", name)
        self._vol.reserve()
        self._dirs.add(dir_ino, parent, name, ino, rec.kind)
        now = self._vol.clock()
        parent.mtime_ns = parent.ctime_ns = now
        self._vol.put_inode(dir_ino, parent)
        rec.nlink += 1
        rec.ctime_ns = now
        self._vol.put_inode(ino, rec)

    # -- removing -------------------------------------------------------------------------------

    @_op
    def unlink(self, dir_ino: int, name: bytes) -> None:
        """Remove a name of a file or symlink (EISDIR for a directory); open files live on until release."""
        self._remove(dir_ino, name, want_dir=False)

    @_op
    def rmdir(self, dir_ino: int, name: bytes) -> None:
        """Remove an empty directory (ENOTEMPTY otherwise, ENOTDIR for a non-directory)."""
        self._remove(dir_ino, name, want_dir=True)

    def _remove(self, dir_ino: int, name: bytes, *, want_dir: bool) -> None:
        what = "rmdir" if want_dir else "unlink"
        self._changes(what)
        check_name(name, what)
        parent = self._dir(dir_ino, what)
        found = self._dirs.find(dir_ino, parent, name)
        if found is None:
            raise FsError.of(errno.ENOENT, what, name)
        slot, ino, kind = found
        if want_dir and kind != _DIR:
            raise FsError.of(errno.ENOTDIR, what, name)
        if not want_dir and kind == _DIR:
            raise FsError.of(errno.EISDIR, what, name)
        if want_dir and self._node(ino).size:
            raise FsError.of(errno.ENOTEMPTY, what, name)
        self._vol.reserve()
        self._dirs.remove(dir_ino, parent, slot)
        now = self._vol.clock()
        parent.mtime_ns = parent.ctime_ns = now
        if kind == _DIR:
            parent.nlink -= 1
        self._vol.put_inode(dir_ino, parent)
        self._drop_link(ino, now)

    def _drop_link(self, ino: int, now: int) -> None:
        """One name of ``ino`` is gone: count it down, and free the inode or make it an orphan at zero."""
        rec = self._node(ino)
        rec.nlink = 0 if rec.kind == _DIR else rec.nlink - 1
        rec.ctime_ns = now
        self._vol.put_inode(ino, rec)
        if rec.nlink:
            return
        if self._open.get(ino):
            self._vol.tree.insert(make_key(0, ItemKind.ORPHAN, ino), b"")
            self._vol.header.orphan_count += 1
        else:
            self._vol.drop_inode(ino)

    def _reclaim(self, ino: int) -> None:
        self._vol.tree.delete(make_key(0, ItemKind.ORPHAN, ino))
        self._vol.header.orphan_count -= 1
        self._vol.drop_inode(ino)

    # -- rename ---------------------------------------------------------------------------------

    @_op
    def rename(self, src_dir: int, src: bytes, dst_dir: int, dst: bytes) -> None:
        """Move ``src`` to ``dst`` atomically, replacing ``dst`` as POSIX rename(2) does.

        Every check comes before the first change, and the changes are one transaction of the store:
        after a crash either the old names or the new ones are there, never both or neither.
        """
        self._changes("rename")
        check_name(src, "rename")
        check_name(dst, "rename")
        sparent = self._dir(src_dir, "rename")
        dparent = self._dir(dst_dir, "rename")
        found = self._dirs.find(src_dir, sparent, src)
        if found is None:
            raise FsError.of(errno.ENOENT, "rename", src)
        sslot, ino, kind = found
        if dparent.nlink == 0:
            raise FsError.of(errno.ENOENT, "rename into a removed directory:", dst)
        target = self._dirs.find(dst_dir, dparent, dst)
        if target is not None and target[1] == ino:
            return  # two names of one inode: POSIX says do nothing
        if kind == _DIR:
            self._check_not_inside(ino, dst_dir)
            if dst_dir != src_dir and target is None and dparent.nlink >= LINK_MAX:
                raise FsError.of(errno.EMLINK, "rename", dst)
        if target is not None:
            if kind == _DIR and target[2] != _DIR:
                raise FsError.of(errno.ENOTDIR, "rename: a directory over a non-directory:", dst)
            if kind != _DIR and target[2] == _DIR:
                raise FsError.of(errno.EISDIR, "rename: over a directory:", dst)
            if target[2] == _DIR and self._node(target[1]).size:
                raise FsError.of(errno.ENOTEMPTY, "rename", dst)
        self._vol.reserve()
        now = self._vol.clock()
        self._dirs.remove(src_dir, sparent, sslot)
        if target is None:
            self._dirs.add(dst_dir, dparent, dst, ino, kind)
        else:
            self._dirs.repoint(dst_dir, target[0], dst, ino, kind)  # dst keeps its slot (its cookie)
        sparent.mtime_ns = sparent.ctime_ns = dparent.mtime_ns = dparent.ctime_ns = now
        if kind == _DIR and src_dir != dst_dir:
            sparent.nlink -= 1
            dparent.nlink += 1
        if target is not None and target[2] == _DIR:
            dparent.nlink -= 1  # the replaced directory's ".." no longer links to dparent
        self._vol.put_inode(src_dir, sparent)
        if dst_dir != src_dir:
            self._vol.put_inode(dst_dir, dparent)
        moved = self._node(ino)
        moved.ctime_ns = now
        if kind == _DIR:
            moved.parent = dst_dir
        self._vol.put_inode(ino, moved)
        if target is not None:
            self._drop_link(target[1], now)

    def _check_not_inside(self, ino: int, dst_dir: int) -> None:
        """EINVAL if ``dst_dir`` is directory ``ino`` or below it (a directory into its own subtree)."""
        at = dst_dir
        for _ in range(self._vol.header.inode_count + 1):
            if at == ino:
                raise FsError(errno.EINVAL, "rename: a directory into its own subtree")
            if at == ROOT_INO:
                return
            at = self._dir(at, "rename").parent
        raise FsCorruptError(f"directory {dst_dir}: its parents form a loop")

    # -- file contents --------------------------------------------------------------------------

    def _file(self, ino: int, what: str) -> InodeRecord:
        rec = self._vol.inode(ino)
        if rec.kind != _FILE:
            code = errno.EISDIR if rec.kind == _DIR else errno.EINVAL
            raise FsError(code, f"{what}: inode {ino} is not a regular file")
        return rec

    @_op
    def read(self, ino: int, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer at the end of file); holes read as zeros.

        Reading does not change atime (the file system behaves as if mounted ``noatime``).
        """
        if offset < 0 or length < 0:
            raise FsError(errno.EINVAL, "read: negative offset or length")
        return self._data.read(ino, self._file(ino, "read"), offset, length)

    @_op
    def read_into(self, ino: int, offset: int, buf: memoryview) -> int:
        """``read`` into ``buf`` (as ``read(2)`` into the caller's memory); returns the bytes read.
        Whole blocks are decrypted straight into ``buf``. If the read fails, what ``buf`` holds is
        undefined (never unverified plaintext)."""
        if offset < 0:
            raise FsError(errno.EINVAL, "read: negative offset")
        view = memoryview(buf).cast("B")
        if view.readonly:
            raise FsError(errno.EINVAL, "read: the buffer is read-only")
        return self._data.read_into(ino, self._file(ino, "read"), offset, view)

    @_op
    def write(self, ino: int, offset: int, data: bytes | bytearray | memoryview) -> int:
        """Write at ``offset`` (append: the caller passes ``stat().size``); returns bytes written.

        ``data`` is any buffer; its bytes are written, whatever its item format (``len`` of a
        memoryview of 4-byte items counts items, not bytes).
        """
        self._changes("write")
        if offset < 0:
            raise FsError(errno.EINVAL, "write: negative offset")
        if type(data) is not bytes:
            view = memoryview(data)
            if view.itemsize != 1 or view.ndim != 1 or not view.c_contiguous:
                data = view.tobytes()
        rec = self._file(ino, "write")
        n = self._data.write(ino, rec, offset, cast(bytes, data))  # it slices any buffer of bytes
        if n:
            rec.mtime_ns = rec.ctime_ns = self._vol.clock()
            self._vol.put_inode(ino, rec)
        return n

    @_op
    def truncate(self, ino: int, size: int) -> None:
        """Set the file's size: shrinking frees blocks, growing reads back zeros."""
        self._changes("truncate")
        if size < 0:
            raise FsError(errno.EINVAL, "truncate: negative size")
        rec = self._file(ino, "truncate")
        self._vol.reserve()
        self._data.truncate(ino, rec, size)
        rec.mtime_ns = rec.ctime_ns = self._vol.clock()
        self._vol.put_inode(ino, rec)

    @_op
    def allocate(self, ino: int, offset: int, length: int) -> None:
        """posix_fallocate: give ``[offset, offset+length)`` storage (ENOSPC if it cannot all be had)."""
        self._changes("allocate")
        if offset < 0 or length <= 0:
            raise FsError(errno.EINVAL, "allocate: negative offset or non-positive length")
        rec = self._file(ino, "allocate")
        old = rec.size
        self._data.allocate(ino, rec, offset, length)
        now = self._vol.clock()
        rec.ctime_ns = now
        if rec.size != old:
            rec.mtime_ns = now
        self._vol.put_inode(ino, rec)

    @_op
    def set_times(self, ino: int, atime_ns: int | None, mtime_ns: int | None) -> None:
        """Set atime and/or mtime (None leaves one as it is); ctime becomes now."""
        self._changes("set_times")
        for t in (atime_ns, mtime_ns):
            if t is not None and not 0 <= t < (1 << 64):
                raise FsError(errno.EINVAL, "set_times: a time outside u64 nanoseconds")
        rec = self._node(ino)
        if atime_ns is not None:
            rec.atime_ns = atime_ns
        if mtime_ns is not None:
            rec.mtime_ns = mtime_ns
        rec.ctime_ns = self._vol.clock()
        self._vol.put_inode(ino, rec)

    # -- open files and sync --------------------------------------------------------------------

    @_op
    def open(self, ino: int) -> None:
        """Count an open reference: an unlinked inode lives on until its last :meth:`release`."""
        self._node(ino)
        self._open[ino] = self._open.get(ino, 0) + 1

    @_op
    def release(self, ino: int) -> None:
        count = self._open.get(ino, 0)
        if not count:
            raise FsError(errno.EBADF, f"release: inode {ino} is not open")
        if count > 1:
            self._open[ino] = count - 1
            return
        del self._open[ino]
        if self.writable and self._node(ino).nlink == 0:
            self._reclaim(ino)  # read-only: an orphan stays one, for the next writable mount

    @_op
    def sync(self) -> int:
        """Write every change to the store and commit it: returns the new store version.

        fsync, fdatasync and sync all come here: the store commits everything at once, and the
        freshness counter has reached the new version when this returns. A read-only mount has
        nothing to write: it returns the version it mounted (as fsync succeeds on a read-only mount).
        """
        if not self.writable:
            return self._vol.store.version
        store = self._vol.store
        with store.committing():  # the metadata may take the part of the reserve rewrites may not
            self._vol.flush()
            return store.commit()

    # -- paths, for the owner's tools ------------------------------------------------------------

    def resolve(self, path: str, *, follow: bool = True) -> int:
        """The inode of ``path`` from the root (symlinks followed; the last one only with ``follow``)."""
        return paths.resolve(self, path, follow=follow)

    def makedirs(self, path: str, mode: int = 0o755) -> int:
        """``mkdir -p``; returns the inode of the last directory."""
        return paths.makedirs(self, path, mode)

    def split_parent(self, path: str) -> tuple[int, bytes]:
        """``(directory inode, last name)`` of ``path``."""
        return paths.split_parent(self, path)

    # -- whole-image views (used by checks and tools) -------------------------------------------

    @property
    def volume(self) -> Volume:
        return self._vol
