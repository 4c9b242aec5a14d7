"""The guest's file-descriptor table: standard streams, preopened and opened directories, files, sockets.

Each descriptor carries its rights (``$rights``, base and inheriting) and ``$fdflags``. Rights only
ever shrink: a descriptor opened through a directory gets at most the directory's inheriting rights,
and never rights that do not apply to its type (witx ``$rights``; CloudABI's capability model).

Numbering follows wasmtime's WASI: 0-2 are the standard streams, the preopens follow in mount order,
and a new descriptor takes the highest number freed by a close, or else one past the highest in use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from haven.libos.errno import (
    RIGHTS_ALL,
    RIGHTS_DIR,
    RIGHTS_FILE,
    Errno,
    Filetype,
    WasiError,
)
from haven.libos.vfs import Backend, Node, OpenFile

MAX_FDS = 1 << 15  # open descriptors per guest; beyond this, EMFILE


@dataclass(slots=True)
class Descriptor:
    filetype: Filetype
    rights_base: int
    rights_inheriting: int
    fdflags: int = 0

    def require(self, rights: int) -> None:
        """ENOTCAPABLE unless this descriptor holds every right in ``rights``."""
        if rights & ~self.rights_base:
            raise WasiError(Errno.NOTCAPABLE)


@dataclass(slots=True)
class StreamDesc(Descriptor):
    """stdin (0), stdout (1) or stderr (2)."""

    stream: int = 0


@dataclass(slots=True)
class DirDesc(Descriptor):
    backend: Backend = field(default=None)  # type: ignore[assignment]
    node: Node = None
    preopen: bytes | None = None  # the guest path of a preopened directory


@dataclass(slots=True)
class FileDesc(Descriptor):
    backend: Backend = field(default=None)  # type: ignore[assignment]
    node: Node = None
    file: OpenFile = field(default=None)  # type: ignore[assignment]
    position: int = 0
    readable: bool = False
    writable: bool = False


@dataclass(slots=True)
class SocketDesc(Descriptor):
    socket: Any = None


def dir_rights(base: int, inheriting: int) -> tuple[int, int]:
    return base & RIGHTS_DIR, inheriting


def file_rights(base: int, inheriting: int) -> tuple[int, int]:
    return base & RIGHTS_FILE, inheriting & RIGHTS_FILE


class FdTable:
    """Descriptor numbers to descriptors."""

    def __init__(self) -> None:
        self._fds: dict[int, Descriptor] = {}
        self._free: set[int] = set()

    def __len__(self) -> int:
        return len(self._fds)

    def __contains__(self, fd: int) -> bool:
        return fd in self._fds

    def items(self) -> list[tuple[int, Descriptor]]:
        return sorted(self._fds.items())

    def get(self, fd: int) -> Descriptor:
        try:
            return self._fds[fd]
        except KeyError:
            raise WasiError(Errno.BADF) from None

    def file(self, fd: int, rights: int = 0) -> FileDesc:
        """A regular-file descriptor holding ``rights``: EBADF for anything else, as wasmtime answers."""
        desc = self._fds.get(fd)
        if type(desc) is not FileDesc:
            raise WasiError(Errno.BADF)
        if rights & ~desc.rights_base:
            raise WasiError(Errno.NOTCAPABLE)
        return desc

    def dir(self, fd: int, rights: int = 0, *, file_errno: Errno = Errno.BADF) -> DirDesc:
        """A directory descriptor holding ``rights``; a file is ``file_errno`` (EBADF, as wasmtime
        answers every path function but ``path_open``, which says ENOTDIR)."""
        desc = self._fds.get(fd)
        if type(desc) is not DirDesc:
            raise WasiError(file_errno if type(desc) is FileDesc else Errno.BADF)
        if rights & ~desc.rights_base:
            raise WasiError(Errno.NOTCAPABLE)
        return desc

    def add(self, desc: Descriptor) -> int:
        if len(self._fds) >= MAX_FDS:
            raise WasiError(Errno.MFILE)
        if self._free:
            fd = max(self._free)
            self._free.discard(fd)
        else:
            fd = max(self._fds) + 1 if self._fds else 0
        self._fds[fd] = desc
        return fd

    def remove(self, fd: int) -> Descriptor:
        desc = self.get(fd)
        del self._fds[fd]
        self._free.add(fd)
        return desc

    def renumber(self, fd: int, to: int) -> Descriptor | None:
        """Move ``fd`` to ``to`` (which must be open); returns the descriptor ``to`` held, to close."""
        if to not in self._fds or fd not in self._fds:
            raise WasiError(Errno.BADF)
        if fd == to:
            return None
        old = self._fds[to]
        self._fds[to] = self._fds.pop(fd)
        self._free.add(fd)
        self._free.discard(to)
        return old


RIGHTS_PREOPEN_BASE = RIGHTS_DIR
RIGHTS_PREOPEN_INHERITING = RIGHTS_ALL
