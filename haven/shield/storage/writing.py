"""Writes staged in the enclave: blocks and runs of blocks written and discarded between commits.

:class:`StoreWrites` is the part of :class:`~haven.shield.storage.store.SecureStore` that takes writes:
a block is copied into the stage (its window's buffer) and noted as fresh for the commit log; runs of
whole windows nothing is staged in are sealed at once, straight from the caller's buffer; past the
dirty limit, the stage is sealed early to bound the enclave's memory. Space is checked before anything
is staged, so a refused write leaves nothing half done. The commit path stays in ``store.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from haven.shield.storage.alloc import PhysMap
from haven.shield.storage.blocktree import BlockTree, Segment
from haven.shield.storage.device import Buffer
from haven.shield.storage.errors import NoSpaceError, StorageError
from haven.shield.storage.failstop import FailStop
from haven.shield.storage.layout import ENTRY, ENTRY_SIZE
from haven.shield.storage.log import CommitLog
from haven.shield.storage.stage import Stage, Window
from haven.shield.storage.tree import Geometry


class StoreWrites(FailStop):
    # The store's state used here, set up by SecureStore.__init__.
    version: int
    block_size: int
    capacity: int
    _geo: Geometry
    _tree: BlockTree
    _map: PhysMap
    _stage: Stage
    _windows: dict[int, Window]
    _log: CommitLog
    _reserve: int
    _hold: int
    _dirty_limit: int
    _writable: bool
    _wshift: int
    _wmask: int
    _leaf_shift: int

    if TYPE_CHECKING:  # the commit path's, in store.py

        def read(self, lba: int) -> bytes: ...

        def _ensure_nonces(self, count: int) -> None: ...

    def write(self, lba: int, data: Buffer) -> None:
        """Stage new contents for ``lba`` (copied now); durable at the next ``commit``."""
        if self._stopped is not None:
            self._refuse()
        if not 0 <= lba < self.capacity:
            raise StorageError(f"logical block {lba} is outside 0..{self.capacity - 1}")
        size = self.block_size
        if len(data) != size:
            raise StorageError(f"a block is {size} bytes, not {len(data)}")
        self._check_writable()
        win = lba >> self._wshift
        w = self._windows.get(win) or self._open_window(win)
        i = lba & self._wmask
        if not w.write >> i & 1:
            self._stage.mark_written(win, w, 1 << i, self._map.free, self._reserve, self._hold)
        self._stage.put(w, i, data)
        self._log.fresh.add(lba)
        if self._stage.bytes > self._dirty_limit:
            self._spill()

    def write_run(self, first: int, data: Buffer) -> None:
        """``write`` of consecutive blocks from ``first`` (``len(data) // block_size`` of them) in one
        call: far cheaper per block for bulk data."""
        if self._stopped is not None:
            self._refuse()
        size = self.block_size
        view = memoryview(data).cast("B")
        count, rest = divmod(len(view), size)
        if rest or not count:
            raise StorageError(f"a run of blocks is a positive multiple of {size} bytes, not {len(view)}")
        if not (0 <= first and first + count <= self.capacity):
            raise StorageError(
                f"logical blocks {first}..{first + count - 1} are outside 0..{self.capacity - 1}"
            )
        self._check_writable()
        self._write_windows(first, view)

    def _write_windows(self, first: int, view: memoryview) -> None:
        """write_run's work, window by window: runs of whole windows nothing is staged in are sealed at
        once; the rest is staged. Every window is written whole or not at all, so on NoSpaceError
        ``written`` counts the blocks of the windows before the one refused."""
        size, span = self.block_size, self._geo.span
        windows = self._windows
        lba, at, end = first, 0, len(view)
        wbytes = span * size
        try:
            while at < end:
                win, i = lba >> self._wshift, lba & self._wmask
                if not i and win not in windows and at + wbytes <= end:
                    n = 1
                    while at + (n + 1) * wbytes <= end and win + n not in windows:
                        n += 1
                    self._seal_windows(win, lba, view[at : at + n * wbytes], n)
                    lba, at = lba + n * span, at + n * wbytes
                    continue
                k = min(span - i, (end - at) // size)
                w = windows.get(win) or self._open_window(win)
                new = (((1 << k) - 1) << i) & ~w.write
                if new:
                    self._stage.mark_written(win, w, new, self._map.free, self._reserve, self._hold)
                self._stage.put(w, i, view[at : at + k * size])
                self._log.fresh.update(range(lba, lba + k))
                lba, at = lba + k, at + k * size
                if self._stage.bytes > self._dirty_limit:
                    self._spill()  # (refused, the window is staged all the same: it counts as written)
        except NoSpaceError as e:
            e.written += lba - first
            raise

    def _seal_windows(self, win: int, first: int, view: memoryview, n: int) -> None:
        """Seal ``n`` whole windows from ``first`` straight from the caller's buffer (nothing staged
        there). When they cannot all fit, they go one at a time, and the NoSpaceError's ``written``
        counts the blocks sealed."""
        stage, span, height = self._stage, self._geo.span, self._geo.height
        leaves = {(win + k) >> self._leaf_shift for k in range(n)}
        need = stage.staged + stage.extra + n * span + len(stage.touched_leaves | leaves) * height
        if n > 1 and need > self._map.free - self._reserve:
            wbytes = span * self.block_size
            for k in range(n):
                try:
                    self._seal_windows(win + k, first + k * span, view[k * wbytes : (k + 1) * wbytes], 1)
                except NoSpaceError as e:
                    e.written = k * span
                    raise
            return
        free = self._map.free
        if need > free - self._reserve and not self._rewrites_window(first):
            raise NoSpaceError(f"the image is full ({free} free blocks, {self._reserve} reserved)")
        if need > free - self._hold:
            raise NoSpaceError(f"the image is full ({free} free blocks, {self._hold} held for commits)")
        stage.touched_leaves.update(leaves)
        self._log.loggable = False
        self._guard_write(self._seal_windows_now, first, view, n)

    def _rewrites_window(self, first: int) -> bool:
        """Whether every block of the window at ``first`` holds data already (a rewrite may use the
        reserve: it frees as much as it takes once committed)."""
        leaf = self._guard(self._tree.node, 1, first >> self._geo.shift)
        if leaf is None:
            return False
        a = (first & (self._geo.fanout - 1)) * ENTRY_SIZE
        return all(ENTRY.unpack_from(leaf, a + k * ENTRY_SIZE)[0] for k in range(self._geo.span))

    def _seal_windows_now(self, first: int, view: memoryview, n: int) -> None:
        self._ensure_nonces(n * self._geo.span)
        self._tree.seal_windows(first, view, self.version + 1)

    @contextlib.contextmanager
    def committing(self) -> Iterator[None]:
        """Writes made inside may use the whole reserve: the metadata a commit writes just before it
        (the file system's tree, bitmap and header at sync)."""
        saved, self._hold = self._hold, 0
        try:
            yield
        finally:
            self._hold = saved

    def discard(self, lba: int) -> None:
        """Logical block ``lba`` no longer holds data (it reads as zeros); its space returns at commit."""
        if self._stopped is not None:
            self._refuse()
        if not 0 <= lba < self.capacity:
            raise StorageError(f"logical block {lba} is outside 0..{self.capacity - 1}")
        self._check_writable()
        win = lba >> self._wshift
        w = self._windows.get(win) or self._open_window(win)
        self._log.loggable = False
        self._stage.mark_discarded(win, w, lba & self._wmask)

    def dirty(self) -> bool:
        """Whether anything was written or discarded since the last commit."""
        return self._log.changed() or self._tree.is_dirty()

    def _open_window(self, win: int) -> Window:
        leaf_index = win >> self._leaf_shift
        leaf = self._guard(self._tree.node, 1, leaf_index)
        return self._stage.open(win, leaf_index, leaf)

    def _check_writable(self) -> None:
        if not self._writable:
            raise StorageError("the image is open read-only")

    def _stage_logged(self, lba: int, block: bytes) -> None:
        """Stage a block the log carries (at mount): it is durable, and the tree takes it in at the next
        checkpoint."""
        win = lba >> self._wshift
        w = self._windows.get(win) or self._open_window(win)
        i = lba & self._wmask
        if not w.write >> i & 1:
            self._stage.mark_written(win, w, 1 << i, self._map.n_blocks, 0)
        self._stage.put(w, i, block)
        self._log.carry(lba, bool(w.present >> i & 1))

    def _staged_view(self, lba: int) -> memoryview:
        """A staged block's bytes in its window's buffer (valid until the stage next changes)."""
        w = self._windows[lba >> self._wshift]
        at = ((lba & self._wmask) - w.lo) * self.block_size
        return memoryview(w.buf)[at : at + self.block_size]

    def _spill(self) -> None:
        """Seal the staged blocks early (not durable, not committed) to bound the enclave's memory."""
        segments, discards = self._guard(self._stage.plan, self.read)
        blocks = sum(span for _, span, _ in segments)
        if blocks > self._map.free:
            raise NoSpaceError(f"the image is full: {blocks} blocks to write, {self._map.free} free")
        self._guard_write(self._seal_early, segments, discards)

    def _seal_early(self, segments: list[Segment], discards: list[int]) -> None:
        self._log.loggable = False
        self._ensure_nonces(len(segments))
        self._tree.seal_data(segments, discards, self.version + 1)
        self._stage.clear()
