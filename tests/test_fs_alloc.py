"""The free-space bitmap: runs, hints, wrap-around, full images, double frees, the tail past capacity."""

from __future__ import annotations

import errno

import pytest

from haven.shield.storage.fs.alloc import Bitmap, bitmap_blocks_for
from haven.shield.storage.fs.errors import FsCorruptError, FsError

BS = 4096


@pytest.mark.parametrize("capacity", [9, 453, 32768, 32769, 100_000])
def test_fresh_bitmaps_round_trip_and_fill_exactly(capacity: int) -> None:
    bm = Bitmap.fresh(capacity, BS, 3)
    assert bm.used == 3 and bm.free == capacity - 3
    assert len(bm.bits) == bitmap_blocks_for(capacity, BS) * BS
    blocks = [bytes(bm.bits[i * BS : (i + 1) * BS]) for i in range(len(bm.bits) // BS)]
    again = Bitmap.from_blocks(blocks, capacity, BS)
    assert again.used == 3
    got: set[int] = set()
    while bm.free:
        start, count = bm.allocate(777)
        assert 1 <= count <= 777
        got.update(range(start, start + count))
    assert got == set(range(3, capacity))  # every block once, none past capacity
    with pytest.raises(FsError) as info:
        bm.allocate(1)
    assert info.value.errno == errno.ENOSPC


def test_runs_follow_the_hint_and_stop_at_used_blocks() -> None:
    bm = Bitmap.fresh(1000, BS, 1)
    assert bm.allocate(10) == (1, 10)
    bm.mark_used(20, 1)
    assert bm.allocate(100, hint=11) == (11, 9)  # stops before the used block 20
    assert bm.allocate(5, hint=15) == (21, 5)  # hint taken: allocation goes on from the cursor
    assert bm.allocate(4, hint=500) == (500, 4)
    bm.release(1, 10)
    assert bm.allocate(3, hint=None)[0] == 504  # the cursor moves on...
    bm.mark_used(504, 496)
    assert bm.allocate(3) == (1, 3)  # ...and wraps round to the start


def test_double_free_and_out_of_range_are_corruption() -> None:
    bm = Bitmap.fresh(100, BS, 1)
    start, _ = bm.allocate(1)
    bm.release(start, 1)
    with pytest.raises(FsCorruptError, match="not in use"):
        bm.release(start, 1)
    with pytest.raises(FsCorruptError, match="not in use"):
        bm.release(150, 1)


def test_a_clear_bit_past_capacity_is_refused() -> None:
    bm = Bitmap.fresh(453, BS, 1)
    bits = bytearray(bm.bits)
    bits[453 >> 3] &= ~(1 << 7) & 0xFF  # bit 455
    with pytest.raises(FsCorruptError, match="past the image's capacity"):
        Bitmap.from_blocks([bytes(bits)], 453, BS)
    bits = bytearray(bm.bits)
    bits[-1] = 0
    with pytest.raises(FsCorruptError, match="past the image's capacity"):
        Bitmap.from_blocks([bytes(bits)], 453, BS)


def test_only_changed_bitmap_blocks_are_written_back() -> None:
    bm = Bitmap.fresh(3 * BS * 8, BS, 4)
    assert [i for i, _ in bm.dirty_blocks()] == [0, 1, 2]
    for i in range(3):
        bm.written(i)
    bm.mark_used(BS * 8 + 5, 1)
    assert [i for i, _ in bm.dirty_blocks()] == [1]
