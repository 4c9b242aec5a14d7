"""A file system mounted read-only: every change refused with EROFS, nothing written, orphans left alone.

The store sits on a FileBlockDevice opened read-only (a shared lock), as ``haven image ls/get/check/info``
open images. The image file is hashed before and after: a read-only mount must not change one byte.
"""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from haven.shield.storage.counter import FileCounter
from haven.shield.storage.device import FileBlockDevice
from haven.shield.storage.errors import StorageError
from haven.shield.storage.fs import FileSystem, FsError
from haven.shield.storage.fs.fsck import check as fsck
from haven.shield.storage.store import SecureStore
from tests.fs_support import Image, new_image


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Mounted:
    """One mount of an image (read-only or not) on its own device."""

    dev: FileBlockDevice
    store: SecureStore
    fs: FileSystem

    def close(self) -> None:
        self.store.close()
        self.dev.close()


def _mount(img: Image, *, writable: bool) -> Mounted:
    dev = FileBlockDevice.open(img.path, writable=writable)
    store = SecureStore.mount(dev, img.key, FileCounter(img.counter_path))
    return Mounted(dev, store, FileSystem.mount(store, writable=writable))


@dataclass
class Sample:
    """An image holding a directory, a file, a symlink and an empty directory; closed, not mounted."""

    img: Image
    d: int
    f: int
    link: int
    empty: int


@pytest.fixture
def sample(tmp_path: Path) -> Iterator[Sample]:
    img = new_image(tmp_path, 2048)
    fs = img.fs
    assert fs is not None
    d = fs.mkdir(fs.root, b"d")
    f = fs.create(d, b"f")
    fs.write(f, 0, b"contents" * 1000)
    link = fs.symlink(d, b"link", b"f")
    empty = fs.mkdir(fs.root, b"empty")
    fs.sync()
    img.close()
    yield Sample(img, d, f, link, empty)


def _changes(s: Sample) -> dict[str, Callable[[FileSystem], object]]:
    """One call of every kind that changes a file system."""
    return {
        "create": lambda fs: fs.create(s.d, b"new"),
        "create-not-exclusive": lambda fs: fs.create(s.d, b"new", exclusive=False),
        "mkdir": lambda fs: fs.mkdir(s.d, b"newdir"),
        "symlink": lambda fs: fs.symlink(s.d, b"newlink", b"f"),
        "link": lambda fs: fs.link(s.f, s.d, b"hard"),
        "unlink": lambda fs: fs.unlink(s.d, b"f"),
        "unlink-symlink": lambda fs: fs.unlink(s.d, b"link"),
        "rmdir": lambda fs: fs.rmdir(fs.root, b"empty"),
        "rename": lambda fs: fs.rename(s.d, b"f", fs.root, b"moved"),
        "rename-over": lambda fs: fs.rename(s.d, b"link", s.d, b"f"),
        "write": lambda fs: fs.write(s.f, 0, b"x"),
        "append": lambda fs: fs.write(s.f, fs.stat(s.f).size, b"more"),
        "write-nothing": lambda fs: fs.write(s.f, 0, b""),
        "truncate-shrink": lambda fs: fs.truncate(s.f, 3),
        "truncate-grow": lambda fs: fs.truncate(s.f, 1 << 20),
        "allocate": lambda fs: fs.allocate(s.f, 0, 1 << 16),
        "set_times": lambda fs: fs.set_times(s.f, 1, 2),
        "set_times-dir": lambda fs: fs.set_times(s.d, None, 5),
        "makedirs": lambda fs: fs.makedirs("/d/x/y"),
    }


CHANGES = [
    "create", "create-not-exclusive", "mkdir", "symlink", "link", "unlink", "unlink-symlink", "rmdir",
    "rename", "rename-over", "write", "append", "write-nothing", "truncate-shrink", "truncate-grow",
    "allocate", "set_times", "set_times-dir", "makedirs",
]  # fmt: skip


def test_every_change_is_listed(sample: Sample) -> None:
    assert sorted(_changes(sample)) == sorted(CHANGES)


@pytest.mark.parametrize("what", CHANGES)
def test_each_change_is_refused_with_erofs_and_nothing_is_written(sample: Sample, what: str) -> None:
    before = _digest(sample.img.path)
    m = _mount(sample.img, writable=False)
    try:
        listing = sorted(e.name for e in m.fs.readdir(sample.d))
        with pytest.raises(FsError) as caught:
            _changes(sample)[what](m.fs)
        assert caught.value.errno == errno.EROFS
        assert "read-only" in str(caught.value)
        # Refused before anything changed, even in memory: the tree reads as it did.
        assert sorted(e.name for e in m.fs.readdir(sample.d)) == listing
        assert m.fs.read(sample.f, 0, 8) == b"contents"
        assert m.fs.sync() == m.store.version  # nothing to commit
        assert not m.store.dirty()
        fsck(m.fs)
    finally:
        m.close()
    assert _digest(sample.img.path) == before


@pytest.mark.parametrize("what", CHANGES)
def test_each_change_works_on_a_writable_mount(sample: Sample, what: str) -> None:
    """The same calls are valid ones: the refusal above is the read-only mount's, not the call's."""
    m = _mount(sample.img, writable=True)
    try:
        _changes(sample)[what](m.fs)
        m.fs.sync()
        fsck(m.fs)
    finally:
        m.close()


def test_reading_works_and_changes_nothing(sample: Sample) -> None:
    before = _digest(sample.img.path)
    m = _mount(sample.img, writable=False)
    try:
        fs = m.fs
        assert fs.resolve("/d/link") == sample.f
        assert fs.read(sample.f, 0, 1 << 20) == b"contents" * 1000
        assert fs.readlink(sample.link) == b"f"
        assert fs.stat(sample.d).kind == "dir" and fs.statfs().files == 5
        assert fs.create(sample.d, b"f", exclusive=False) == sample.f  # open of an existing file
        fs.open(sample.f)
        fs.release(sample.f)
        assert fsck(fs).files == 1
    finally:
        m.close()
    assert _digest(sample.img.path) == before


def test_the_store_below_refuses_writes_too(sample: Sample) -> None:
    """Defence in depth: a read-only device's store refuses a write the file system let through."""
    m = _mount(sample.img, writable=False)
    try:
        with pytest.raises(StorageError, match="read-only"):
            m.store.write(0, bytes(m.store.block_size))
    finally:
        m.close()


def _orphaned(tmp_path: Path) -> tuple[Image, int]:
    """An image whose last commit holds an orphan: a file unlinked while open, never released."""
    img = new_image(tmp_path, 2048)
    fs = img.fs
    assert fs is not None
    ino = fs.create(fs.root, b"doomed")
    fs.write(ino, 0, b"still here" * 500)
    fs.open(ino)
    fs.unlink(fs.root, b"doomed")
    fs.sync()
    img.close()  # the process "dies" with the file open
    return img, ino


def test_orphans_survive_a_read_only_mount_and_the_next_writable_one_reclaims_them(tmp_path: Path) -> None:
    img, ino = _orphaned(tmp_path)
    before = _digest(img.path)
    for _ in range(2):
        m = _mount(img, writable=False)
        try:
            free_read_only = m.fs.statfs().blocks_free
            report = fsck(m.fs)  # an orphan is a valid state: fsck accepts it
            assert report.orphans == 1 and report.files == 1
            assert m.fs.volume.header.orphan_count == 1
            assert m.fs.read(ino, 0, 10) == b"still here"  # its blocks are still its own
            m.fs.open(ino)
            m.fs.release(ino)  # the last release on a read-only mount does not reclaim it
            assert fsck(m.fs).orphans == 1
        finally:
            m.close()
        assert _digest(img.path) == before

    m = _mount(img, writable=True)
    try:
        free_before_sync = m.fs.statfs().blocks_free
        assert free_before_sync > free_read_only  # the orphan's blocks came back
        report = fsck(m.fs)
        assert report.orphans == 0 and report.files == 0  # reclaimed at mount
        with pytest.raises(FsError) as caught:
            m.fs.stat(ino)
        assert caught.value.errno == errno.ENOENT
        m.fs.sync()
        assert m.fs.statfs().blocks_free == free_before_sync
    finally:
        m.close()
    m = _mount(img, writable=False)
    try:
        assert fsck(m.fs).orphans == 0  # the reclaim was committed
    finally:
        m.close()


def test_a_writable_mount_without_sync_leaves_the_orphan_on_disk(tmp_path: Path) -> None:
    """The reclaim at mount is in memory until the next sync (the image tools' commit=False case)."""
    img, _ = _orphaned(tmp_path)
    _mount(img, writable=True).close()
    m = _mount(img, writable=False)
    try:
        assert fsck(m.fs).orphans == 1
    finally:
        m.close()


def test_read_only_mounts_share_the_image_and_exclude_a_writer(sample: Sample) -> None:
    first = _mount(sample.img, writable=False)
    second = _mount(sample.img, writable=False)
    try:
        assert first.fs.read(sample.f, 0, 8) == second.fs.read(sample.f, 0, 8) == b"contents"
        with pytest.raises(StorageError, match="in use by another process"):
            FileBlockDevice.open(sample.img.path, writable=True)
    finally:
        first.close()
        second.close()
    writer = _mount(sample.img, writable=True)
    try:
        with pytest.raises(StorageError, match="in use by another process"):
            FileBlockDevice.open(sample.img.path, writable=False)
    finally:
        writer.close()
