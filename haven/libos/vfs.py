"""The virtual file system under the WASI calls: the backend interface and confined path resolution.

A *backend* is one mounted file system (an encrypted image, or an untrusted host directory). It knows
nodes, not paths: the LibOS resolves every path itself, one component at a time, starting from the
directory descriptor the guest named, so confinement does not depend on any backend:

- an absolute path, a ``..`` that would leave the starting directory, and a symbolic link whose target
  is absolute or climbs out are refused with ``EPERM`` — what wasmtime 50's WASI (cap-std) returns for
  an escape; wasi-libc itself answers ``ENOTCAPABLE`` for absolute paths outside every preopen;
- a path through a file is ``ENOTDIR``, through a missing directory ``ENOENT``;
- symbolic links are expanded by the LibOS (at most :data:`MAX_SYMLINKS`, then ``ELOOP``), never by
  the host.

Backends raise :class:`~haven.libos.errno.WasiError` for every failure the application may see.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from haven.libos.errno import Errno, Filetype, WasiError

MAX_SYMLINKS = 40  # Linux's MAXSYMLINKS: the bound on expansions in one resolution
MAX_NAME = 255  # NAME_MAX
MAX_PATH = 4096  # PATH_MAX

Node = Any  # a backend's handle for a file, directory or link (an inode number, a relative path ...)
Buffers = Sequence[memoryview | bytes]


@dataclass(frozen=True, slots=True)
class Stat:
    """What ``$filestat`` reports, in the backend's terms."""

    filetype: Filetype
    ino: int
    nlink: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    dev: int = 0


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One directory entry; ``next_cookie`` resumes the listing after it (0 is the start)."""

    next_cookie: int
    name: bytes
    ino: int
    filetype: Filetype


class OpenFile(Protocol):
    """An open regular file of a backend. Offsets are absolute; the descriptor keeps the position."""

    def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int: ...
    def write(self, offset: int, buffers: Buffers) -> int: ...
    def append(self, buffers: Buffers) -> tuple[int, int]:
        """Write at the end of the file; returns (bytes written, new size)."""
        ...

    def size(self) -> int: ...
    def stat(self) -> Stat: ...
    def truncate(self, size: int) -> None: ...
    def allocate(self, offset: int, length: int) -> None: ...
    def set_times(self, atime_ns: int | None, mtime_ns: int | None) -> None: ...
    def sync(self, data_only: bool) -> None: ...
    def close(self) -> None: ...


class Backend(Protocol):
    """A mounted file system. ``dir`` arguments are always directory nodes the resolver reached."""

    read_only: bool
    untrusted: bool
    device: int

    def root(self) -> Node: ...
    def lookup(self, dir: Node, name: bytes) -> tuple[Node, Stat]:
        """The entry ``name`` of ``dir`` (ENOENT if none) and its attributes, links not followed."""
        ...

    def stat(self, node: Node) -> Stat: ...
    def readlink(self, node: Node) -> bytes: ...
    def open(self, node: Node, *, read: bool, write: bool) -> OpenFile: ...
    def create(self, dir: Node, name: bytes, *, exclusive: bool) -> Node: ...
    def mkdir(self, dir: Node, name: bytes) -> None: ...
    def symlink(self, dir: Node, name: bytes, target: bytes) -> None: ...
    def link(self, node: Node, dir: Node, name: bytes) -> None: ...
    def unlink(self, dir: Node, name: bytes) -> None: ...
    def rmdir(self, dir: Node, name: bytes) -> None: ...
    def rename(self, src_dir: Node, src: bytes, dst_dir: Node, dst: bytes) -> None: ...
    def readdir(self, dir: Node, cookie: int) -> Iterator[DirEntry]: ...
    def set_times(self, node: Node, atime_ns: int | None, mtime_ns: int | None) -> None: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Resolved:
    """Where a path leads. ``name`` is None when the path ends in ``.``/``..`` (then ``node`` is that
    directory and ``parent`` is None); ``node`` is None when the last component does not exist."""

    parent: Node | None
    name: bytes | None
    node: Node | None
    stat: Stat | None  # of ``node`` as the lookup found it (None for a directory reached by ./..)
    trailing_slash: bool

    @property
    def filetype(self) -> Filetype | None:
        if self.node is None:
            return None
        return self.stat.filetype if self.stat is not None else Filetype.DIRECTORY

    def existing(self) -> tuple[Node, Filetype]:
        """The node the path names; ENOENT if it does not exist, ENOTDIR for ``file/``."""
        ftype = self.filetype
        if self.node is None or ftype is None:
            raise WasiError(Errno.NOENT)
        if self.trailing_slash and ftype != Filetype.DIRECTORY:
            raise WasiError(Errno.NOTDIR)
        return self.node, ftype

    def entry(self) -> tuple[Node, bytes]:
        """The (directory, name) the path names, for operations on a directory entry."""
        if self.parent is None or self.name is None:
            raise WasiError(Errno.INVAL)
        return self.parent, self.name


def check_path(path: bytes) -> None:
    if not path:
        raise WasiError(Errno.NOENT)
    if len(path) > MAX_PATH:
        raise WasiError(Errno.NAMETOOLONG)
    if b"\0" in path:
        raise WasiError(Errno.INVAL)
    if path.startswith(b"/"):
        raise WasiError(Errno.PERM)


def resolve(backend: Backend, start: Node, path: bytes, *, follow: bool) -> Resolved:
    """Resolve ``path`` beneath the directory ``start`` (see the module docstring for the rules).

    ``follow`` says whether a symbolic link in the last component is expanded; a trailing slash
    always expands it, as POSIX requires.
    """
    check_path(path)
    trailing = path.endswith(b"/")
    stack: list[Node] = [start]
    work = deque(c for c in path.split(b"/") if c)
    links = 0
    while work:
        comp = work.popleft()
        last = not work
        if comp == b".":
            continue
        if comp == b"..":
            if len(stack) == 1:
                raise WasiError(Errno.PERM)
            stack.pop()
            continue
        if len(comp) > MAX_NAME:
            raise WasiError(Errno.NAMETOOLONG)
        try:
            node, stat = backend.lookup(stack[-1], comp)
        except WasiError as e:
            if last and e.errno == Errno.NOENT:
                return Resolved(stack[-1], comp, None, None, trailing)
            raise
        ftype = stat.filetype
        if ftype == Filetype.SYMBOLIC_LINK and (not last or follow or trailing):
            links += 1
            if links > MAX_SYMLINKS:
                raise WasiError(Errno.LOOP)
            target = backend.readlink(node)
            if not target:
                raise WasiError(Errno.NOENT)
            if target.startswith(b"/"):
                raise WasiError(Errno.PERM)
            if target.endswith(b"/") and last:
                trailing = True
            work.extendleft(reversed([c for c in target.split(b"/") if c]))
            continue
        if last:
            return Resolved(stack[-1], comp, node, stat, trailing)
        if ftype != Filetype.DIRECTORY:
            raise WasiError(Errno.NOTDIR)
        stack.append(node)
    return Resolved(None, None, stack[-1], None, trailing)


def resolve_parent(backend: Backend, start: Node, path: bytes) -> tuple[Node, bytes, Resolved]:
    """For operations on a directory entry (create, unlink, rename ...): the entry's directory and
    name, never following a link in the last component."""
    res = resolve(backend, start, path, follow=False)
    if res.name is None:
        raise WasiError(Errno.INVAL)
    assert res.parent is not None
    return res.parent, res.name, res
