"""The path_* functions and confinement, against wasmtime's own WASI, over both LibOS backends.

Each test runs twice: with the LibOS serving a plain host directory, and serving an encrypted image
made from the same tree; wasmtime always serves the plain directory. Errnos must agree.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from haven.libos.errno import Errno, Filetype, Fstflags, Oflags, Rights
from tests.libos_support import Pair, Probe, pair

OUT = 0x200
BUF = 0x1000
READ_DIR = int(Rights.FD_READDIR | Rights.PATH_OPEN | Rights.FD_FILESTAT_GET | Rights.PATH_CREATE_FILE)


def tree(root: Path) -> None:
    (root / "f.txt").write_bytes(b"hello world")
    (root / "sub").mkdir()
    (root / "sub" / "inner.txt").write_bytes(b"inner")
    (root / "empty").mkdir()
    os.symlink("f.txt", root / "link")
    os.symlink("sub", root / "dirlink")
    os.symlink("nowhere", root / "dangling")
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    os.symlink("../..", root / "sub" / "up")


@pytest.fixture(params=["hostdir", "encrypted"])
def p(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    pr = (
        pair(tmp_path, tree, encrypted=request.param == "encrypted")
        if request.param == "encrypted"
        else pair(tmp_path, tree)
    )
    yield pr
    pr.close()


def call_path(p: Pair, name: str, path: str, *rest: int, fd: int = 3, flags: int | None = None) -> int:
    ptr, n = p.string(path)
    args = (fd,) + (() if flags is None else (flags,)) + (ptr, n) + rest
    return p.call(name, *args)


def test_create_and_remove_directory(p: Pair) -> None:
    assert call_path(p, "path_create_directory", "newdir") == 0
    assert call_path(p, "path_create_directory", "newdir") == Errno.EXIST
    assert call_path(p, "path_create_directory", "f.txt") == Errno.EXIST
    assert call_path(p, "path_create_directory", "nope/x") == Errno.NOENT
    assert call_path(p, "path_create_directory", "f.txt/x") == Errno.NOTDIR
    assert call_path(p, "path_create_directory", "sub/deeper/") == 0
    assert call_path(p, "path_remove_directory", "sub") == Errno.NOTEMPTY
    assert call_path(p, "path_remove_directory", "f.txt") == Errno.NOTDIR
    assert call_path(p, "path_remove_directory", "missing") == Errno.NOENT
    assert call_path(p, "path_remove_directory", "dirlink") == Errno.NOTDIR  # a link, not followed
    assert call_path(p, "path_remove_directory", "newdir/") == Errno.INVAL  # wasmtime's answer
    assert call_path(p, "path_remove_directory", "newdir") == 0
    assert call_path(p, "path_remove_directory", "newdir") == Errno.NOENT
    assert call_path(p, "path_create_directory", "x", fd=99) == Errno.BADF


def test_filestat_get_follows_or_not(p: Pair) -> None:
    assert call_path(p, "path_filestat_get", "link", OUT, flags=1) == 0
    assert p.filestat(OUT) == {"filetype": Filetype.REGULAR_FILE, "nlink": 1, "size": 11}
    assert call_path(p, "path_filestat_get", "link", OUT, flags=0) == 0
    assert p.filestat(OUT)["filetype"] == Filetype.SYMBOLIC_LINK
    assert call_path(p, "path_filestat_get", "sub", OUT, flags=0) == 0
    assert p.filestat(OUT)["filetype"] == Filetype.DIRECTORY
    assert call_path(p, "path_filestat_get", "dangling", OUT, flags=1) == Errno.NOENT
    assert call_path(p, "path_filestat_get", "loop-a", OUT, flags=1) == Errno.LOOP
    assert call_path(p, "path_filestat_get", "missing", OUT, flags=0) == Errno.NOENT
    assert call_path(p, "path_filestat_get", "f.txt/", OUT, flags=0) == Errno.NOTDIR
    assert call_path(p, "path_filestat_get", ".", OUT, flags=0) == 0
    assert p.traps("path_filestat_get", 3, 2, *p.string("f.txt"), OUT)  # no such $lookupflags


def test_filestat_set_times(p: Pair) -> None:
    t = 1_500_000_000_000_000_000
    flags = int(Fstflags.ATIM | Fstflags.MTIM)
    assert call_path(p, "path_filestat_set_times", "f.txt", t, t, flags, flags=0) == 0
    assert call_path(p, "path_filestat_get", "f.txt", OUT, flags=0) == 0
    assert p.read(OUT + 40, 16) == struct.pack("<QQ", t, t)
    assert call_path(p, "path_filestat_set_times", "link", t + 5, t + 5, flags, flags=1) == 0
    assert call_path(p, "path_filestat_get", "f.txt", OUT, flags=0) == 0
    assert p.read(OUT + 48, 8) == struct.pack("<Q", t + 5)
    bad = int(Fstflags.MTIM | Fstflags.MTIM_NOW)
    assert call_path(p, "path_filestat_set_times", "f.txt", 0, 0, bad, flags=0) == Errno.INVAL
    assert call_path(p, "path_filestat_set_times", "missing", t, t, flags, flags=0) == Errno.NOENT


def test_link(p: Pair) -> None:
    src, dst = p.string("f.txt"), p.string("hard")
    assert p.call("path_link", 3, 0, *src, 3, *dst) == 0
    assert call_path(p, "path_filestat_get", "hard", OUT, flags=0) == 0 and p.filestat(OUT)["nlink"] == 2
    assert p.call("path_link", 3, 0, *src, 3, *dst) == Errno.EXIST
    assert p.call("path_link", 3, 0, *p.string("missing"), 3, *p.string("x")) == Errno.NOENT
    assert p.call("path_link", 3, 0, *p.string("sub"), 3, *p.string("subhard")) == Errno.PERM
    assert p.call("path_link", 3, 1, *src, 3, *p.string("followed")) == Errno.INVAL  # SYMLINK_FOLLOW
    assert p.call("path_link", 3, 0, *src, 99, *dst) == Errno.BADF


def test_readlink(p: Pair) -> None:
    assert call_path(p, "path_readlink", "link", BUF, 100, OUT) == 0
    assert p.read(BUF, p.u32(OUT)) == b"f.txt"
    assert call_path(p, "path_readlink", "link", BUF, 3, OUT) == 0 and p.u32(OUT) == 3  # truncated
    assert p.read(BUF, 3) == b"f.t"
    assert call_path(p, "path_readlink", "f.txt", BUF, 100, OUT) == Errno.INVAL
    assert call_path(p, "path_readlink", "missing", BUF, 100, OUT) == Errno.NOENT
    assert call_path(p, "path_readlink", "sub/up", BUF, 100, OUT) == 0  # reading a link is no escape
    assert p.read(BUF, p.u32(OUT)) == b"../.."


def test_rename(p: Pair) -> None:
    a, b = p.string("f.txt"), p.string("g.txt")
    assert p.call("path_rename", 3, *a, 3, *b) == 0
    assert p.call("path_rename", 3, *a, 3, *b) == Errno.NOENT
    assert p.call("path_rename", 3, *b, 3, *p.string("sub/inner.txt")) == 0  # replaces
    assert p.call("path_rename", 3, *p.string("empty"), 3, *p.string("sub")) == Errno.NOTEMPTY
    assert p.call("path_rename", 3, *p.string("sub"), 3, *p.string("empty")) == 0  # onto an empty dir
    assert p.call("path_rename", 3, *p.string("empty"), 3, *p.string("empty/inside")) == Errno.INVAL
    assert p.call("path_rename", 3, *p.string("link"), 3, *p.string("link2")) == 0  # the link itself
    assert p.call("path_rename", 3, *p.string("link2"), 3, *p.string("empty")) == Errno.ISDIR
    assert p.call("path_rename", 3, *p.string("empty"), 3, *p.string("link2")) == Errno.NOTDIR
    assert p.call("path_rename", 3, *p.string("link2"), 99, *b) == Errno.BADF


def test_symlink(p: Pair) -> None:
    t, n = p.string("target"), p.string("newlink")
    assert p.call("path_symlink", *t, 3, *n) == 0
    assert p.call("path_symlink", *t, 3, *n) == Errno.EXIST
    assert p.call("path_symlink", *p.string("/etc"), 3, *p.string("abs")) == Errno.PERM
    assert p.call("path_symlink", *t, 3, *p.string("missing/x")) == Errno.NOENT
    assert p.call("path_symlink", *t, 99, *n) == Errno.BADF
    assert call_path(p, "path_readlink", "newlink", BUF, 100, OUT) == 0
    assert p.read(BUF, p.u32(OUT)) == b"target"


def test_unlink(p: Pair) -> None:
    assert call_path(p, "path_unlink_file", "link") == 0  # removes the link, not f.txt
    assert call_path(p, "path_filestat_get", "f.txt", OUT, flags=0) == 0
    assert call_path(p, "path_unlink_file", "f.txt") == 0
    assert call_path(p, "path_unlink_file", "f.txt") == Errno.NOENT
    assert call_path(p, "path_unlink_file", "sub") == Errno.ISDIR
    assert call_path(p, "path_unlink_file", "sub/inner.txt/") == Errno.NOTDIR
    assert call_path(p, "path_unlink_file", "dirlink") == 0
    assert call_path(p, "path_unlink_file", "x", fd=99) == Errno.BADF


def test_unlinked_open_file_stays_readable(p: Pair) -> None:
    fd = p.open("f.txt")
    assert call_path(p, "path_unlink_file", "f.txt") == 0
    p.iovec(0x300, (BUF, 20))
    assert p.call("fd_read", fd, 0x300, 1, OUT) == 0 and p.read(BUF, p.u32(OUT)) == b"hello world"
    assert p.call("fd_close", fd) == 0


@pytest.mark.parametrize(
    ("oflags", "path"),
    [
        (0, "f.txt"),
        (int(Oflags.CREAT), "new.txt"),
        (int(Oflags.CREAT | Oflags.EXCL), "f.txt"),
        (int(Oflags.CREAT | Oflags.EXCL), "link"),
        (int(Oflags.TRUNC), "f.txt"),
        (int(Oflags.DIRECTORY), "f.txt"),
        (int(Oflags.DIRECTORY), "sub"),
        (0, "missing"),
        (int(Oflags.CREAT), "sub/"),
        (int(Oflags.CREAT), "missing/new"),
        (int(Oflags.CREAT | Oflags.DIRECTORY), "newdir"),
        (0, "dangling"),
        (int(Oflags.CREAT), "dangling"),
        (0, "loop-a"),
    ],
)
@pytest.mark.parametrize("follow", [0, 1])
@pytest.mark.parametrize(
    "rights", [int(Rights.FD_READ | Rights.FD_SEEK), int(Rights.FD_READ | Rights.FD_WRITE)]
)
def test_open_flags(p: Pair, oflags: int, path: str, follow: int, rights: int) -> None:
    p.open(path, oflags=oflags, follow=follow, rights=rights)


def test_open_truncates_and_creates(p: Pair) -> None:
    fd = p.open("f.txt", oflags=int(Oflags.TRUNC))
    assert p.call("fd_filestat_get", fd, OUT) == 0 and p.filestat(OUT)["size"] == 0
    fd2 = p.open("created.txt", oflags=int(Oflags.CREAT))
    assert fd2 > 0
    assert call_path(p, "path_filestat_get", "created.txt", OUT, flags=0) == 0
    assert p.filestat(OUT) == {"filetype": Filetype.REGULAR_FILE, "nlink": 1, "size": 0}


def test_open_errors(p: Pair) -> None:
    fd = p.open("f.txt")
    ptr, n = p.string("x")
    assert p.call("path_open", fd, 0, ptr, n, 0, 0, 0, 0, OUT) == Errno.NOTDIR  # through a file fd
    assert p.call("path_open", 99, 0, ptr, n, 0, 0, 0, 0, OUT) == Errno.BADF
    assert p.call("path_open", 3, 0, *p.string("f\0x"), 0, 0, 0, 0, OUT) == Errno.INVAL
    assert p.h.call("path_open", 3, 0, *p.h.string(b"\xff\xfe"), 0, 0, 0, 0, OUT) == Errno.ILSEQ
    for args in (
        (3, 4, ptr, n, 0, 0, 0, 0, OUT),
        (3, 0, ptr, n, 16, 0, 0, 0, OUT),
        (3, 0, ptr, n, 0, 1 << 31, 0, 0, OUT),
    ):
        assert p.traps("path_open", *args)  # flags or rights witx does not define


def test_rights_are_inherited_and_only_shrink(tmp_path: Path) -> None:
    """A directory opened with few rights gives no more to what is opened through it (witx)."""
    (tmp_path / "t").mkdir()
    tree(tmp_path / "t")
    h = Probe("haven", tmp_path / "h", preopens=[("/", tmp_path / "t")])
    try:
        p, n = h.string("sub")
        inh = int(Rights.FD_READ)
        assert h.call("path_open", 3, 0, p, n, 0, READ_DIR, inh, 0, OUT) == 0
        sub = h.u32(OUT)
        q, m = h.string("inner.txt")
        assert h.call("path_open", sub, 0, q, m, 0, int(Rights.FD_WRITE), 0, 0, OUT) == Errno.NOTCAPABLE
        assert h.call("path_open", sub, 0, q, m, 0, inh, 0, 0, OUT) == 0
        assert h.call("fd_fdstat_get", h.u32(OUT), OUT) == 0 and h.u64(OUT + 8) == inh
        assert h.call("path_open", sub, 0, q, m, int(Oflags.TRUNC), inh, 0, 0, OUT) == Errno.NOTCAPABLE
        r, k = h.string("x")
        assert h.call("path_create_directory", sub, r, k) == Errno.NOTCAPABLE
    finally:
        h.close()


# --- confinement -----------------------------------------------------------------------------------

ESCAPES = [
    "..",
    "../",
    "../etc/passwd",
    "sub/../..",
    "sub/../../etc",
    "./../x",
    "/",
    "/etc/passwd",
    "sub/up",
    "sub/up/etc/passwd",
    "abs",
    "abs/passwd",
    "abs-file",
    "f.txt/x",
    "f.txt/..",
    "dirlink/../../x",
    "sub/up/",
]


def escape_tree(root: Path) -> None:
    tree(root)
    os.symlink("/etc", root / "abs")  # links the guest cannot make itself, made by the host
    os.symlink("/etc/passwd", root / "abs-file")


@pytest.fixture(params=["hostdir", "encrypted"])
def escapes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    pr = (
        pair(tmp_path, escape_tree, encrypted=request.param == "encrypted")
        if request.param == "encrypted"
        else pair(tmp_path, escape_tree)
    )
    yield pr
    pr.close()


@pytest.mark.parametrize("path", ESCAPES)
def test_every_escape_fails_as_in_wasmtime(escapes: Pair, path: str) -> None:
    p = escapes
    errs = set()
    for follow in (0, 1):
        for oflags in (0, int(Oflags.CREAT), int(Oflags.DIRECTORY)):
            fd = p.open(path, follow=follow, oflags=oflags, rights=int(Rights.FD_READ))
            if fd >= 0:
                # Only a file or directory inside the preopen may be opened (e.g. "f.txt/.." is not one).
                assert call_path(p, "path_filestat_get", path, OUT, flags=follow) == 0
            errs.add(-fd if fd < 0 else 0)
        errs.add(call_path(p, "path_filestat_get", path, OUT, flags=follow))
    errs.add(call_path(p, "path_create_directory", path + "/new"))
    errs.add(call_path(p, "path_unlink_file", path + "/passwd"))
    errs.add(call_path(p, "path_remove_directory", path + "/x"))
    errs.add(p.call("path_symlink", *p.string("t"), 3, *p.string(path + "/l")))
    errs.add(p.call("path_link", 3, 0, *p.string("f.txt"), 3, *p.string(path + "/l")))
    errs.add(p.call("path_rename", 3, *p.string("f.txt"), 3, *p.string(path + "/l")))
    errs.add(call_path(p, "path_readlink", path + "/x", BUF, 10, OUT))
    assert errs <= {
        0,
        Errno.PERM,
        Errno.NOENT,
        Errno.NOTDIR,
        Errno.LOOP,
        Errno.EXIST,
        Errno.ISDIR,
        Errno.NOTCAPABLE,
    }


def test_nothing_outside_the_preopen_changed(tmp_path: Path) -> None:
    """After every escape attempt, the directory next to the preopen is untouched."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    root = tmp_path / "root"
    root.mkdir()
    escape_tree(root)
    os.symlink("../outside", root / "rel-out")
    h = Probe("haven", tmp_path / "h", preopens=[("/", root)])
    try:
        for path in [*ESCAPES, "rel-out", "rel-out/secret", "../outside/secret"]:
            for oflags in (0, int(Oflags.CREAT | Oflags.TRUNC)):
                err, _ = h.open(path, oflags=oflags)
                assert err != 0 or not path.startswith(("..", "rel-out", "/")), path
            p, n = h.string(path + "/evil")
            h.call("path_create_directory", 3, p, n)
        assert sorted(os.listdir(outside)) == ["secret"] and (outside / "secret").read_bytes() == b"s"
    finally:
        h.close()


def test_long_names_and_paths(p: Pair) -> None:
    assert p.open("a" * 256, oflags=int(Oflags.CREAT)) == -Errno.NAMETOOLONG
    assert call_path(p, "path_create_directory", "b" * 255) == 0
    assert call_path(p, "path_filestat_get", "x/" * 2100, OUT, flags=0) == Errno.NAMETOOLONG
