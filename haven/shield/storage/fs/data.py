"""File contents: extents ``(ino, EXTENT, first file block) -> (logical block, count)`` over the store.

A file is a sparse array of blocks; a block with no extent is a hole and reads as zeros. Writes into a
hole allocate a contiguous run of logical blocks where the free space allows, starting right after the
previous extent's blocks when those are free, so that extent just grows: appending costs one B+tree
search and (at most) one record change per call, whatever the file's length. Bytes past the end of
file inside its last block are always zero (truncate clears them), so growing a file reads zeros.
"""

from __future__ import annotations

import errno

from haven.shield.storage.errors import NoSpaceError
from haven.shield.storage.fs.errors import FsCorruptError, FsError
from haven.shield.storage.fs.records import (
    EXTENT,
    MAX_EXTENT_BLOCKS,
    MAX_FILE_SIZE,
    InodeRecord,
    ItemKind,
    make_key,
)
from haven.shield.storage.fs.volume import Volume
from haven.shield.storage.layout import MAX_SPAN

_K_EXTENT = ItemKind.EXTENT
_MASK64 = (1 << 64) - 1
_INF = 1 << 64
# A read longer than this many blocks is decrypted straight into its buffer (read_into).
_LONG_READ = 4 * MAX_SPAN


class _ShortWrite(Exception):
    """The store refused a block: bytes below ``done`` were written, none at or after it."""

    def __init__(self, done: int) -> None:
        super().__init__(done)
        self.done = done


class FileData:
    """Reads and writes of file contents, truncate and allocate."""

    def __init__(self, vol: Volume) -> None:
        self.vol = vol
        self.tree = vol.tree
        self.store = vol.store
        self.bs = vol.block_size

    def _extent(self, key: int, value: bytes, ino: int) -> tuple[int, int, int]:
        """``(first file block, lba, count)`` of an extent record, checked against the image."""
        lba, count, reserved = EXTENT.unpack(value)
        if reserved or count == 0 or lba + count > self.vol.header.capacity:
            raise FsCorruptError(f"inode {ino}: malformed extent at file block {key & _MASK64}")
        return key & _MASK64, lba, count

    def _prev(self, ino: int, fblock: int) -> tuple[int, int, int] | None:
        """The extent with the greatest first block ``<= fblock``."""
        item = self.tree.floor(make_key(ino, _K_EXTENT, fblock))
        if item is None or item[0] >> 64 != (ino << 8) | _K_EXTENT:
            return None
        return self._extent(item[0], item[1], ino)

    def _next_start(self, ino: int, fblock: int) -> int:
        """First block of the first extent starting after ``fblock`` (``_INF`` if none)."""
        lo = make_key(ino, _K_EXTENT, fblock + 1)
        for key, _ in self.tree.scan(lo, make_key(ino, _K_EXTENT + 1, 0)):
            return key & _MASK64
        return _INF

    def _run(
        self, ino: int, fblock: int, limit: int, nblocks: int
    ) -> tuple[int | None, int, tuple[int, int, int] | None]:
        """What holds file blocks from ``fblock``: ``(lba or None for a hole, run <= limit, prev extent)``."""
        prev = self._prev(ino, fblock)
        if prev is not None:
            start, lba, count = prev
            if fblock < start + count:
                return lba + fblock - start, min(start + count - fblock, limit), prev
        # A hole: it ends at the next extent; past the last block of the file there is none.
        end = _INF if fblock >= nblocks else self._next_start(ino, fblock)
        return None, min(end - fblock, limit), prev

    # -- reading ------------------------------------------------------------------------------------

    def read(self, ino: int, rec: InodeRecord, offset: int, length: int) -> bytes:
        size = rec.size
        if offset >= size or length <= 0:
            return b""
        end = min(size, offset + length)
        bs = self.bs
        if end - offset > _LONG_READ * bs:
            buf = bytearray(end - offset)
            self.read_into(ino, rec, offset, memoryview(buf))
            return bytes(buf)
        first = offset // bs
        fblock = first
        last = (end - 1) // bs
        nblocks = -(-size // bs)
        parts: list[bytes] = []
        store = self.store
        while fblock <= last:
            lba, run, _ = self._run(ino, fblock, last - fblock + 1, nblocks)
            if lba is None:
                parts.append(bytes(run * bs))
            elif run == 1:
                parts.append(store.read(lba))
            else:
                parts.extend(store.read_many(range(lba, lba + run)))
            fblock += run
        data = b"".join(parts)
        skip = offset - first * bs
        return data[skip : skip + end - offset]

    def read_into(self, ino: int, rec: InodeRecord, offset: int, buf: memoryview) -> int:
        """``read`` into ``buf`` (bytes); returns how many bytes were read. Whole blocks are decrypted
        straight into ``buf``; only a partial first or last block is copied."""
        size = rec.size
        if offset >= size or not len(buf):
            return 0
        end = min(size, offset + len(buf))
        bs = self.bs
        fblock = offset // bs
        last = (end - 1) // bs
        nblocks = -(-size // bs)
        store = self.store
        while fblock <= last:
            lba, run, _ = self._run(ino, fblock, last - fblock + 1, nblocks)
            lo, hi = max(offset, fblock * bs), min(end, (fblock + run) * bs)
            if lba is None:
                buf[lo - offset : hi - offset] = bytes(hi - lo)
            else:
                base = lba - fblock  # logical block of file block b is base + b
                a, b = -(-lo // bs), hi // bs  # the whole blocks inside [lo, hi)
                if a > b:  # inside one block
                    block = store.read(base + lo // bs)
                    buf[lo - offset : hi - offset] = block[lo % bs : lo % bs + hi - lo]
                else:
                    if lo % bs:
                        block = store.read(base + lo // bs)
                        buf[lo - offset : a * bs - offset] = block[lo % bs :]
                    if b > a:
                        store.read_into(base + a, b - a, buf[a * bs - offset : b * bs - offset])
                    if hi % bs:
                        block = store.read(base + b)
                        buf[b * bs - offset : hi - offset] = block[: hi % bs]
            fblock += run
        return end - offset

    # -- writing ------------------------------------------------------------------------------------

    def write(self, ino: int, rec: InodeRecord, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset``; returns the bytes written (short only when the image fills up)."""
        view = memoryview(data).cast("B")  # counts bytes whatever the buffer's item size
        n = len(view)
        if n == 0:
            return 0
        end = offset + n
        if end > MAX_FILE_SIZE:
            raise FsError(errno.EFBIG, f"write past the largest file size ({MAX_FILE_SIZE} bytes)")
        bs = self.bs
        fblock = offset // bs
        last = (end - 1) // bs
        nblocks = -(-rec.size // bs)
        done = offset  # everything below ``done`` is written
        try:
            while fblock <= last:
                lba, run, prev = self._run(ino, fblock, last - fblock + 1, nblocks)
                fresh = lba is None
                if lba is None:
                    lba, run = self._map(ino, fblock, run, prev)
                done = self._fill(lba, fblock, run, offset, end, view, fresh)
                fblock += run
        except (FsError, _ShortWrite) as e:
            if isinstance(e, FsError) and e.errno != errno.ENOSPC:
                raise
            if isinstance(e, _ShortWrite):
                done = e.done
            # A short write: blocks mapped past what was written are taken back.
            self._free_from(ino, -(-max(rec.size, done) // bs))
            if done == offset:
                raise FsError(errno.ENOSPC, "no space left in the image") from None
        if done > rec.size:
            rec.size = done
        return done - offset

    def _fill(
        self, lba: int, fblock: int, run: int, offset: int, end: int, view: memoryview, fresh: bool
    ) -> int:
        """Write the part of ``[offset, end)`` that falls in file blocks ``fblock..fblock+run-1``, which
        are stored from logical block ``lba``. Returns the end written.

        A partial first or last block is merged with what it held (zeros if ``fresh``). Whole blocks go
        to the store as one run; the store writes it window by window, each whole or refused whole, and
        says how many blocks it wrote when it runs out of room, so the bytes written so far are known
        exactly (raised as :class:`_ShortWrite`).
        """
        bs = self.bs
        first = fblock * bs
        pos = max(offset, first)
        hi = min(end, first + run * bs)
        try:
            if pos % bs:
                stop = min(hi, (pos // bs + 1) * bs)
                self._merge(lba + pos // bs - fblock, pos % bs, view[pos - offset : stop - offset], fresh)
                pos = stop
            whole = (hi - pos) // bs
            if whole:
                blocks = view[pos - offset : pos - offset + whole * bs]
                try:
                    self.store.write_run(lba + pos // bs - fblock, blocks)
                except NoSpaceError as e:
                    pos += e.written * bs  # the store writes a run window by window, each whole or not
                    raise
                pos += whole * bs
            if pos < hi:
                self._merge(lba + pos // bs - fblock, 0, view[pos - offset : hi - offset], fresh)
        except NoSpaceError:
            raise _ShortWrite(pos) from None
        return hi

    def _merge(self, lba: int, at: int, piece: memoryview, fresh: bool) -> None:
        block = bytearray(self.bs) if fresh else bytearray(self.store.read(lba))
        block[at : at + len(piece)] = piece
        self.store.write(lba, block)

    def _map(self, ino: int, fblock: int, want: int, prev: tuple[int, int, int] | None) -> tuple[int, int]:
        """Give the hole at ``fblock`` up to ``want`` new blocks; returns ``(lba, count)`` mapped."""
        hint = None
        grow = prev is not None and prev[0] + prev[2] == fblock
        if grow and prev is not None:
            hint = prev[1] + prev[2]
        lba, count = self.vol.alloc_run(min(want, MAX_EXTENT_BLOCKS), hint)
        if grow and prev is not None and lba == hint and prev[2] + count <= MAX_EXTENT_BLOCKS:
            self.tree.replace(make_key(ino, _K_EXTENT, prev[0]), EXTENT.pack(prev[1], prev[2] + count, 0))
        else:
            self.tree.insert(make_key(ino, _K_EXTENT, fblock), EXTENT.pack(lba, count, 0))
        return lba, count

    def allocate(self, ino: int, rec: InodeRecord, offset: int, length: int) -> None:
        """posix_fallocate: every block of ``[offset, offset+length)`` gets storage; holes become zeros."""
        end = offset + length
        if end > MAX_FILE_SIZE:
            raise FsError(errno.EFBIG, f"allocate past the largest file size ({MAX_FILE_SIZE} bytes)")
        bs = self.bs
        fblock = offset // bs
        last = (end - 1) // bs
        nblocks = -(-rec.size // bs)
        holes: list[tuple[int, int]] = []
        at = fblock
        while at <= last:
            lba, run, _ = self._run(ino, at, last - at + 1, nblocks)
            if lba is None:
                holes.append((at, run))
            at += run
        need = sum(run for _, run in holes)
        # All or nothing: posix_fallocate either reserves the whole range or fails with ENOSPC.
        self.vol.reserve(need + len(holes))
        zeros = bytes(bs * 256)
        store = self.store
        try:
            for at, run in holes:
                while run:
                    prev = self._prev(ino, at)
                    lba, count = self._map(ino, at, run, prev)
                    # Written, not only mapped: the store then holds (and has room for) every block now.
                    for k in range(0, count, 256):
                        store.write_run(lba + k, zeros[: min(256, count - k) * bs])
                    at += count
                    run -= count
        except NoSpaceError:
            # The store ran out of physical room: blocks mapped past the end of file go back; holes
            # filled inside the file read as zeros whether or not their zeros were staged.
            self._free_from(ino, -(-rec.size // bs))
            raise FsError(errno.ENOSPC, "allocate: no space left in the image") from None
        if end > rec.size:
            rec.size = end

    # -- truncating and freeing ---------------------------------------------------------------------

    def truncate(self, ino: int, rec: InodeRecord, size: int) -> None:
        if size > MAX_FILE_SIZE:
            raise FsError(errno.EFBIG, f"truncate past the largest file size ({MAX_FILE_SIZE} bytes)")
        bs = self.bs
        if size < rec.size:
            keep = -(-size // bs)
            tail = size % bs
            if tail:  # zero the tail first: if the store refuses that write, nothing has changed
                prev = self._prev(ino, keep - 1)
                if prev is not None and keep - 1 < prev[0] + prev[2]:
                    lba = prev[1] + keep - 1 - prev[0]
                    block = bytearray(self.store.read(lba))
                    block[tail:] = bytes(bs - tail)
                    self.store.write(lba, block)
            self._free_from(ino, keep)
        rec.size = size

    def _free_from(self, ino: int, keep: int) -> None:
        """Free every block at or past file block ``keep``."""
        tree = self.tree
        prev = self._prev(ino, keep)
        if prev is not None and prev[0] < keep < prev[0] + prev[2]:
            start, lba, count = prev
            stay = keep - start
            self.vol.free_run(lba + stay, count - stay)
            tree.replace(make_key(ino, _K_EXTENT, start), EXTENT.pack(lba, stay, 0))
        lo = make_key(ino, _K_EXTENT, keep)
        for key, value in list(tree.scan(lo, make_key(ino, _K_EXTENT + 1, 0))):
            _, lba, count = self._extent(key, value, ino)
            self.vol.free_run(lba, count)
            tree.delete(key)

    def blocks(self, ino: int) -> int:
        """Number of data blocks the file holds (for statfs-style accounting and checks)."""
        total = 0
        lo = make_key(ino, _K_EXTENT, 0)
        for key, value in self.tree.scan(lo, make_key(ino, _K_EXTENT + 1, 0)):
            total += self._extent(key, value, ino)[2]
        return total
