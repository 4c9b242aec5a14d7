"""The free-space bitmap: which logical blocks of the store hold file-system data.

One bit per logical block, least significant bit first (block ``i`` is bit ``i % 8`` of byte ``i // 8``),
set when the block is in use; bits past the store's capacity are set so they are never handed out.
The whole bitmap is held in memory (a 4 GiB image of 4 KiB blocks needs 128 KiB of it) and the blocks
of it that changed are written back at sync. Searching for a free block is a C-speed scan of bytes
from a moving cursor, so allocation costs O(1) amortised, not a walk over the image.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator

from haven.shield.storage.fs.errors import FsCorruptError, FsError
from haven.shield.storage.layout import MAX_SPAN

_NOT_FULL = re.compile(rb"[^\xff]")
# A run of at least a store window (layout.MAX_SPAN blocks: two bitmap bytes) starts on a window
# boundary when one is free: the store then seals the file's data as whole windows, straight from the
# writer's buffer, and a read of a window-aligned range opens whole segments only.
_WINDOW = MAX_SPAN
_FREE_WINDOW = re.compile(b"\x00\x00")
_WINDOW_TRIES = 64  # matches at an odd byte offset tried before settling for an unaligned start


def _tail(capacity: int, nbytes: int) -> bytes:
    """The bitmap's bytes from ``capacity // 8`` to the end with only the bits past capacity set (the
    first of them may also hold bits below capacity, which a caller ORs in or masks off)."""
    if capacity >> 3 >= nbytes:
        return b""
    first = (0xFF << (capacity & 7)) & 0xFF
    return bytes([first]) + b"\xff" * (nbytes - (capacity >> 3) - 1)


def bitmap_blocks_for(capacity: int, block_size: int) -> int:
    """Logical blocks needed for a bitmap of ``capacity`` bits."""
    return -(-capacity // (block_size * 8))


class Bitmap:
    """The in-memory free-space bitmap over ``capacity`` logical blocks."""

    def __init__(self, bits: bytearray, capacity: int, block_size: int) -> None:
        self.bits = bits
        self.capacity = capacity
        self.block_size = block_size
        # Bits past capacity are always set (checked on load), so they come off the population count.
        self.used = int.from_bytes(bits, "little").bit_count() - (len(bits) * 8 - capacity)
        self._cursor = 0
        self._dirty: set[int] = set()

    @classmethod
    def fresh(cls, capacity: int, block_size: int, reserved: int) -> Bitmap:
        """A bitmap with blocks ``0..reserved-1`` in use (header and bitmap), and the tail set."""
        nblocks = bitmap_blocks_for(capacity, block_size)
        bits = bytearray(nblocks * block_size)
        bits[capacity >> 3 :] = _tail(capacity, len(bits))
        bm = cls(bits, capacity, block_size)
        bm.mark_used(0, reserved)
        bm._dirty = set(range(nblocks))
        return bm

    @classmethod
    def from_blocks(cls, blocks: list[bytes], capacity: int, block_size: int) -> Bitmap:
        bits = bytearray(b"".join(blocks))
        tail, start = _tail(capacity, len(bits)), capacity >> 3
        if tail and (bits[start] & tail[0] != tail[0] or bits.count(0xFF, start + 1) != len(tail) - 1):
            raise FsCorruptError("file system bitmap: a bit past the image's capacity is clear")
        return cls(bits, capacity, block_size)

    @property
    def free(self) -> int:
        return self.capacity - self.used

    def is_used(self, lba: int) -> bool:
        return bool(self.bits[lba >> 3] >> (lba & 7) & 1)

    def mark_used(self, start: int, count: int) -> None:
        bits = self.bits
        for lba in range(start, start + count):
            bits[lba >> 3] |= 1 << (lba & 7)
        self.used += count
        self._touch(start, count)

    def release(self, start: int, count: int) -> None:
        """Clear ``count`` bits from ``start`` (each must be set: freeing twice is a corrupt file system)."""
        bits = self.bits
        for lba in range(start, start + count):
            if lba >= self.capacity or not bits[lba >> 3] >> (lba & 7) & 1:
                raise FsCorruptError(f"file system bitmap: block {lba} freed but not in use")
            bits[lba >> 3] &= ~(1 << (lba & 7)) & 0xFF
        self.used -= count
        self._touch(start, count)

    def allocate(self, want: int, hint: int | None = None) -> tuple[int, int]:
        """A run of between 1 and ``want`` free blocks, marked used: ``(start, count)``.

        The run starts at ``hint`` when that block is free (so a file's blocks follow each other),
        otherwise at the first free block from the cursor, wrapping once round the image.
        """
        if self.used >= self.capacity:
            raise FsError(errno.ENOSPC, "no free block in the image")
        bits = self.bits
        if hint is not None and 0 <= hint < self.capacity and not bits[hint >> 3] >> (hint & 7) & 1:
            start = hint
        else:
            aligned = self._find_free_window(self._cursor) if want >= _WINDOW else None
            start = self._find_free(self._cursor) if aligned is None else aligned
        count = 1
        lba = start + 1
        limit = min(self.capacity, start + want)
        while lba < limit:
            if not lba & 7 and lba + 8 <= limit and bits[lba >> 3] == 0:
                lba += 8
                continue
            if bits[lba >> 3] >> (lba & 7) & 1:
                break
            lba += 1
        count = lba - start
        self.mark_used(start, count)
        self._cursor = lba if lba < self.capacity else 0
        return start, count

    def _find_free_window(self, cursor: int) -> int | None:
        """The first wholly free, window-aligned run of ``_WINDOW`` blocks from the cursor, or None."""
        for begin in (cursor >> 3, 0):
            at = begin + (begin & 1)
            for _ in range(_WINDOW_TRIES):
                found = _FREE_WINDOW.search(self.bits, at)
                if found is None:
                    break
                if found.start() & 1:
                    at = found.start() + 1
                    continue
                lba = found.start() * 8
                return lba if lba + _WINDOW <= self.capacity else None
        return None

    def _find_free(self, cursor: int) -> int:
        found = _NOT_FULL.search(self.bits, cursor >> 3) or _NOT_FULL.search(self.bits, 0)
        if found is None:
            raise FsError(errno.ENOSPC, "no free block in the image")
        byte_index = found.start()
        byte = self.bits[byte_index]
        bit = (~byte & (byte + 1)).bit_length() - 1  # the lowest clear bit
        lba = byte_index * 8 + bit
        if lba >= self.capacity:  # only the set tail lies past capacity, so this cannot be reached
            raise FsCorruptError(f"file system bitmap: block {lba} past capacity is marked free")
        return lba

    def _touch(self, start: int, count: int) -> None:
        per_block = self.block_size * 8
        first = start // per_block
        last = (start + max(count, 1) - 1) // per_block
        self._dirty.update(range(first, last + 1))

    def dirty_blocks(self) -> Iterator[tuple[int, bytes]]:
        """``(index within the bitmap, block bytes)`` for every bitmap block changed and not yet written."""
        bs = self.block_size
        for i in sorted(self._dirty):
            yield i, bytes(self.bits[i * bs : (i + 1) * bs])

    def written(self, index: int) -> None:
        self._dirty.discard(index)
