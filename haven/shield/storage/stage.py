"""Writes staged in the enclave until they are sealed, by aligned window of logical blocks.

A window is ``span`` consecutive logical blocks (16 by default), the unit in which data segments are
formed. Its buffer holds the staged plaintext contiguously, from the lowest to the highest block
touched, so a run of staged blocks is sealed straight from it without a copy while a lone block costs
one block of memory. Bit ``i`` of a mask is block ``i`` of the window.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

from haven.shield.storage.errors import NoSpaceError
from haven.shield.storage.layout import ENTRY, ENTRY_OFFSET_AT, ENTRY_SIZE, ENTRY_SPAN_AT

_LITTLE_ENDIAN = sys.byteorder == "little"


def _entry_fields(leaf: bytes | bytearray, a: int, b: int) -> tuple[list[int], list[int], list[int]]:
    """(phys, span, offset) of every entry in ``leaf[a:b]`` (layout.Entry: a little-endian u64 first,
    then the u16s at ENTRY_SPAN_AT and ENTRY_OFFSET_AT)."""
    if _LITTLE_ENDIAN:
        words, halves = memoryview(leaf).cast("Q"), memoryview(leaf).cast("H")
        step_w, step_h = ENTRY_SIZE // 8, ENTRY_SIZE // 2
        return (
            words[a // 8 : b // 8 : step_w].tolist(),
            halves[(a + ENTRY_SPAN_AT) // 2 : b // 2 : step_h].tolist(),
            halves[(a + ENTRY_OFFSET_AT) // 2 : b // 2 : step_h].tolist(),
        )
    entries = list(ENTRY.iter_unpack(leaf[a:b]))  # pragma: no cover - big-endian hosts
    return [e[0] for e in entries], [e[3] for e in entries], [e[4] for e in entries]


class Window:
    """Staged state of one window, with what the tree held there when it was opened."""

    __slots__ = ("buf", "discard", "lo", "present", "segments", "write")

    def __init__(self, present: int, segments: tuple[int, ...]) -> None:
        self.buf = bytearray()  # blocks lo, lo + 1, ... of the window
        self.lo = 0
        self.write = 0  # blocks staged with new contents
        self.discard = 0  # blocks to remove from the tree
        self.present = present  # blocks the tree holds (committed or sealed since)
        self.segments = segments  # masks of the tree's multi-block segments here

    def cover(self, i: int, k: int, size: int) -> int:
        """Grow the buffer to hold blocks ``i .. i + k - 1``; returns how many bytes it grew by."""
        have = len(self.buf) // size
        if not have:
            self.buf, self.lo = bytearray(k * size), i
            return k * size
        lo, hi = min(self.lo, i), max(self.lo + have, i + k)
        if (lo, hi) == (self.lo, self.lo + have):
            return 0
        grown = bytearray((hi - lo) * size)
        grown[(self.lo - lo) * size : (self.lo - lo + have) * size] = self.buf
        self.buf, self.lo = grown, lo
        return (hi - lo - have) * size

    def reseal(self) -> int:
        """Untouched blocks that must be sealed again: they share a segment with a touched block, and a
        segment is only ever replaced whole (so its physical blocks are freed whole)."""
        touched = self.write | self.discard
        out = 0
        for segment in self.segments:
            if segment & touched:
                out |= segment & ~touched
        return out


class Stage:
    """All staged windows, and the counts that bound what sealing them will need."""

    def __init__(self, span: int, block_size: int, height: int) -> None:
        self.span = span
        self.block_size = block_size
        self.height = height
        self.windows: dict[int, Window] = {}
        self.staged = 0  # blocks with a write bit set
        self.extra = 0  # untouched blocks that will be resealed (Window.reseal)
        self.bytes = 0  # memory held by the windows' buffers
        self.touched_leaves: set[int] = set()  # leaves written since the last commit
        self._absent = bytes(span * ENTRY_SIZE)  # a window of absent entries

    def open(self, win: int, leaf_index: int, leaf: bytes | bytearray | None) -> Window:
        """Start staging window ``win`` of the leaf ``leaf`` (None when the leaf is absent)."""
        present, segments = 0, []
        if leaf is not None:
            first = (win * self.span) % (len(leaf) // ENTRY_SIZE)
            a, b = first * ENTRY_SIZE, (first + self.span) * ENTRY_SIZE
            if leaf[a:b] != self._absent:
                # Only three fields matter here (physical block, span, offset): read them across the
                # window's entries at once rather than unpack every entry whole.
                phys, spans, offsets = _entry_fields(leaf, a, b)
                for k, p in enumerate(phys):
                    if p:
                        present |= 1 << k
                        if offsets[k] == 0 and spans[k] > 1:
                            segments.append(((1 << spans[k]) - 1) << k)
        self.touched_leaves.add(leaf_index)
        window = Window(present, tuple(segments))
        self.windows[win] = window
        return window

    def put(self, w: Window, i: int, data: memoryview | bytes | bytearray) -> None:
        """Copy ``data`` (whole blocks) into the window from block ``i`` on."""
        size = self.block_size
        at = (i - w.lo) * size
        end = at + len(data)
        if at < 0 or end > len(w.buf):  # (a rewrite inside the buffer, the common case, skips this)
            self.bytes += w.cover(i, len(data) // size, size)
            at = (i - w.lo) * size
            end = at + len(data)
        w.buf[at:end] = data

    def get(self, w: Window, i: int) -> bytes:
        at = (i - w.lo) * self.block_size
        return bytes(w.buf[at : at + self.block_size])

    def mark_written(self, win: int, w: Window, new: int, free: int, reserve: int, hold: int = 0) -> None:
        """Mark the blocks of ``new`` (not yet staged) as written, if ``free`` blocks are enough for
        everything staged to be sealed and committed. Blocks that grow the image may not use the
        ``reserve``; rewrites may, all but ``hold`` of it (so a full image can still rewrite, delete and
        commit)."""
        old_write, old_discard = w.write, w.discard
        before = w.reseal() if w.segments else 0
        w.write |= new
        w.discard &= ~new
        extra = self.extra + (w.reseal().bit_count() - before.bit_count() if w.segments else 0)
        count = new.bit_count()
        need = self.staged + count + extra + len(self.touched_leaves) * self.height
        if need > free - (reserve if new & ~w.present else hold):
            w.write, w.discard = old_write, old_discard
            if not w.write | w.discard:
                self._drop(win, w)
            raise NoSpaceError(f"the image is full ({free} free blocks, {reserve} reserved)")
        self.staged += count
        self.extra = extra

    def mark_discarded(self, win: int, w: Window, i: int) -> None:
        before = w.reseal()
        if w.write >> i & 1:
            w.write &= ~(1 << i)
            self.staged -= 1
        if w.present >> i & 1:
            w.discard |= 1 << i
        self.extra += w.reseal().bit_count() - before.bit_count()
        if not w.write | w.discard:
            self._drop(win, w)

    def _drop(self, win: int, w: Window) -> None:
        self.bytes -= len(w.buf)
        del self.windows[win]

    def dirty_blocks(self) -> int:
        return self.staged + sum(w.discard.bit_count() for w in self.windows.values())

    def plan(self, read: Callable[[int], bytes]) -> tuple[list[tuple[int, int, memoryview]], list[int]]:
        """The segments (first lba, span, plaintext) to seal and the blocks to discard. ``read`` gives
        the current contents of an untouched block to reseal."""
        size = self.block_size
        segments: list[tuple[int, int, memoryview]] = []
        discards: list[int] = []
        for win, w in sorted(self.windows.items()):
            base = win * self.span
            reseal = w.reseal()
            for i in bits(reseal):
                self.put(w, i, read(base + i))
            view = memoryview(w.buf)
            # Staged and resealed blocks form separate segments, so a block rewritten again and
            # again ends up alone and stops dragging its neighbours through every commit.
            for mask in (w.write, reseal):
                for start, length in runs(mask):
                    at = (start - w.lo) * size
                    segments.append((base + start, length, view[at : at + length * size]))
            discards.extend(base + i for i in bits(w.discard))
        return segments, discards

    def clear(self) -> None:
        """Everything staged was sealed or dropped (``touched_leaves`` stays until the commit)."""
        self.windows.clear()
        self.staged = self.extra = self.bytes = 0


def bits(mask: int) -> Iterator[int]:
    """Indices of the set bits of ``mask``, lowest first."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def runs(mask: int) -> Iterator[tuple[int, int]]:
    """(start, length) of each run of consecutive set bits of ``mask``, lowest first."""
    while mask:
        start = (mask & -mask).bit_length() - 1
        shifted = mask >> start
        length = (shifted ^ (shifted + 1)).bit_length() - 1
        yield start, length
        mask &= ~(((1 << length) - 1) << start)
