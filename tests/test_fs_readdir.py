"""readdir: stable cookies across inserts and deletes, slot collisions, large directories."""

from __future__ import annotations

import errno
import random
from pathlib import Path

import pytest

from haven.shield.storage.fs import FileSystem
from haven.shield.storage.fs.dirs import Directories
from haven.shield.storage.fs.records import FIRST_COOKIE
from tests.fs_support import Image, every_errno, new_image


@pytest.fixture
def img(tmp_path: Path) -> Image:
    return new_image(tmp_path, 8192)


@pytest.fixture
def fs(img: Image) -> FileSystem:
    assert img.fs is not None
    return img.fs


def test_entries_carry_kind_ino_and_cookies(fs: FileSystem) -> None:
    f = fs.create(fs.root, b"f")
    d = fs.mkdir(fs.root, b"d")
    s = fs.symlink(fs.root, b"s", b"f")
    entries = list(fs.readdir(fs.root))
    assert {(e.name, e.ino, e.kind) for e in entries} == {(b"f", f, "file"), (b"d", d, "dir"),
                                                          (b"s", s, "symlink")}
    cookies = [e.next_cookie for e in entries]
    assert cookies == sorted(cookies) and min(cookies) >= FIRST_COOKIE  # 0..2**16 are the caller's
    # Resuming after each cookie returns exactly the rest.
    for i, c in enumerate(cookies):
        assert list(fs.readdir(fs.root, c)) == entries[i + 1 :]
    assert list(fs.readdir(fs.root, 1)) == entries  # a cookie below the first slot: from the start
    assert list(fs.readdir(fs.root, (1 << 64) - 1)) == []


def test_readdir_refusals(fs: FileSystem) -> None:
    f = fs.create(fs.root, b"f")
    assert every_errno(lambda: fs.readdir(f)) == errno.ENOTDIR
    assert every_errno(lambda: fs.readdir(999)) == errno.ENOENT
    assert every_errno(lambda: fs.readdir(fs.root, -1)) == errno.EINVAL
    assert every_errno(lambda: fs.readdir(fs.root, 1 << 64)) == errno.EINVAL


def test_cookies_survive_interleaved_inserts_and_deletes(img: Image, fs: FileSystem) -> None:
    """Resume from a cookie after deletes and inserts: every entry present throughout comes back once."""
    rng = random.Random(7)
    d = fs.mkdir(fs.root, b"d")
    live = {b"n%d" % i for i in range(1500)}
    for name in live:
        fs.create(d, name)
    stable = set(rng.sample(sorted(live), 500))  # these are never touched while we list
    seen: list[bytes] = []
    cookie = 0
    counter = 1500
    while True:
        page = []
        for entry in fs.readdir(d, cookie):
            page.append(entry)
            if len(page) == 37:
                break
        if not page:
            break
        seen.extend(e.name for e in page)
        cookie = page[-1].next_cookie
        # Between pages: remove some entries (never the stable ones) and add new ones.
        for name in rng.sample(sorted(live - stable), min(20, len(live - stable))):
            fs.unlink(d, name)
            live.discard(name)
        for _ in range(20):
            name = b"n%d" % counter
            counter += 1
            fs.create(d, name)
            live.add(name)
        if rng.random() < 0.1:
            fs = img.remount()  # cookies are part of the image: they survive a remount too
    assert len(seen) == len(set(seen)), "an entry came back twice"
    assert stable <= set(seen), "an entry present throughout was skipped"
    img.check()


def test_an_entry_keeps_its_cookie_while_it_exists(img: Image, fs: FileSystem) -> None:
    names = [b"k%d" % i for i in range(300)]
    for n in names:
        fs.create(fs.root, n)
    before = {e.name: e.next_cookie for e in fs.readdir(fs.root)}
    for n in names[::3]:
        fs.unlink(fs.root, n)
    for i in range(300, 500):
        fs.create(fs.root, b"k%d" % i)
    fs = img.remount()
    after = {e.name: e.next_cookie for e in fs.readdir(fs.root)}
    for n in names:
        if n in after:
            assert after[n] == before[n]


def test_slot_collisions_probe_and_still_resolve(
    img: Image, fs: FileSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Force every name onto one home slot: lookups, listings and removals stay exact."""
    d = fs.mkdir(fs.root, b"d")
    # The hash is keyed and 63 bits wide: collisions have to be made.
    real = Directories.home
    monkeypatch.setattr(
        Directories, "home", lambda self, name: FIRST_COOKIE + 1000 if name[:1] == b"c" else real(self, name)
    )
    inos = {b"c%d" % i: fs.create(d, b"c%d" % i) for i in range(40)}
    assert fs.volume.inode(d).max_probe == 39
    for name, ino in inos.items():
        assert fs.lookup(d, name) == ino
    assert every_errno(lambda: fs.create(d, b"c7")) == errno.EEXIST
    for i in range(0, 40, 2):  # leave gaps in the probe chain
        fs.unlink(d, b"c%d" % i)
    for i in range(1, 40, 2):
        assert fs.lookup(d, b"c%d" % i) == inos[b"c%d" % i]
    assert every_errno(lambda: fs.lookup(d, b"c0")) == errno.ENOENT
    again = fs.create(d, b"c0")  # takes the first free slot of the chain
    assert fs.lookup(d, b"c0") == again
    assert sorted(e.name for e in fs.readdir(d)) == sorted([b"c0"] + [b"c%d" % i for i in range(1, 40, 2)])
    img.check()
    fs = img.remount()
    assert fs.lookup(d, b"c39") == inos[b"c39"]


def test_ten_thousand_entries(img: Image, fs: FileSystem) -> None:
    d = fs.mkdir(fs.root, b"big")
    names = [b"file-%05d.txt" % i for i in range(10_000)]
    inos = [fs.create(d, n) for n in names]
    assert fs.stat(d).size == 10_000
    entries = list(fs.readdir(d))
    assert sorted(e.name for e in entries) == sorted(names)
    fs = img.remount()
    for n, ino in zip(names[::97], inos[::97], strict=True):
        assert fs.lookup(d, n) == ino
    for n in names[::2]:
        fs.unlink(d, n)
    assert len(list(fs.readdir(d))) == 5000
    report = img.check()
    assert report.files == 5000
    fs = img.remount()
    assert len(list(fs.readdir(d))) == 5000
    img.check()


@pytest.mark.soak
def test_hundred_thousand_entries(tmp_path: Path) -> None:
    img = new_image(tmp_path, 65536)
    fs = img.fs
    assert fs is not None
    d = fs.mkdir(fs.root, b"big")
    for i in range(100_000):
        fs.create(d, b"f%06d" % i)
    fs = img.remount()
    assert sum(1 for _ in fs.readdir(d)) == 100_000
    assert fs.lookup(d, b"f099999") > 0
    assert img.check().files == 100_000
