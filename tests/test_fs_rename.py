"""rename: the POSIX matrix (kind of source by kind and state of target), atomicity and link counts."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from haven.shield.storage.fs import FileSystem
from tests.fs_support import Image, every_errno, new_image, tree_listing


@pytest.fixture
def img(tmp_path: Path) -> Image:
    return new_image(tmp_path)


@pytest.fixture
def fs(img: Image) -> FileSystem:
    assert img.fs is not None
    return img.fs


def _make(fs: FileSystem, d: int, name: bytes, kind: str, *, full: bool = False) -> int:
    if kind == "file":
        ino = fs.create(d, name)
        fs.write(ino, 0, name * 100)
        return ino
    if kind == "symlink":
        return fs.symlink(d, name, b"somewhere/" + name)
    ino = fs.mkdir(d, name)
    if full:
        fs.create(ino, b"inside")
    return ino


# (source kind, target: None | kind | "full dir") -> errno or 0 for success
MATRIX = [
    ("file", None, 0),
    ("file", "file", 0),
    ("file", "symlink", 0),
    ("file", "dir", errno.EISDIR),
    ("file", "full dir", errno.EISDIR),
    ("symlink", None, 0),
    ("symlink", "file", 0),
    ("symlink", "dir", errno.EISDIR),
    ("dir", None, 0),
    ("dir", "dir", 0),
    ("dir", "full dir", errno.ENOTEMPTY),
    ("dir", "file", errno.ENOTDIR),
    ("dir", "symlink", errno.ENOTDIR),
]


@pytest.mark.parametrize(("src_kind", "dst_kind", "code"), MATRIX)
@pytest.mark.parametrize("across", [False, True], ids=["same-dir", "across-dirs"])
def test_rename_matrix(img: Image, fs: FileSystem, src_kind: str, dst_kind: str | None, code: int,
                       across: bool) -> None:
    a = fs.mkdir(fs.root, b"a")
    b = fs.mkdir(fs.root, b"b") if across else a
    src = _make(fs, a, b"src", src_kind)
    replaced = None
    if dst_kind is not None:
        replaced = _make(fs, b, b"dst", dst_kind.split()[-1], full=dst_kind == "full dir")
    before = tree_listing(fs)
    if code:
        assert every_errno(lambda: fs.rename(a, b"src", b, b"dst")) == code
        assert tree_listing(fs) == before  # a refused rename changes nothing
        img.check()
        return
    fs.rename(a, b"src", b, b"dst")
    assert fs.lookup(b, b"dst") == src
    assert every_errno(lambda: fs.lookup(a, b"src")) == errno.ENOENT
    if replaced is not None:
        assert every_errno(lambda: fs.stat(replaced)) == errno.ENOENT  # its only name was taken
    if src_kind == "dir":
        assert fs.parent(src) == b
    if src_kind == "file":
        assert fs.read(src, 0, 300) == b"src" * 100
    img.check()
    fs = img.remount()
    assert fs.lookup(fs.lookup(fs.root, b"b" if across else b"a"), b"dst") == src
    img.check()


def test_rename_missing_source(fs: FileSystem) -> None:
    assert every_errno(lambda: fs.rename(fs.root, b"nope", fs.root, b"x")) == errno.ENOENT
    f = fs.create(fs.root, b"f")
    assert every_errno(lambda: fs.rename(f, b"x", fs.root, b"y")) == errno.ENOTDIR
    assert every_errno(lambda: fs.rename(fs.root, b"f", f, b"y")) == errno.ENOTDIR
    assert every_errno(lambda: fs.rename(fs.root, b"f", 999, b"y")) == errno.ENOENT


def test_rename_to_itself_does_nothing(img: Image, fs: FileSystem) -> None:
    f = fs.create(fs.root, b"f")
    st = fs.stat(f)
    fs.rename(fs.root, b"f", fs.root, b"f")
    assert fs.stat(f) == st and fs.lookup(fs.root, b"f") == f
    d = fs.mkdir(fs.root, b"d")
    fs.rename(fs.root, b"d", fs.root, b"d")
    assert fs.lookup(fs.root, b"d") == d
    img.check()


def test_rename_between_hard_links_of_one_file_does_nothing(img: Image, fs: FileSystem) -> None:
    f = fs.create(fs.root, b"f")
    fs.link(f, fs.root, b"g")
    fs.rename(fs.root, b"f", fs.root, b"g")  # POSIX: both names stay
    assert fs.lookup(fs.root, b"f") == fs.lookup(fs.root, b"g") == f
    assert fs.stat(f).nlink == 2
    img.check()


def test_rename_over_a_hard_link_of_another_file(img: Image, fs: FileSystem) -> None:
    f = fs.create(fs.root, b"f")
    g = fs.create(fs.root, b"g")
    fs.link(g, fs.root, b"g2")
    fs.rename(fs.root, b"f", fs.root, b"g")
    assert fs.lookup(fs.root, b"g") == f
    assert fs.stat(g).nlink == 1 and fs.lookup(fs.root, b"g2") == g
    img.check()


def test_directory_into_its_own_subtree(img: Image, fs: FileSystem) -> None:
    a = fs.mkdir(fs.root, b"a")
    b = fs.mkdir(a, b"b")
    c = fs.mkdir(b, b"c")
    assert every_errno(lambda: fs.rename(fs.root, b"a", a, b"x")) == errno.EINVAL
    assert every_errno(lambda: fs.rename(fs.root, b"a", c, b"x")) == errno.EINVAL
    assert every_errno(lambda: fs.rename(a, b"b", c, b"x")) == errno.EINVAL
    fs.rename(b, b"c", fs.root, b"c")  # moving up is fine
    assert fs.parent(c) == fs.root
    img.check()


def test_directory_link_counts_follow_moves(img: Image, fs: FileSystem) -> None:
    a = fs.mkdir(fs.root, b"a")
    b = fs.mkdir(fs.root, b"b")
    fs.mkdir(a, b"sub")
    assert (fs.stat(a).nlink, fs.stat(b).nlink) == (3, 2)
    fs.rename(a, b"sub", b, b"sub")
    assert (fs.stat(a).nlink, fs.stat(b).nlink) == (2, 3)
    fs.mkdir(a, b"victim")
    fs.rename(b, b"sub", a, b"victim")  # a dir replaces an empty dir in another parent
    assert (fs.stat(a).nlink, fs.stat(b).nlink) == (3, 2)
    img.check()


def test_replaced_open_file_survives_until_release(img: Image, fs: FileSystem) -> None:
    old = fs.create(fs.root, b"target")
    fs.write(old, 0, b"old contents")
    fs.open(old)
    new = fs.create(fs.root, b"new")
    fs.write(new, 0, b"new contents")
    fs.rename(fs.root, b"new", fs.root, b"target")
    assert fs.read(fs.lookup(fs.root, b"target"), 0, 100) == b"new contents"
    assert fs.read(old, 0, 100) == b"old contents"
    assert img.check().orphans == 1
    fs.release(old)
    assert every_errno(lambda: fs.stat(old)) == errno.ENOENT
    img.check()


def test_rename_keeps_the_target_slot_and_cookie(fs: FileSystem) -> None:
    fs.create(fs.root, b"x")
    fs.create(fs.root, b"y")
    cookies = {e.name: e.next_cookie for e in fs.readdir(fs.root)}
    fs.rename(fs.root, b"x", fs.root, b"y")
    assert [(e.name, e.next_cookie) for e in fs.readdir(fs.root)] == [(b"y", cookies[b"y"])]


def test_rename_is_atomic_across_a_crash(img: Image, fs: FileSystem) -> None:
    f = fs.create(fs.root, b"f")
    fs.write(f, 0, b"data")
    d = fs.mkdir(fs.root, b"d")
    fs.sync()
    fs.rename(fs.root, b"f", d, b"g")
    fs = img.remount(sync=False)  # crash before the rename was synced: the old state, whole
    assert fs.read(fs.lookup(fs.root, b"f"), 0, 4) == b"data"
    assert list(fs.readdir(d)) == []
    img.check()
    fs.rename(fs.root, b"f", d, b"g")
    fs = img.remount()
    assert fs.read(fs.lookup(d, b"g"), 0, 4) == b"data"
    assert every_errno(lambda: fs.lookup(fs.root, b"f")) == errno.ENOENT
    img.check()
