"""Runs of at least a store window start on a window boundary when one is free, so a large file's data
is sealed and read as whole segments; shorter runs and hinted runs are placed as before."""

from __future__ import annotations

import os
from pathlib import Path

from haven.shield.storage.fs.alloc import Bitmap
from haven.shield.storage.layout import MAX_SPAN
from tests.fs_support import Image

BS = 4096


def test_a_long_run_starts_on_a_window() -> None:
    bm = Bitmap.fresh(10_000, BS, 3)  # blocks 0..2 used: the first free block is not aligned
    assert bm.allocate(4) == (3, 4)  # short: first fit from the cursor
    start, count = bm.allocate(100)
    assert start % MAX_SPAN == 0 and count == 100
    assert bm.allocate(5, hint=start + 100) == (start + 100, 5)  # a hint is followed, aligned or not


def test_the_window_search_skips_windows_with_a_used_block_and_falls_back() -> None:
    bm = Bitmap.fresh(64, BS, 0)
    for lba in (5, 20, 40, 60):  # every aligned window of 16 has a used block
        bm.mark_used(lba, 1)
    start, count = bm.allocate(16)
    assert (start, count) == (0, 5)  # no aligned window free: the first free run, as before
    bm = Bitmap.fresh(64, BS, 0)
    for lba in (5, 20, 60):
        bm.mark_used(lba, 1)
    assert bm.allocate(16) == (32, 16)


def test_a_large_file_is_read_as_whole_segments(tmp_path: Path) -> None:
    img = Image(tmp_path / "img", os.urandom(32), 8192)
    fs = img.format()
    small = fs.create(fs.root, b"small")
    fs.write(small, 0, b"x" * 5000)  # 2 blocks: moves the allocation cursor off a window boundary
    big = fs.create(fs.root, b"big")
    data = os.urandom(64 * BS)
    fs.write(big, 0, data)
    fs.sync()
    assert img.store is not None
    lba = next(lba for lba in range(img.store.capacity) if img.store.read(lba) == data[:BS])
    assert lba % MAX_SPAN == 0
    img.close()
    fs = img.mount()
    assert fs.read(fs.resolve("/big"), 0, len(data)) == data
