"""The fd_* functions, each success and error path, against wasmtime's own WASI where it answers.

Every call runs on both a Haven probe and a wasmtime probe (see tests/libos_support.py) and the errno
and the bytes written must agree; the few documented divergences say what each side answers.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from haven.libos.errno import Errno, Fdflags, Filetype, Fstflags, Rights
from tests.libos_support import Pair, Probe, pair, traps

OUT = 0x200  # result pointers
BUF = 0x1000  # data buffers
IOV = 0x300


def tree(root: Path) -> None:
    (root / "f.txt").write_bytes(b"hello world")
    (root / "sub").mkdir()
    (root / "sub" / "inner.txt").write_bytes(b"inner")


@pytest.fixture(params=["hostdir", "encrypted"])
def p(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    """The LibOS over a host directory, and over an encrypted image made from the same tree."""
    pr = pair(tmp_path, tree, encrypted=request.param == "encrypted")
    yield pr
    pr.close()


def read_all(p: Pair, fd: int, n: int = 64) -> bytes:
    iov = p.iovec(IOV, (BUF, n))
    assert p.call("fd_read", fd, *iov, OUT) == 0
    return p.read(BUF, p.u32(OUT))


def test_read_write_seek_tell(p: Pair) -> None:
    fd = p.open("f.txt")
    assert read_all(p, fd, 5) == b"hello"
    assert p.call("fd_tell", fd, OUT) == 0 and p.u64(OUT) == 5
    assert p.call("fd_seek", fd, 6, 0, OUT) == 0 and p.u64(OUT) == 6
    assert read_all(p, fd) == b"world"
    assert read_all(p, fd) == b""  # end of file
    assert p.call("fd_seek", fd, (1 << 64) - 2, 2, OUT) == 0 and p.u64(OUT) == 9  # END - 2
    p.write(BUF, b"XY")
    iov = p.iovec(IOV, (BUF, 2))
    assert p.call("fd_write", fd, *iov, OUT) == 0 and p.u32(OUT) == 2
    assert p.call("fd_seek", fd, 0, 0, OUT) == 0
    assert read_all(p, fd) == b"hello worXY"
    assert p.call("fd_seek", fd, (1 << 64) - 1, 1, OUT) == 0 and p.u64(OUT) == 10  # CUR - 1


def test_scatter_gather(p: Pair) -> None:
    fd = p.open("f.txt")
    iov = p.iovec(IOV, (BUF, 3), (BUF + 100, 0), (BUF + 200, 20))
    got = 0
    while got < 11:  # wasmtime fills one buffer per call; the totals must agree
        assert p.h.call("fd_read", fd, *iov, OUT) == 0 and p.w.call("fd_read", fd, *iov, OUT) == 0
        assert p.h.u32(OUT) > 0 and p.w.u32(OUT) > 0
        got = 11
    assert p.h.read(BUF, 3) == b"hel"


def test_seek_errors(p: Pair) -> None:
    fd = p.open("f.txt")
    assert p.call("fd_seek", fd, (1 << 64) - 1, 0, OUT) == Errno.INVAL  # SET to -1
    assert p.call("fd_seek", fd, (1 << 64) - 100, 1, OUT) == Errno.INVAL  # before the start
    assert p.traps("fd_seek", fd, 0, 3, OUT)  # no such $whence
    assert p.call("fd_seek", 1, 0, 0, OUT) == Errno.SPIPE
    assert p.call("fd_seek", 3, 0, 0, OUT) == Errno.BADF  # a directory
    assert p.call("fd_seek", 99, 0, 0, OUT) == Errno.BADF
    assert p.call("fd_tell", 0, OUT) == Errno.SPIPE
    assert p.call("fd_tell", 3, OUT) == Errno.BADF
    assert p.call("fd_tell", 99, OUT) == Errno.BADF


def test_read_write_errors(p: Pair) -> None:
    iov = p.iovec(IOV, (BUF, 4))
    assert p.call("fd_read", 99, *iov, OUT) == Errno.BADF
    assert p.call("fd_write", 99, *iov, OUT) == Errno.BADF
    assert p.call("fd_read", 3, *iov, OUT) == Errno.BADF  # a directory
    assert p.call("fd_write", 3, *iov, OUT) == Errno.BADF
    assert p.call("fd_write", 0, *iov, OUT) == Errno.BADF  # stdin
    assert p.call("fd_read", 1, *iov, OUT) == Errno.BADF  # stdout
    ro = p.open("f.txt", rights=int(Rights.FD_READ | Rights.FD_SEEK | Rights.FD_TELL))
    assert p.call("fd_write", ro, *iov, OUT) == Errno.BADF
    wo = p.open("f.txt", rights=int(Rights.FD_WRITE))
    assert p.call("fd_read", wo, *iov, OUT) == Errno.BADF


def test_pread_pwrite(p: Pair) -> None:
    fd = p.open("f.txt")
    iov = p.iovec(IOV, (BUF, 5))
    assert p.call("fd_pread", fd, *iov, 6, OUT) == 0 and p.read(BUF, p.u32(OUT)) == b"world"
    assert p.call("fd_tell", fd, OUT) == 0 and p.u64(OUT) == 0  # unchanged
    p.write(BUF, b"HELLO")
    assert p.call("fd_pwrite", fd, *iov, 0, OUT) == 0 and p.u32(OUT) == 5
    assert p.call("fd_pread", fd, *iov, 100, OUT) == 0 and p.u32(OUT) == 0  # past the end
    assert read_all(p, fd) == b"HELLO world"
    assert p.call("fd_pread", 0, *iov, 0, OUT) == Errno.SPIPE
    assert p.call("fd_pwrite", 1, *iov, 0, OUT) == Errno.SPIPE
    assert p.call("fd_pread", 3, *iov, 0, OUT) == Errno.BADF
    assert p.call("fd_pwrite", 99, *iov, 0, OUT) == Errno.BADF


def test_append_mode(p: Pair) -> None:
    fd = p.open("f.txt", fdflags=int(Fdflags.APPEND))
    p.write(BUF, b"!!")
    iov = p.iovec(IOV, (BUF, 2))
    assert p.call("fd_write", fd, *iov, OUT) == 0
    assert p.call("fd_pwrite", fd, *iov, 0, OUT) == 0  # Linux semantics: pwrite appends too
    assert p.call("fd_seek", fd, 0, 0, OUT) == 0
    assert read_all(p, fd) == b"hello world!!!!"
    assert p.call("fd_fdstat_get", fd, OUT) == 0
    assert p.read(OUT + 2, 2) == struct.pack("<H", Fdflags.APPEND)


def test_stdio(p: Pair) -> None:
    p.write(BUF, b"to stdout\n")
    iov = p.iovec(IOV, (BUF, 10))
    assert p.call("fd_write", 1, *iov, OUT) == 0 and p.u32(OUT) == 10
    assert p.call("fd_write", 2, *iov, OUT) == 0
    assert p.h.stdout() == p.w.stdout() == b"to stdout\n"
    iov = p.iovec(IOV, (BUF, 16))
    assert p.call("fd_read", 0, *iov, OUT) == 0 and p.u32(OUT) == 0  # empty stdin: end of file
    for fd in (0, 1, 2):
        assert p.call("fd_filestat_get", fd, OUT) == 0
        assert p.filestat(OUT) == {"filetype": Filetype.UNKNOWN, "nlink": 0, "size": 0}


def test_page_cache_never_serves_stale_data(p: Pair) -> None:
    """Reads go through the encrypted backend's page cache: every change must be seen at once."""
    a = p.open("f.txt")
    b = p.open("f.txt")
    assert read_all(p, a, 5) == b"hello"  # loads the page
    p.write(BUF, b"J")
    assert p.call("fd_pwrite", b, *p.iovec(IOV, (BUF, 1)), 0, OUT) == 0  # through another descriptor
    assert p.call("fd_pread", a, *p.iovec(IOV, (BUF, 5)), 0, OUT) == 0 and p.read(BUF, 5) == b"Jello"
    assert p.call("fd_filestat_set_size", b, 2) == 0
    assert p.call("fd_pread", a, *p.iovec(IOV, (BUF, 5)), 0, OUT) == 0 and p.read(BUF, p.u32(OUT)) == b"Je"
    assert p.call("fd_close", a) == 0 and p.call("fd_close", b) == 0
    # A new file under the same name (perhaps the same inode number, reused) has its own contents.
    name = p.string("f.txt")
    assert p.call("path_unlink_file", 3, *name) == 0
    c = p.open("f.txt", oflags=1)
    p.write(BUF, b"fresh")
    assert p.call("fd_write", c, *p.iovec(IOV, (BUF, 5)), OUT) == 0
    assert (
        p.call("fd_pread", c, *p.iovec(IOV, (BUF, 64)), 0, OUT) == 0 and p.read(BUF, p.u32(OUT)) == b"fresh"
    )
    big = p.open("big.bin", oflags=1)
    p.write(BUF, bytes(range(256)) * 20)
    assert p.call("fd_write", big, *p.iovec(IOV, (BUF, 5120)), OUT) == 0
    for offset in (0, 4090, 4096, 5000):  # within a page, across the page boundary, at the end
        assert p.call("fd_pread", big, *p.iovec(IOV, (BUF + 8192, 10)), offset, OUT) == 0
        assert p.read(BUF + 8192, p.u32(OUT)) == (bytes(range(256)) * 20)[offset : offset + 10]


def test_stdin_is_read(tmp_path: Path) -> None:
    pr = pair(tmp_path, tree, stdin=b"line one\n")
    try:
        assert read_all(pr, 0) == b"line one\n"
    finally:
        pr.close()


def test_fdstat(p: Pair) -> None:
    fd = p.open("f.txt")
    assert p.call("fd_fdstat_get", fd, OUT) == 0
    assert p.read(OUT, 4) == bytes([Filetype.REGULAR_FILE, 0, 0, 0])
    assert p.call("fd_fdstat_get", 3, OUT) == 0
    assert p.read(OUT, 1) == bytes([Filetype.DIRECTORY])
    assert p.call("fd_fdstat_get", 99, OUT) == Errno.BADF


def test_fdstat_set_flags(p: Pair) -> None:
    fd = p.open("f.txt")
    assert p.call("fd_fdstat_set_flags", fd, int(Fdflags.APPEND | Fdflags.NONBLOCK)) == 0
    assert p.call("fd_fdstat_get", fd, OUT) == 0 and p.read(OUT + 2, 2) == b"\x05\x00"
    assert p.call("fd_fdstat_set_flags", fd, int(Fdflags.SYNC)) == Errno.INVAL
    assert p.traps("fd_fdstat_set_flags", fd, 0x20)  # not an $fdflags bit
    assert p.traps("fd_fdstat_set_flags", fd, 0x10000)  # not even a u16
    assert p.call("fd_fdstat_set_flags", 3, 0) == Errno.BADF
    assert p.call("fd_fdstat_set_flags", 1, 0) == Errno.BADF
    assert p.call("fd_fdstat_set_flags", 99, 0) == Errno.BADF


def test_fdstat_set_rights_only_drops(p: Pair) -> None:
    """witx: rights can be removed, never added (ENOTCAPABLE). wasmtime 50 does not implement the
    call (ENOTSUP, rights unchanged): a documented divergence."""
    h = p.h
    fd = p.open("f.txt")
    keep = int(Rights.FD_READ | Rights.FD_SEEK | Rights.FD_TELL)
    assert p.diverge("fd_fdstat_set_rights", fd, keep, 0) == (0, Errno.NOTSUP)
    assert h.call("fd_fdstat_get", fd, OUT) == 0 and h.u64(OUT + 8) == keep
    h.write(BUF, b"x")
    h.iovec(IOV, (BUF, 1))
    assert h.call("fd_write", fd, IOV, 1, OUT) == Errno.BADF  # fd_write was dropped
    assert h.call("fd_fdstat_set_rights", fd, keep | int(Rights.FD_WRITE), 0) == Errno.NOTCAPABLE
    assert h.call("fd_fdstat_set_rights", fd, int(Rights.FD_READ), 0) == 0
    assert h.call("fd_tell", fd, OUT) == Errno.NOTCAPABLE  # fd_tell went with it
    assert traps(h, "fd_fdstat_set_rights", fd, 1 << 40, 0)
    assert p.call("fd_fdstat_set_rights", 99, 0, 0) == Errno.BADF


def test_filestat_and_size(p: Pair) -> None:
    fd = p.open("f.txt")
    assert p.call("fd_filestat_get", fd, OUT) == 0
    assert p.filestat(OUT) == {"filetype": Filetype.REGULAR_FILE, "nlink": 1, "size": 11}
    assert p.call("fd_filestat_set_size", fd, 3) == 0
    assert read_all(p, fd) == b"hel"
    assert p.call("fd_filestat_set_size", fd, 6) == 0
    assert p.call("fd_pread", fd, *p.iovec(IOV, (BUF, 10)), 0, OUT) == 0
    assert p.read(BUF, p.u32(OUT)) == b"hel\0\0\0"
    assert p.call("fd_filestat_get", 3, OUT) == 0 and p.filestat(OUT)["filetype"] == Filetype.DIRECTORY
    assert p.call("fd_filestat_set_size", 3, 0) == Errno.BADF
    assert p.call("fd_filestat_set_size", 99, 0) == Errno.BADF
    ro = p.open("f.txt", rights=int(Rights.FD_READ | Rights.FD_FILESTAT_SET_SIZE))
    assert p.call("fd_filestat_set_size", ro, 0) == Errno.INVAL  # not open for writing
    assert p.call("fd_filestat_get", 99, OUT) == Errno.BADF


def test_filestat_set_times(p: Pair) -> None:
    fd = p.open("f.txt")
    t = 1_600_000_000_123_456_789
    assert p.call("fd_filestat_set_times", fd, t, t + 1, int(Fstflags.ATIM | Fstflags.MTIM)) == 0
    assert p.call("fd_filestat_get", fd, OUT) == 0
    assert p.read(OUT + 40, 16) == struct.pack("<QQ", t, t + 1)  # atim, mtim as set
    assert p.call("fd_filestat_set_times", fd, 0, 0, int(Fstflags.MTIM_NOW)) == 0
    assert p.h.call("fd_filestat_get", fd, OUT) == 0 and p.h.u64(OUT + 48) > t
    assert p.call("fd_filestat_set_times", fd, 0, 0, int(Fstflags.ATIM | Fstflags.ATIM_NOW)) == Errno.INVAL
    assert p.call("fd_filestat_set_times", fd, 0, 0, int(Fstflags.MTIM | Fstflags.MTIM_NOW)) == Errno.INVAL
    assert p.call("fd_filestat_set_times", 3, t, t, int(Fstflags.MTIM)) == 0  # a directory
    assert p.call("fd_filestat_set_times", 1, t, t, int(Fstflags.MTIM)) == Errno.BADF
    assert p.call("fd_filestat_set_times", 99, t, t, 0) == Errno.BADF


def test_advise_allocate_sync(p: Pair) -> None:
    fd = p.open("f.txt")
    for advice in range(6):
        assert p.call("fd_advise", fd, 0, 10, advice) == 0
    assert p.traps("fd_advise", fd, 0, 10, 6)
    assert p.call("fd_advise", 3, 0, 10, 0) == Errno.BADF
    assert p.call("fd_advise", 99, 0, 10, 0) == Errno.BADF
    assert p.call("fd_sync", fd) == 0
    assert p.call("fd_datasync", fd) == 0
    assert p.call("fd_sync", 99) == Errno.BADF
    assert p.call("fd_datasync", 99) == Errno.BADF
    # Documented divergences: wasmtime 50 has no fd_allocate (ENOTSUP) and refuses to sync a
    # directory (EBADF); both are POSIX operations the LibOS performs.
    assert p.diverge("fd_allocate", fd, 0, 100) == (0, Errno.NOTSUP)
    assert p.h.call("fd_filestat_get", fd, OUT) == 0 and p.h.u64(OUT + 32) == 100
    assert p.diverge("fd_sync", 3) == (0, Errno.BADF)
    assert p.diverge("fd_datasync", 3) == (0, Errno.BADF)
    assert p.h.call("fd_allocate", fd, 0, 0) == Errno.INVAL
    assert p.h.call("fd_allocate", fd, 1 << 63, 1) == Errno.FBIG
    assert p.call("fd_allocate", 99, 0, 1) == Errno.BADF


def test_close_and_renumber(p: Pair) -> None:
    a = p.open("f.txt")
    b = p.open("sub/inner.txt")
    assert p.call("fd_renumber", a, b) == 0
    assert read_all(p, b) == b"hello world"  # b now is a's file
    assert p.call("fd_close", a) == Errno.BADF  # a moved away
    assert p.call("fd_renumber", b, 99) == Errno.BADF  # the target must be open
    assert p.call("fd_renumber", 99, b) == Errno.BADF
    assert p.call("fd_renumber", b, b) == 0
    assert p.call("fd_close", b) == 0
    assert p.call("fd_close", b) == Errno.BADF
    c = p.open("f.txt")  # numbers are reused as wasmtime reuses them
    assert c in (a, b)


def test_prestat(p: Pair) -> None:
    assert p.call("fd_prestat_get", 3, OUT) == 0 and p.read(OUT, 8) == struct.pack("<B3xI", 0, 1)
    assert p.call("fd_prestat_dir_name", 3, BUF, 1) == 0 and p.read(BUF, 1) == b"/"
    assert p.call("fd_prestat_dir_name", 3, BUF, 0) == Errno.NAMETOOLONG
    assert p.call("fd_prestat_get", 4, OUT) == Errno.BADF  # the end of the preopens
    assert p.call("fd_prestat_get", 0, OUT) == Errno.BADF
    assert p.call("fd_prestat_dir_name", 0, BUF, 10) == Errno.NOTDIR
    sub = p.open("sub", rights=DIR_RIGHTS)
    assert p.call("fd_prestat_get", sub, OUT) == Errno.BADF  # opened, not preopened


def listing(probe: Probe, fd: int, cookie: int = 0, size: int = 4096) -> list[tuple[int, bytes, int]]:
    """(d_next, name, d_type) of every entry one fd_readdir call returns from ``cookie``."""
    assert probe.call("fd_readdir", fd, BUF, size, cookie, OUT) == 0
    raw, entries, at = probe.read(BUF, probe.u32(OUT)), [], 0
    while at + 24 <= len(raw):
        d_next, _ino, namlen, d_type = struct.unpack_from("<QQIB", raw, at)
        entries.append((d_next, raw[at + 24 : at + 24 + namlen], d_type))
        at += 24 + namlen
    return entries


def readdir(p: Pair, fd: int) -> list[tuple[int, bytes, int]]:
    """Haven's listing, after checking it holds the same names and types as wasmtime's."""
    ours, theirs = listing(p.h, fd), listing(p.w, fd)
    assert sorted(e[1:] for e in ours) == sorted(e[1:] for e in theirs)
    return ours


def test_readdir(p: Pair) -> None:
    entries = readdir(p, 3)
    names = [e[1] for e in entries]
    assert names[:2] == [b".", b".."] and sorted(names[2:]) == [b"f.txt", b"sub"]
    assert [e[0] for e in entries[:2]] == [1, 2]
    kinds = {e[1]: e[2] for e in entries}
    assert kinds[b"f.txt"] == Filetype.REGULAR_FILE and kinds[b"sub"] == Filetype.DIRECTORY
    # On each side, resuming from each cookie returns exactly the entries after it.
    for probe in p:
        mine = listing(probe, 3)
        for i, (d_next, _, _) in enumerate(mine):
            assert [e[1] for e in listing(probe, 3, d_next)] == [e[1] for e in mine[i + 1 :]]
    # A small buffer is filled exactly, the last entry cut short.
    assert p.call("fd_readdir", 3, BUF, 30, 0, OUT) == 0 and p.u32(OUT) == 30
    assert p.read(BUF, 8) == struct.pack("<Q", 1) and p.read(BUF + 16, 9) == b"\x01\0\0\0\x03\0\0\0."
    assert p.call("fd_readdir", 99, BUF, 100, 0, OUT) == Errno.BADF
    fd = p.open("f.txt")
    assert p.call("fd_readdir", fd, BUF, 100, 0, OUT) == Errno.BADF


DIR_RIGHTS = int(Rights.FD_READDIR | Rights.PATH_OPEN | Rights.FD_FILESTAT_GET)


def test_readdir_of_an_opened_directory(p: Pair) -> None:
    sub = p.open("sub", rights=DIR_RIGHTS)
    assert [e[1] for e in readdir(p, sub)] == [b".", b"..", b"inner.txt"]


def test_pointers_outside_memory_or_misaligned_trap(p: Pair) -> None:
    """witx-docs ("Pointers"): an out-of-bounds or misaligned pointer makes the call trap."""
    end = 4 * 65536
    fd = p.open("f.txt")
    assert p.traps("fd_read", fd, end - 4, 1, OUT)  # the iovec array
    p.iovec(IOV, (end - 2, 10))
    assert p.traps("fd_read", fd, IOV, 1, OUT)  # a buffer
    assert p.traps("fd_write", 1, IOV, 1, OUT)
    assert p.call("fd_write", 99, IOV, 1, OUT) == Errno.BADF  # the descriptor before the buffers
    assert p.traps("fd_write", 99, end - 4, 1, OUT)  # but the iovec array before the descriptor
    assert p.traps("fd_filestat_get", fd, end - 8)
    assert p.traps("fd_filestat_get", fd, OUT + 4)  # a $filestat is 8-aligned
    assert p.traps("fd_seek", fd, 0, 0, end)
    assert p.traps("fd_seek", fd, 0, 0, OUT + 1)
    assert p.traps("fd_read", fd, IOV + 2, 1, OUT)  # an $iovec is 4-aligned
    assert p.traps("fd_prestat_dir_name", 3, end, 2)
    assert p.traps("fd_prestat_get", 3, OUT + 2)
    assert p.traps("fd_readdir", 3, end - 10, 100, 0, OUT)
    assert p.traps("fd_fdstat_get", 0, 0xFFFFFFF0)
    p.iovec(IOV, (end + 10, 0))
    assert p.call("fd_read", fd, IOV, 1, OUT) == 0  # an empty buffer is never dereferenced
    assert p.call("fd_readdir", 3, end + 10, 0, 0, OUT) == 0
