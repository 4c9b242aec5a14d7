"""WASI preview 1 constants: errno values, rights, flags and enums, exactly as the witx files give them.

Source: WebAssembly/WASI, ``legacy/preview1/witx/typenames.witx`` (the ``wasi_snapshot_preview1`` type
names). Enum members take their declaration index as value and flag members their bit index, as witx
defines (``enum (@witx tag u16)`` / ``flags (@witx repr u64)``); the order below is the witx order.
Flags are plain ``int`` constants (not ``enum.IntFlag``): they are combined and tested on every call,
and an ``IntFlag`` operation builds a new enum member each time.
"""

from __future__ import annotations

import enum
import errno as _os_errno


class Errno(enum.IntEnum):
    """``$errno`` (enum, tag u16)."""

    SUCCESS = 0
    TOOBIG = 1  # $2big
    ACCES = 2
    ADDRINUSE = 3
    ADDRNOTAVAIL = 4
    AFNOSUPPORT = 5
    AGAIN = 6
    ALREADY = 7
    BADF = 8
    BADMSG = 9
    BUSY = 10
    CANCELED = 11
    CHILD = 12
    CONNABORTED = 13
    CONNREFUSED = 14
    CONNRESET = 15
    DEADLK = 16
    DESTADDRREQ = 17
    DOM = 18
    DQUOT = 19
    EXIST = 20
    FAULT = 21
    FBIG = 22
    HOSTUNREACH = 23
    IDRM = 24
    ILSEQ = 25
    INPROGRESS = 26
    INTR = 27
    INVAL = 28
    IO = 29
    ISCONN = 30
    ISDIR = 31
    LOOP = 32
    MFILE = 33
    MLINK = 34
    MSGSIZE = 35
    MULTIHOP = 36
    NAMETOOLONG = 37
    NETDOWN = 38
    NETRESET = 39
    NETUNREACH = 40
    NFILE = 41
    NOBUFS = 42
    NODEV = 43
    NOENT = 44
    NOEXEC = 45
    NOLCK = 46
    NOLINK = 47
    NOMEM = 48
    NOMSG = 49
    NOPROTOOPT = 50
    NOSPC = 51
    NOSYS = 52
    NOTCONN = 53
    NOTDIR = 54
    NOTEMPTY = 55
    NOTRECOVERABLE = 56
    NOTSOCK = 57
    NOTSUP = 58
    NOTTY = 59
    NXIO = 60
    OVERFLOW = 61
    OWNERDEAD = 62
    PERM = 63
    PIPE = 64
    PROTO = 65
    PROTONOSUPPORT = 66
    PROTOTYPE = 67
    RANGE = 68
    ROFS = 69
    SPIPE = 70
    SRCH = 71
    STALE = 72
    TIMEDOUT = 73
    TXTBSY = 74
    XDEV = 75
    NOTCAPABLE = 76


class WasiError(Exception):
    """Raised inside a WASI function: the call returns ``errno`` to the application.

    Raised tens of thousands of times a second by some programs (SQLite probes for its journal), so
    construction is kept to one attribute."""

    __slots__ = ("errno",)

    def __init__(self, errno: Errno) -> None:  # no Exception.__init__: nothing reads args
        self.errno = errno

    def __str__(self) -> str:
        return Errno(self.errno).name


class Rights:
    """``$rights`` (flags, repr u64): bit i is the i-th right in witx order."""

    FD_DATASYNC = 1 << 0
    FD_READ = 1 << 1
    FD_SEEK = 1 << 2
    FD_FDSTAT_SET_FLAGS = 1 << 3
    FD_SYNC = 1 << 4
    FD_TELL = 1 << 5
    FD_WRITE = 1 << 6
    FD_ADVISE = 1 << 7
    FD_ALLOCATE = 1 << 8
    PATH_CREATE_DIRECTORY = 1 << 9
    PATH_CREATE_FILE = 1 << 10
    PATH_LINK_SOURCE = 1 << 11
    PATH_LINK_TARGET = 1 << 12
    PATH_OPEN = 1 << 13
    FD_READDIR = 1 << 14
    PATH_READLINK = 1 << 15
    PATH_RENAME_SOURCE = 1 << 16
    PATH_RENAME_TARGET = 1 << 17
    PATH_FILESTAT_GET = 1 << 18
    PATH_FILESTAT_SET_SIZE = 1 << 19
    PATH_FILESTAT_SET_TIMES = 1 << 20
    FD_FILESTAT_GET = 1 << 21
    FD_FILESTAT_SET_SIZE = 1 << 22
    FD_FILESTAT_SET_TIMES = 1 << 23
    PATH_SYMLINK = 1 << 24
    PATH_REMOVE_DIRECTORY = 1 << 25
    PATH_UNLINK_FILE = 1 << 26
    POLL_FD_READWRITE = 1 << 27
    SOCK_SHUTDOWN = 1 << 28
    SOCK_ACCEPT = 1 << 29


RIGHTS_ALL = (1 << 30) - 1
R = Rights
# The rights that mean something on a regular file, and on a directory (the split CloudABI and the
# legacy WASI implementations use): a descriptor never holds rights that do not apply to its type.
RIGHTS_FILE = int(
    R.FD_DATASYNC | R.FD_READ | R.FD_SEEK | R.FD_FDSTAT_SET_FLAGS | R.FD_SYNC | R.FD_TELL | R.FD_WRITE
    | R.FD_ADVISE | R.FD_ALLOCATE | R.FD_FILESTAT_GET | R.FD_FILESTAT_SET_SIZE | R.FD_FILESTAT_SET_TIMES
    | R.POLL_FD_READWRITE
)  # fmt: skip
RIGHTS_DIR = int(
    R.FD_FDSTAT_SET_FLAGS | R.FD_SYNC | R.FD_ADVISE | R.PATH_CREATE_DIRECTORY | R.PATH_CREATE_FILE
    | R.PATH_LINK_SOURCE | R.PATH_LINK_TARGET | R.PATH_OPEN | R.FD_READDIR | R.PATH_READLINK
    | R.PATH_RENAME_SOURCE | R.PATH_RENAME_TARGET | R.PATH_FILESTAT_GET | R.PATH_FILESTAT_SET_SIZE
    | R.PATH_FILESTAT_SET_TIMES | R.FD_FILESTAT_GET | R.FD_FILESTAT_SET_TIMES | R.PATH_SYMLINK
    | R.PATH_REMOVE_DIRECTORY | R.PATH_UNLINK_FILE | R.POLL_FD_READWRITE
)  # fmt: skip
RIGHTS_STDIN = int(R.FD_READ | R.FD_FILESTAT_GET | R.POLL_FD_READWRITE)
RIGHTS_STDOUT = int(R.FD_WRITE | R.FD_FILESTAT_GET | R.POLL_FD_READWRITE)
RIGHTS_SOCKET = int(
    R.FD_READ | R.FD_WRITE | R.FD_FDSTAT_SET_FLAGS | R.FD_FILESTAT_GET | R.POLL_FD_READWRITE
    | R.SOCK_SHUTDOWN
)  # fmt: skip
RIGHTS_LISTENER = int(R.FD_FDSTAT_SET_FLAGS | R.FD_FILESTAT_GET | R.POLL_FD_READWRITE | R.SOCK_ACCEPT)
del R


class Filetype(enum.IntEnum):
    """``$filetype`` (enum, tag u8)."""

    UNKNOWN = 0
    BLOCK_DEVICE = 1
    CHARACTER_DEVICE = 2
    DIRECTORY = 3
    REGULAR_FILE = 4
    SOCKET_DGRAM = 5
    SOCKET_STREAM = 6
    SYMBOLIC_LINK = 7


class Whence(enum.IntEnum):
    """``$whence`` (enum, tag u8)."""

    SET = 0
    CUR = 1
    END = 2


class Advice(enum.IntEnum):
    """``$advice`` (enum, tag u8)."""

    NORMAL = 0
    SEQUENTIAL = 1
    RANDOM = 2
    WILLNEED = 3
    DONTNEED = 4
    NOREUSE = 5


class Clockid(enum.IntEnum):
    """``$clockid`` (enum, tag u32)."""

    REALTIME = 0
    MONOTONIC = 1
    PROCESS_CPUTIME_ID = 2
    THREAD_CPUTIME_ID = 3


class Eventtype(enum.IntEnum):
    """``$eventtype`` (enum, tag u8)."""

    CLOCK = 0
    FD_READ = 1
    FD_WRITE = 2


class Preopentype(enum.IntEnum):
    """``$preopentype`` (enum, tag u8)."""

    DIR = 0


# ``$signal`` (enum, tag u8): $none, $hup ... $sys — 31 values.
SIGNAL_COUNT = 31


class Fdflags:
    """``$fdflags`` (flags, repr u16)."""

    APPEND = 1 << 0
    DSYNC = 1 << 1
    NONBLOCK = 1 << 2
    RSYNC = 1 << 3
    SYNC = 1 << 4


FDFLAGS_ALL = 0x1F


class Fstflags:
    """``$fstflags`` (flags, repr u16)."""

    ATIM = 1 << 0
    ATIM_NOW = 1 << 1
    MTIM = 1 << 2
    MTIM_NOW = 1 << 3


FSTFLAGS_ALL = 0xF


class Lookupflags:
    """``$lookupflags`` (flags, repr u32)."""

    SYMLINK_FOLLOW = 1 << 0


LOOKUPFLAGS_ALL = 0x1


class Oflags:
    """``$oflags`` (flags, repr u16)."""

    CREAT = 1 << 0
    DIRECTORY = 1 << 1
    EXCL = 1 << 2
    TRUNC = 1 << 3


OFLAGS_ALL = 0xF

EVENTRWFLAGS_HANGUP = 1 << 0  # ``$eventrwflags`` (repr u16): $fd_readwrite_hangup
SUBCLOCKFLAGS_ABSTIME = 1 << 0  # ``$subclockflags`` (repr u16): $subscription_clock_abstime
SUBCLOCKFLAGS_ALL = 0x1
RIFLAGS_PEEK = 1 << 0  # ``$riflags`` (repr u16): $recv_peek
RIFLAGS_WAITALL = 1 << 1  # $recv_waitall
RIFLAGS_ALL = 0x3
ROFLAGS_DATA_TRUNCATED = 1 << 0  # ``$roflags`` (repr u16)
SDFLAGS_RD = 1 << 0  # ``$sdflags`` (repr u8)
SDFLAGS_WR = 1 << 1
SDFLAGS_ALL = 0x3

# Host (Linux/POSIX) errno values to WASI's: the file-system backends report POSIX errnos.
_FROM_OS = {
    _os_errno.E2BIG: Errno.TOOBIG,
    _os_errno.EACCES: Errno.ACCES,
    _os_errno.EAGAIN: Errno.AGAIN,
    _os_errno.EBADF: Errno.BADF,
    _os_errno.EBUSY: Errno.BUSY,
    _os_errno.EDQUOT: Errno.DQUOT,
    _os_errno.EEXIST: Errno.EXIST,
    _os_errno.EFAULT: Errno.FAULT,
    _os_errno.EFBIG: Errno.FBIG,
    _os_errno.EILSEQ: Errno.ILSEQ,
    _os_errno.EINTR: Errno.INTR,
    _os_errno.EINVAL: Errno.INVAL,
    _os_errno.EIO: Errno.IO,
    _os_errno.EISDIR: Errno.ISDIR,
    _os_errno.ELOOP: Errno.LOOP,
    _os_errno.EMFILE: Errno.MFILE,
    _os_errno.EMLINK: Errno.MLINK,
    _os_errno.ENAMETOOLONG: Errno.NAMETOOLONG,
    _os_errno.ENFILE: Errno.NFILE,
    _os_errno.ENODEV: Errno.NODEV,
    _os_errno.ENOENT: Errno.NOENT,
    _os_errno.ENOMEM: Errno.NOMEM,
    _os_errno.ENOSPC: Errno.NOSPC,
    _os_errno.ENOSYS: Errno.NOSYS,
    _os_errno.ENOTDIR: Errno.NOTDIR,
    _os_errno.ENOTEMPTY: Errno.NOTEMPTY,
    _os_errno.ENOTSUP: Errno.NOTSUP,
    _os_errno.ENXIO: Errno.NXIO,
    _os_errno.EOVERFLOW: Errno.OVERFLOW,
    _os_errno.EPERM: Errno.PERM,
    _os_errno.EPIPE: Errno.PIPE,
    _os_errno.ERANGE: Errno.RANGE,
    _os_errno.EROFS: Errno.ROFS,
    _os_errno.ESPIPE: Errno.SPIPE,
    _os_errno.ETXTBSY: Errno.TXTBSY,
    _os_errno.EXDEV: Errno.XDEV,
}


def from_os_errno(code: int | None) -> Errno:
    """The WASI errno for a POSIX errno; EIO for anything without a counterpart."""
    if code is None:
        return Errno.IO
    return _FROM_OS.get(code, Errno.IO)
