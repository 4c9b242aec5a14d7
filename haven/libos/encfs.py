"""An encrypted image as a LibOS backend: the private file system of ``haven.shield.storage``.

Nodes are inode numbers. Names, sizes, contents and the tree never leave the enclave in the clear:
the host serves only ciphertext blocks, and every block is verified before its plaintext is used.
A refusal of the file system (``FsError``) becomes the errno the application sees; an integrity
failure is an attack, and is not turned into an errno: it stops the run (fail-stop, DESIGN.md).

``fd_sync``, ``fd_datasync`` and closing the mount commit the image (and advance its freshness
counter) before they return.

Two caches sit in front of the file system, both exact because the mounted file system changes only
through this backend (the host cannot change it without failing its integrity checks):

- directory entries, positive and negative (SQLite asks whether its journal exists before every
  transaction): any change to a name clears them;
- file pages (:class:`PageCache`): a read within one 4 KiB page is served from, or loads, that page;
  a write, truncate or allocate drops the file's pages, and any change to a name drops all pages
  (an inode number freed by an unlink can be reused by the next create).

Attributes are never cached.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from haven.libos.errno import Errno, Filetype, WasiError, from_os_errno
from haven.libos.vfs import Buffers, DirEntry, Stat
from haven.shield.storage.fs import FileSystem, FsError
from haven.shield.storage.store import SecureStore

T = TypeVar("T")
_KINDS = {"file": Filetype.REGULAR_FILE, "dir": Filetype.DIRECTORY, "symlink": Filetype.SYMBOLIC_LINK}


def _call(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except FsError as e:
        raise WasiError(from_os_errno(e.errno)) from None


def _stat(s: Any, dev: int) -> Stat:
    return Stat(
        filetype=_KINDS.get(s.kind, Filetype.UNKNOWN),
        ino=s.ino,
        nlink=s.nlink,
        size=s.size,
        atime_ns=s.atime_ns,
        mtime_ns=s.mtime_ns,
        ctime_ns=s.ctime_ns,
        dev=dev,
    )


class PageCache:
    """Verified plaintext pages of open files, by (inode, page index); bounded, cleared when full."""

    PAGE = 4096
    MAX_PAGES = 4096  # 16 MiB

    def __init__(self) -> None:
        self._files: dict[int, dict[int, bytes]] = {}
        self._count = 0

    def get(self, ino: int, index: int) -> bytes | None:
        pages = self._files.get(ino)
        return pages.get(index) if pages is not None else None

    def put(self, ino: int, index: int, page: bytes) -> None:
        if self._count >= self.MAX_PAGES:
            self.clear()
        self._files.setdefault(ino, {})[index] = page
        self._count += 1

    def drop(self, ino: int) -> None:
        pages = self._files.pop(ino, None)
        if pages is not None:
            self._count -= len(pages)

    def clear(self) -> None:
        self._files.clear()
        self._count = 0


class EncryptedFile:
    """An open file of the image; holds a reference so an unlinked file stays readable until closed."""

    __slots__ = ("_backend", "_fs", "_ino", "_pages")

    def __init__(self, backend: EncryptedFsBackend, ino: int) -> None:
        self._backend = backend
        self._fs = backend.fs
        self._ino = ino
        self._pages = backend.pages
        _call(lambda: self._fs.open(ino))

    def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
        if len(buffers) == 1:
            buf = buffers[0]
            n = len(buf)
            index, at = divmod(offset, PageCache.PAGE)
            if at + n <= PageCache.PAGE:  # within one page: from the page cache
                page = self._pages.get(self._ino, index)
                if page is None:
                    page = _call(lambda: self._fs.read(self._ino, offset - at, PageCache.PAGE))
                    self._pages.put(self._ino, index, page)
                data = page[at : at + n]
            else:  # decrypted straight into the application's memory
                return _call(lambda: self._fs.read_into(self._ino, offset, buf))
            buf[: len(data)] = data
            return len(data)
        total = sum(len(b) for b in buffers)
        data = _call(lambda: self._fs.read(self._ino, offset, total))
        at = 0
        for b in buffers:
            chunk = data[at : at + len(b)]
            b[: len(chunk)] = chunk
            at += len(chunk)
            if at >= len(data):
                break
        return len(data)

    def write(self, offset: int, buffers: Buffers) -> int:
        self._backend.writable()
        data = bytes(buffers[0]) if len(buffers) == 1 else b"".join(bytes(b) for b in buffers)
        self._pages.drop(self._ino)
        return _call(lambda: self._fs.write(self._ino, offset, data))

    def append(self, buffers: Buffers) -> tuple[int, int]:
        end = self.size()
        n = self.write(end, buffers)
        return n, end + n

    def size(self) -> int:
        return _call(lambda: self._fs.stat(self._ino)).size

    def stat(self) -> Stat:
        return _stat(_call(lambda: self._fs.stat(self._ino)), self._backend.device)

    def truncate(self, size: int) -> None:
        self._backend.writable()
        self._pages.drop(self._ino)
        _call(lambda: self._fs.truncate(self._ino, size))

    def allocate(self, offset: int, length: int) -> None:
        self._backend.writable()
        self._pages.drop(self._ino)
        _call(lambda: self._fs.allocate(self._ino, offset, length))

    def set_times(self, atime_ns: int | None, mtime_ns: int | None) -> None:
        self._backend.set_times(self._ino, atime_ns, mtime_ns)

    def sync(self, data_only: bool) -> None:
        self._backend.sync()

    def close(self) -> None:
        ino, self._ino = self._ino, -1
        if ino >= 0:
            _call(lambda: self._fs.release(ino))


class EncryptedFsBackend:
    """A mounted image: its :class:`SecureStore` and the :class:`FileSystem` inside."""

    untrusted = False

    DENTRY_CACHE = 4096

    def __init__(self, store: SecureStore, fs: FileSystem, *, read_only: bool, device: int) -> None:
        self.store = store
        self.fs = fs
        self.read_only = read_only
        self.device = device
        self._dentries: dict[tuple[int, bytes], int | None] = {}
        self.pages = PageCache()

    @classmethod
    def mount(
        cls, source: Any, *, read_only: bool, device: int, clock: Callable[[], int]
    ) -> EncryptedFsBackend:
        """Mount ``source`` (an ImageSource: block device, freshness counter, key): verifies the
        superblock, the tree root and the counter (a rolled-back image is refused)."""
        store = SecureStore.mount(source.device, source.key, source.counter)
        try:
            fs = FileSystem.mount(store, clock=clock)
        except BaseException:
            store.close()
            raise
        return cls(store, fs, read_only=read_only, device=device)

    def __repr__(self) -> str:
        return f"EncryptedFsBackend(image {self.store.image_id.hex()}, read_only={self.read_only})"

    def writable(self) -> None:
        if self.read_only:
            raise WasiError(Errno.ROFS)

    def _renamed(self) -> None:
        """A name was added, removed or moved: forget every cached lookup and page (inode numbers of
        removed files and directories can be reused, so nothing narrower is safe)."""
        self._dentries.clear()
        self.pages.clear()

    def root(self) -> int:
        return self.fs.root

    def lookup(self, dir: int, name: bytes) -> tuple[int, Stat]:
        key = (dir, name)
        try:
            ino = self._dentries[key]
        except KeyError:
            try:
                ino = self.fs.lookup(dir, name)
            except FsError as e:
                if e.errno != errno.ENOENT:
                    raise WasiError(from_os_errno(e.errno)) from None
                ino = None
            if len(self._dentries) >= self.DENTRY_CACHE:
                self._dentries.clear()
            self._dentries[key] = ino
        if ino is None:
            raise WasiError(Errno.NOENT)
        return ino, self.stat(ino)

    def stat(self, node: int) -> Stat:
        return _stat(_call(lambda: self.fs.stat(node)), self.device)

    def readlink(self, node: int) -> bytes:
        return _call(lambda: self.fs.readlink(node))

    def open(self, node: int, *, read: bool, write: bool) -> EncryptedFile:
        if write:
            self.writable()
        return EncryptedFile(self, node)

    def create(self, dir: int, name: bytes, *, exclusive: bool) -> int:
        self.writable()
        self._renamed()
        return _call(lambda: self.fs.create(dir, name, 0o644, exclusive=exclusive))

    def mkdir(self, dir: int, name: bytes) -> None:
        self.writable()
        self._renamed()
        _call(lambda: self.fs.mkdir(dir, name))

    def symlink(self, dir: int, name: bytes, target: bytes) -> None:
        self.writable()
        self._renamed()
        _call(lambda: self.fs.symlink(dir, name, target))

    def link(self, node: int, dir: int, name: bytes) -> None:
        self.writable()
        self._renamed()
        _call(lambda: self.fs.link(node, dir, name))

    def unlink(self, dir: int, name: bytes) -> None:
        self.writable()
        self._renamed()
        _call(lambda: self.fs.unlink(dir, name))

    def rmdir(self, dir: int, name: bytes) -> None:
        self.writable()
        self._renamed()
        _call(lambda: self.fs.rmdir(dir, name))

    def rename(self, src_dir: int, src: bytes, dst_dir: int, dst: bytes) -> None:
        self.writable()
        self._renamed()
        _call(lambda: self.fs.rename(src_dir, src, dst_dir, dst))

    def readdir(self, dir: int, cookie: int) -> Iterator[DirEntry]:
        """The file system's own stable cookies (0 is the start)."""
        entries = _call(lambda: self.fs.readdir(dir, cookie))
        while True:
            entry = _call(lambda: next(entries, None))
            if entry is None:
                return
            yield DirEntry(entry.next_cookie, entry.name, entry.ino, _KINDS.get(entry.kind, Filetype.UNKNOWN))

    def set_times(self, node: int, atime_ns: int | None, mtime_ns: int | None) -> None:
        self.writable()
        _call(lambda: self.fs.set_times(node, atime_ns, mtime_ns))

    def sync(self) -> None:
        """Commit: durable, and the freshness counter advanced, when this returns."""
        if not self.read_only:
            self.fs.sync()

    def close(self) -> None:
        try:
            self.sync()
        finally:
            self.store.close()
