"""File contents: read/write/pread/pwrite/append, holes, truncate, allocate, extents, full images."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest

from haven.shield.storage.fs import FileSystem
from haven.shield.storage.fs.records import EXTENT, MAX_FILE_SIZE, ItemKind, make_key
from tests.fs_support import Image, every_errno, new_image

BS = 4096


@pytest.fixture
def img(tmp_path: Path) -> Image:
    return new_image(tmp_path)


@pytest.fixture
def fs(img: Image) -> FileSystem:
    assert img.fs is not None
    return img.fs


def _extents(fs: FileSystem, ino: int) -> list[tuple[int, int, int]]:
    lo, hi = make_key(ino, ItemKind.EXTENT, 0), make_key(ino, ItemKind.EXTENT + 1, 0)
    return [(k & ((1 << 64) - 1), *EXTENT.unpack(v)[:2]) for k, v in fs.volume.tree.scan(lo, hi)]


def test_write_read_roundtrip_at_every_alignment(img: Image, fs: FileSystem) -> None:
    f = fs.create(fs.root, b"f")
    model = bytearray()
    rng = random.Random(1)
    for _ in range(60):
        off = rng.choice([0, 1, BS - 1, BS, BS + 1, 3 * BS - 7, len(model), rng.randrange(0, 5 * BS)])
        data = os.urandom(rng.choice([1, 7, BS - 1, BS, BS + 1, 2 * BS + 3, rng.randrange(1, 3 * BS)]))
        assert fs.write(f, off, data) == len(data)
        if off > len(model):
            model.extend(bytes(off - len(model)))
        model[off : off + len(data)] = data
        assert fs.stat(f).size == len(model)
        ro = rng.randrange(0, len(model) + 10)
        rl = rng.randrange(0, 3 * BS)
        assert fs.read(f, ro, rl) == bytes(model[ro : ro + rl])
    assert fs.read(f, 0, len(model) + 100) == bytes(model)
    fs = img.remount()
    assert fs.read(f, 0, len(model)) == bytes(model)
    img.check()


def test_append_is_a_write_at_the_size(fs: FileSystem) -> None:
    f = fs.create(fs.root, b"log")
    for i in range(100):
        fs.write(f, fs.stat(f).size, b"line %d\n" % i)
    assert fs.read(f, 0, 10_000) == b"".join(b"line %d\n" % i for i in range(100))


def test_reads_past_the_end_and_empty(fs: FileSystem) -> None:
    f = fs.create(fs.root, b"f")
    assert fs.read(f, 0, 100) == b""
    fs.write(f, 0, b"abc")
    assert fs.read(f, 3, 10) == b""
    assert fs.read(f, 1000, 10) == b""
    assert fs.read(f, 1, 0) == b""
    assert fs.write(f, 5, b"") == 0 and fs.stat(f).size == 3
    assert every_errno(lambda: fs.read(f, -1, 1)) == errno.EINVAL
    assert every_errno(lambda: fs.read(f, 0, -1)) == errno.EINVAL
    assert every_errno(lambda: fs.write(f, -1, b"x")) == errno.EINVAL


def test_data_calls_on_directories(fs: FileSystem) -> None:
    d = fs.mkdir(fs.root, b"d")
    for op in (lambda: fs.read(d, 0, 1), lambda: fs.write(d, 0, b"x"), lambda: fs.truncate(d, 0),
               lambda: fs.allocate(d, 0, 1)):
        assert every_errno(op) == errno.EISDIR
    for op in (lambda: fs.read(999, 0, 1), lambda: fs.write(999, 0, b"x"), lambda: fs.truncate(999, 0)):
        assert every_errno(op) == errno.ENOENT


def test_holes_read_as_zeros_and_take_no_blocks(img: Image, fs: FileSystem) -> None:
    f = fs.create(fs.root, b"sparse")
    free = fs.statfs().blocks_free
    fs.write(f, 10 * BS + 5, b"tail")
    assert fs.stat(f).size == 10 * BS + 9
    assert fs.read(f, 0, 10 * BS + 9) == bytes(10 * BS + 5) + b"tail"
    assert free - fs.statfs().blocks_free <= 2  # one data block (and maybe a tree node)
    assert [e[0] for e in _extents(fs, f)] == [10]
    img.check()


def test_large_sparse_file(img: Image, fs: FileSystem) -> None:
    f = fs.create(fs.root, b"huge")
    far = 1 << 40  # 1 TiB into a 16 MiB image
    fs.write(f, far, b"end")
    fs.write(f, 12345, b"start")
    assert fs.stat(f).size == far + 3
    assert fs.read(f, far - 2, 10) == b"\0\0end"
    assert fs.read(f, 12340, 12) == b"\0" * 5 + b"start" + b"\0\0"
    assert fs.read(f, 1 << 30, 8192) == bytes(8192)
    fs.truncate(f, far // 2)
    assert fs.read(f, 12345, 5) == b"start" and fs.stat(f).size == far // 2
    fs.truncate(f, MAX_FILE_SIZE)
    assert fs.stat(f).size == MAX_FILE_SIZE
    assert every_errno(lambda: fs.write(f, MAX_FILE_SIZE - 1, b"xy")) == errno.EFBIG
    assert every_errno(lambda: fs.truncate(f, MAX_FILE_SIZE + 1)) == errno.EFBIG
    fs = img.remount()
    assert fs.read(f, 12345, 5) == b"start"
    img.check()


def test_sequential_writes_make_one_extent(img: Image, fs: FileSystem) -> None:
    f = fs.create(fs.root, b"seq")
    chunk = os.urandom(64 * 1024)
    for i in range(32):  # 2 MiB in 64 KiB calls
        fs.write(f, i * len(chunk), chunk)
    assert len(_extents(fs, f)) == 1
    assert _extents(fs, f)[0][2] == 512
    assert fs.read(f, 5 * len(chunk) + 3, 10) == chunk[3:13]
    img.check()


def test_interleaved_files_stay_correct(img: Image, fs: FileSystem) -> None:
    a, b = fs.create(fs.root, b"a"), fs.create(fs.root, b"b")
    for i in range(20):
        fs.write(a, i * BS, bytes([i]) * BS)
        fs.write(b, i * BS, bytes([100 + i]) * BS)
    for i in range(20):
        assert fs.read(a, i * BS, BS) == bytes([i]) * BS
        assert fs.read(b, i * BS, BS) == bytes([100 + i]) * BS
    img.check()


def test_truncate_shrinks_frees_and_zeroes_the_tail(img: Image, fs: FileSystem) -> None:
    f = fs.create(fs.root, b"f")
    fs.write(f, 0, b"\xaa" * (10 * BS))
    free = fs.statfs().blocks_free
    fs.truncate(f, 3 * BS + 100)
    assert fs.stat(f).size == 3 * BS + 100
    assert fs.statfs().blocks_free - free == 6
    fs.truncate(f, 5 * BS)  # growing again must show zeros, not the old bytes
    assert fs.read(f, 3 * BS + 99, 3) == b"\xaa\0\0"
    assert fs.read(f, 3 * BS + 100, 2 * BS) == bytes(2 * BS - 100)
    fs.truncate(f, 0)
    assert fs.stat(f).size == 0 and _extents(fs, f) == []
    assert every_errno(lambda: fs.truncate(f, -1)) == errno.EINVAL
    img.check()


def test_truncate_inside_an_extent_and_past_a_hole(img: Image, fs: FileSystem) -> None:
    f = fs.create(fs.root, b"f")
    fs.write(f, 0, b"a" * (4 * BS))
    fs.write(f, 10 * BS, b"b" * (4 * BS))
    fs.truncate(f, 12 * BS - 1)
    assert fs.read(f, 10 * BS, 2 * BS) == b"b" * (2 * BS - 1)
    fs.truncate(f, 7 * BS)
    assert [e[0] for e in _extents(fs, f)] == [0]
    fs.truncate(f, 2 * BS)
    assert _extents(fs, f)[0][2] == 2
    img.check()


def test_allocate(img: Image, fs: FileSystem) -> None:
    f = fs.create(fs.root, b"f")
    fs.write(f, 0, b"keep")
    free = fs.statfs().blocks_free
    fs.allocate(f, 2, 8 * BS)
    assert fs.stat(f).size == 8 * BS + 2
    assert free - fs.statfs().blocks_free >= 8
    assert fs.read(f, 0, 6) == b"keep\0\0"
    assert fs.read(f, 8 * BS - 10, 12) == bytes(12)
    fs.allocate(f, 0, 10)  # inside the file: the size stays
    assert fs.stat(f).size == 8 * BS + 2
    assert every_errno(lambda: fs.allocate(f, 0, 0)) == errno.EINVAL
    assert every_errno(lambda: fs.allocate(f, -1, 5)) == errno.EINVAL
    assert every_errno(lambda: fs.allocate(f, MAX_FILE_SIZE, 5)) == errno.EFBIG
    img.check()


def test_allocate_is_all_or_nothing(tmp_path: Path) -> None:
    img = new_image(tmp_path, 256)
    fs = img.fs
    assert fs is not None
    f = fs.create(fs.root, b"f")
    free = fs.statfs().blocks_free
    assert every_errno(lambda: fs.allocate(f, 0, 1000 * BS)) == errno.ENOSPC
    assert fs.statfs().blocks_free == free and fs.stat(f).size == 0
    img.check()


def test_a_full_image_gives_short_writes_then_enospc(tmp_path: Path) -> None:
    img = new_image(tmp_path, 256)
    fs = img.fs
    assert fs is not None
    f = fs.create(fs.root, b"f")
    data = os.urandom(2 << 20)
    n = fs.write(f, 0, data)
    assert 0 < n < len(data) and n % BS == 0
    assert fs.stat(f).size == n
    full = fs
    assert every_errno(lambda: full.write(f, n, b"more")) == errno.ENOSPC
    # Nothing was half done: the file holds exactly what write() reported, and everything checks.
    assert fs.read(f, 0, n) == data[:n]
    img.check()
    fs = img.remount()
    assert fs.read(f, 0, n) == data[:n]
    # Freeing space makes room again.
    fs.truncate(f, 0)
    assert fs.write(f, 0, b"again") == 5
    img.check()


def test_a_full_image_refuses_new_names_cleanly(tmp_path: Path) -> None:
    img = new_image(tmp_path, 256)
    fs = img.fs
    assert fs is not None
    made = 0
    with pytest.raises(Exception) as info:
        for i in range(100_000):
            fs.create(fs.root, b"file-with-a-long-name-%06d" % i)
            made += 1
    assert getattr(info.value, "errno", None) == errno.ENOSPC
    assert len(list(fs.readdir(fs.root))) == made
    img.check()
    fs = img.remount()
    assert len(list(fs.readdir(fs.root))) == made
    img.check()


def test_unlink_frees_every_block(img: Image, fs: FileSystem) -> None:
    free = fs.statfs().blocks_free
    for i in range(10):
        f = fs.create(fs.root, b"f%d" % i)
        fs.write(f, 0, os.urandom(i * BS + 1))
    for i in range(10):
        fs.unlink(fs.root, b"f%d" % i)
    assert fs.statfs().blocks_free == free
    img.check()


def test_running_out_of_physical_room_gives_exact_short_writes(tmp_path: Path) -> None:
    """Rewriting a nearly full image needs fresh physical blocks (copy-on-write): when the store has
    none, write() reports exactly what it wrote, and fsync still commits it (the store holds part of its
    reserve back from rewrites, for the metadata the commit writes)."""
    img = new_image(tmp_path, 512)
    fs = img.fs
    assert fs is not None
    f = fs.create(fs.root, b"f")
    old = os.urandom(4 << 20)
    n = fs.write(f, 0, old)
    fs.sync()
    new = os.urandom(n)
    m = fs.write(f, 0, new)
    assert 0 < m < n
    assert fs.read(f, 0, n) == new[:m] + old[m:n]  # exactly the reported bytes changed
    img.check()
    fs.sync()
    img.check()
    fs = img.remount()
    img.check()
    assert fs.stat(f).size == n
    assert fs.read(f, 0, n) == new[:m] + old[m:n]
