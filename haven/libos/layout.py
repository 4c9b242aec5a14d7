"""The WASI preview 1 structures in guest memory, each declared once as a table.

Layouts are the witx records of ``legacy/preview1/witx/typenames.witx`` laid out with the C ABI of
wasm32 (fields at their natural alignment, records padded to their largest alignment), which is what
wasi-libc's ``<wasi/api.h>`` asserts with ``_Static_assert(offsetof(...))``. The hot paths pack and
unpack through :func:`codec`, the one ``struct.Struct`` each table compiles to.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from haven.structs import Struct, field_at


def codec(cls: type[Struct]) -> struct.Struct:
    """The compiled codec of a table: one C call per structure on the hot paths."""
    cls._layout()
    return cls._CODEC


@dataclass
class Iovec(Struct):
    """``$iovec`` / ``$ciovec`` (size 8, align 4)."""

    SIZE: ClassVar[int] = 8
    buf: int = field_at(0, "<I")
    buf_len: int = field_at(4, "<I")


@dataclass
class Fdstat(Struct):
    """``$fdstat`` (size 24, align 8)."""

    SIZE: ClassVar[int] = 24
    fs_filetype: int = field_at(0, "<B")
    pad0: bytes = field_at(1, "1s", reserved=True)
    fs_flags: int = field_at(2, "<H")
    pad1: bytes = field_at(4, "4s", reserved=True)
    fs_rights_base: int = field_at(8, "<Q")
    fs_rights_inheriting: int = field_at(16, "<Q")


@dataclass
class Filestat(Struct):
    """``$filestat`` (size 64, align 8)."""

    SIZE: ClassVar[int] = 64
    dev: int = field_at(0, "<Q")
    ino: int = field_at(8, "<Q")
    filetype: int = field_at(16, "<B")
    pad0: bytes = field_at(17, "7s", reserved=True)
    nlink: int = field_at(24, "<Q")
    size: int = field_at(32, "<Q")
    atim: int = field_at(40, "<Q")
    mtim: int = field_at(48, "<Q")
    ctim: int = field_at(56, "<Q")


@dataclass
class Dirent(Struct):
    """``$dirent`` (size 24, align 8); the name follows it in the ``fd_readdir`` buffer."""

    SIZE: ClassVar[int] = 24
    d_next: int = field_at(0, "<Q")
    d_ino: int = field_at(8, "<Q")
    d_namlen: int = field_at(16, "<I")
    d_type: int = field_at(20, "<B")
    pad0: bytes = field_at(21, "3s", reserved=True)


@dataclass
class Prestat(Struct):
    """``$prestat``: the union tag ``$preopentype`` then ``$prestat_dir`` (size 8, align 4)."""

    SIZE: ClassVar[int] = 8
    tag: int = field_at(0, "<B")
    pad0: bytes = field_at(1, "3s", reserved=True)
    pr_name_len: int = field_at(4, "<I")


@dataclass
class Subscription(Struct):
    """``$subscription`` (size 48, align 8): userdata, then the ``$subscription_u`` union at 8 —
    its tag (``$eventtype``) and, at 16, ``$subscription_clock`` (id, timeout, precision, flags) or
    ``$subscription_fd_readwrite`` (the fd, in the same place as the clock id). Bytes a variant does
    not use are whatever the guest left there, so none of them is checked."""

    SIZE: ClassVar[int] = 48
    userdata: int = field_at(0, "<Q")
    tag: int = field_at(8, "<B")
    pad0: bytes = field_at(9, "7s")
    id_or_fd: int = field_at(16, "<I")
    pad1: bytes = field_at(20, "4s")
    timeout: int = field_at(24, "<Q")
    precision: int = field_at(32, "<Q")
    flags: int = field_at(40, "<H")
    pad2: bytes = field_at(42, "6s")


@dataclass
class Event(Struct):
    """``$event`` (size 32, align 8): userdata, error, type, then ``$event_fd_readwrite`` at 16."""

    SIZE: ClassVar[int] = 32
    userdata: int = field_at(0, "<Q")
    error: int = field_at(8, "<H")
    type: int = field_at(10, "<B")
    pad0: bytes = field_at(11, "5s", reserved=True)
    nbytes: int = field_at(16, "<Q")
    flags: int = field_at(24, "<H")
    pad1: bytes = field_at(26, "6s", reserved=True)


IOVEC = codec(Iovec)
FDSTAT = codec(Fdstat)
FILESTAT = codec(Filestat)
DIRENT = codec(Dirent)
PRESTAT = codec(Prestat)
SUBSCRIPTION = codec(Subscription)
EVENT = codec(Event)
