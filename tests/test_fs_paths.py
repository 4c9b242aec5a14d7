"""Path helpers for the owner's tools: resolve (with symlinks, '.', '..', ELOOP), makedirs, split_parent."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from haven.shield.storage.fs import FileSystem
from tests.fs_support import Image, every_errno, new_image


@pytest.fixture
def img(tmp_path: Path) -> Image:
    return new_image(tmp_path)


@pytest.fixture
def fs(img: Image) -> FileSystem:
    assert img.fs is not None
    return img.fs


def test_resolve_walks_names_dots_and_symlinks(fs: FileSystem) -> None:
    a = fs.mkdir(fs.root, b"a")
    b = fs.mkdir(a, b"b")
    f = fs.create(b, b"f.txt")
    fs.symlink(fs.root, b"rel", b"a/b")
    fs.symlink(b, b"abs", b"/a")
    fs.symlink(b, b"up", b"../b/f.txt")
    assert fs.resolve("/") == fs.root == fs.resolve("") == fs.resolve("//")
    assert fs.resolve("/a/b/f.txt") == f == fs.resolve("a//b/./f.txt")
    assert fs.resolve("/a/b/../b/f.txt") == f
    assert fs.resolve("/..") == fs.root
    assert fs.resolve("/rel/f.txt") == f
    assert fs.resolve("/rel/abs/b") == b
    assert fs.resolve("/a/b/up") == f
    link = fs.resolve("/a/b/up", follow=False)
    assert fs.stat(link).kind == "symlink"
    assert fs.resolve("/rel", follow=False) != b and fs.resolve("/rel") == b


def test_resolve_refusals(fs: FileSystem) -> None:
    f = fs.create(fs.root, b"f")
    fs.symlink(fs.root, b"loop1", b"loop2")
    fs.symlink(fs.root, b"loop2", b"loop1")
    fs.symlink(fs.root, b"dangling", b"nowhere")
    assert every_errno(lambda: fs.resolve("/missing")) == errno.ENOENT
    assert every_errno(lambda: fs.resolve("/f/x")) == errno.ENOTDIR
    assert every_errno(lambda: fs.resolve("/loop1")) == errno.ELOOP
    assert every_errno(lambda: fs.resolve("/dangling")) == errno.ENOENT
    assert fs.stat(fs.resolve("/dangling", follow=False)).kind == "symlink"
    assert every_errno(lambda: fs.resolve("/" + "x" * 300)) == errno.ENAMETOOLONG
    assert fs.resolve("/f") == f


def test_names_that_are_not_utf8_round_trip(fs: FileSystem) -> None:
    raw = b"caf\xe9"  # Latin-1, not UTF-8: a host directory may hold such names
    ino = fs.create(fs.root, raw)
    text = raw.decode("utf-8", "surrogateescape")
    assert fs.resolve("/" + text) == ino
    assert fs.split_parent("/" + text) == (fs.root, raw)


def test_makedirs(img: Image, fs: FileSystem) -> None:
    c = fs.makedirs("/a/b/c")
    assert fs.resolve("/a/b/c") == c and fs.stat(c).kind == "dir"
    assert fs.makedirs("a/b/c") == c  # existing: nothing new
    assert fs.makedirs("/a/./b/../b/c/d") == fs.resolve("/a/b/c/d")
    fs.symlink(fs.root, b"via", b"a/b")
    assert fs.makedirs("/via/e") == fs.resolve("/a/b/e")
    fs.create(fs.resolve("/a"), b"file")
    assert every_errno(lambda: fs.makedirs("/a/file/x")) == errno.ENOTDIR
    assert every_errno(lambda: fs.makedirs("/a/file")) == errno.ENOTDIR
    assert fs.makedirs("/") == fs.root
    img.check()


def test_split_parent(fs: FileSystem) -> None:
    d = fs.makedirs("/x/y")
    assert fs.split_parent("/x/y/new") == (d, b"new")
    assert fs.split_parent("top") == (fs.root, b"top")
    assert every_errno(lambda: fs.split_parent("/")) == errno.EINVAL
    assert every_errno(lambda: fs.split_parent("/x/..")) == errno.EINVAL
    assert every_errno(lambda: fs.split_parent("/nope/new")) == errno.ENOENT
    fs.create(d, b"f")
    assert every_errno(lambda: fs.split_parent("/x/y/f/new")) == errno.ENOTDIR
