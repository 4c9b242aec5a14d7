"""SecureStore: encrypted, Merkle-verified, copy-on-write logical blocks over an untrusted device.

The file system above sees ``capacity`` logical blocks of ``block_size`` bytes: reads return verified
plaintext (zeros for a block never written), writes are staged in the enclave, and ``commit`` makes
them durable and fresh at once. ``docs/storage-format.md`` describes the format and the protocol;
in short:

* a commit seals new physical blocks (never one the last commit references), then the tree nodes
  above them, then a superblock in the other slot; a crash at any instant leaves the last commit whole;
* a read is answered from the cache, or fetched, authenticated against its parent's tag and cached;
  a failed check stops the store for good (fail stop: it never retries into a state the host chose);
* the freshness counter is advanced before ``commit`` returns, and checked at mount.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import NoReturn, ParamSpec, Self, TypeVar

from haven.shield.storage.alloc import PhysMap
from haven.shield.storage.blocktree import BlockTree, Segment
from haven.shield.storage.cache import BlockCache
from haven.shield.storage.counter import FreshnessCounter
from haven.shield.storage.device import BlockDevice, Buffer
from haven.shield.storage.errors import IntegrityError, NoSpaceError, StorageError
from haven.shield.storage.keys import derive_keys
from haven.shield.storage.layout import (
    ABSENT,
    ENTRY,
    ENTRY_SIZE,
    NONCE_LIMIT,
)
from haven.shield.storage.log import (
    CommitLog,
    seal_record,
)
from haven.shield.storage.opening import NONCE_RESERVATION as NONCE_RESERVATION
from haven.shield.storage.opening import read_committed, write_first_superblock
from haven.shield.storage.report import StoreReports
from haven.shield.storage.stage import Stage, Window
from haven.shield.storage.superblock import (
    SLOT_NAMES,
    SlotState,
    SuperblockWriter,
    check_geometry,
    pack_body,
)
from haven.shield.storage.tree import Geometry, Sealer, reserve_for
from haven.shield.storage.usage import StoreInfo as StoreInfo
from haven.shield.storage.usage import StoreUsage as StoreUsage
from haven.shield.storage.verify import TreeWalk
from haven.shield.storage.writeback import WriteFailed

_P = ParamSpec("_P")
_R = TypeVar("_R")


class SecureStore(StoreReports):
    """Logical blocks, encrypted and authenticated, committed copy-on-write under a freshness counter."""

    def __init__(
        self,
        dev: BlockDevice,
        counter: FreshnessCounter,
        key: bytes,
        current: SlotState,
        other: SlotState,
        raw_superblock: bytes,
        cache_bytes: int,
    ) -> None:
        header, body = current.header, current.body
        assert header is not None and body is not None
        self._dev = dev
        self._counter = counter
        keys = derive_keys(key, header.image_id, header.format_salt)
        self._superblocks = SuperblockWriter(keys, header, dev.block_size)
        self.image_id = header.image_id
        self.block_size = dev.block_size
        self.capacity = body.capacity
        self.version = body.version
        self._geo = geo = Geometry.for_capacity(self.block_size, body.capacity, body.device_blocks)
        self._slot = current.slot
        self._other_slot = other.describe()  # what ``info`` says of the slot not mounted
        self._raw_superblock = raw_superblock  # the mounted slot's bytes, compared in check()
        self._hwm = body.nonce_hwm
        self._logical = body.logical_used
        self._physical = body.physical_used
        self._map = PhysMap(body.device_blocks)
        self._cache = BlockCache(cache_bytes // self.block_size)
        self._tree = BlockTree(
            dev, geo, Sealer(keys, self.image_id), body.root.to_bytes(), self._map, self._cache
        )
        self._stage = Stage(geo.span, self.block_size, geo.height)
        self._windows = self._stage.windows
        self._stopped: tuple[type[StorageError], str] | None = None
        self._reserve = reserve_for(geo)
        # The part of the reserve a rewrite may not take: room for the commit's own metadata (the file
        # system's tree and bitmap, written at sync), so a full image that rewrites data can still
        # commit. Writes inside ``committing()`` may take it.
        self._hold = self._reserve // 2
        # Staged plaintext is sealed early (spilled) beyond this many bytes.
        self._dirty_limit = max(16 * geo.span * self.block_size, cache_bytes // 2)
        self._writable = bool(getattr(dev, "writable", True))
        self._wshift = geo.span.bit_length() - 1
        self._wmask = geo.span - 1
        self._leaf_shift = geo.shift - self._wshift
        self._log = CommitLog(body.log.to_bytes())

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    def format(
        cls,
        dev: BlockDevice,
        key: bytes,
        counter: FreshnessCounter,
        *,
        image_id: bytes | None = None,
        capacity: int | None = None,
        cache_bytes: int = 64 << 20,
    ) -> SecureStore:
        """Make ``dev`` an empty image under ``key`` and return it mounted. Its first version is the
        counter's value plus one, so a counter can outlive the image it was made for."""
        first = write_first_superblock(dev, key, counter, image_id=image_id, capacity=capacity)
        store = cls(dev, counter, key, first.current, first.other, first.raw, cache_bytes)
        store._tree.nonces.limit = NONCE_RESERVATION  # this format's superblock reserved [0, limit)
        return store

    @classmethod
    def mount(
        cls,
        dev: BlockDevice,
        key: bytes,
        counter: FreshnessCounter,
        *,
        cache_bytes: int = 64 << 20,
        image_id: bytes | None = None,
    ) -> SecureStore:
        """Open the image on ``dev``: choose its superblock against ``counter``, then walk and verify
        its tree. With ``image_id``, refuse any other image (even one under the same key)."""
        found = read_committed(dev, key, counter, image_id=image_id)
        best, other, raws, value = found.best, found.other, found.raws, found.counter
        if not found.ahead:
            return cls._walked(dev, counter, key, best, other, raws[best.slot], cache_bytes, None)
        # The newest superblock is one commit ahead of the counter: a crash fell after it was written
        # and before the counter was advanced. A commit writes its blocks and its superblock under one
        # flush, so any of them may be missing: verify the commit's data too (every block sealed after
        # the counter's value). Whole, it is finished; torn, it was never acknowledged to anyone, and
        # the previous commit, which it did not overwrite, is mounted (docs/storage-format.md,
        # "Freshness").
        try:
            store = cls._walked(dev, counter, key, best, other, raws[best.slot], cache_bytes, value)
        except IntegrityError:
            if not (other.body is not None and other.body.version == value):
                raise
            check_geometry(other.body, dev.block_size)
            return cls._walked(dev, counter, key, other, best, raws[other.slot], cache_bytes, None)
        if store._writable:
            counter.advance(value, value + 1)
        # (Read-only, the commit is mounted whole and left for the next writer to finish: looking at
        # an image changes nothing, and nothing was acknowledged from that commit.)
        return store

    @classmethod
    def _walked(
        cls,
        dev: BlockDevice,
        counter: FreshnessCounter,
        key: bytes,
        current: SlotState,
        other: SlotState,
        raw: bytes,
        cache_bytes: int,
        verify_after: int | None,
    ) -> SecureStore:
        """The store under ``current`` once its tree is walked and verified (and, with
        ``verify_after``, every data segment sealed after that version)."""
        store = cls(dev, counter, key, current, other, raw, cache_bytes)
        walk = TreeWalk(dev, store._geo, store._tree.sealer, store.version, store._map, verify_data=False,
                        cache=store._cache, verify_after=verify_after)  # fmt: skip
        logical = walk.run(ENTRY.unpack(store._tree.root))
        for record in store._read_log(store._map):
            store._log.appended(record.phys, record.span, store._log.head)
            for k, lba in enumerate(record.lbas):
                store._stage_logged(lba, record.blocks[k * store.block_size : (k + 1) * store.block_size])
        store._check_counts(logical, store._map.live)
        return store

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

    def close(self) -> None:
        """Drop the cache and staged writes and refuse further use; does NOT commit, and leaves the
        device open (it belongs to the caller)."""
        self._stop(StorageError, "the store is closed")
        self._stage.clear()
        self._cache.clear()
        self._tree.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ----------------------------------------------------------------- reading

    def read(self, lba: int) -> bytes:
        """The verified contents of logical block ``lba`` (zeros if it was never written)."""
        if self._stopped is not None:
            self._refuse()
        if not 0 <= lba < self.capacity:
            raise StorageError(f"logical block {lba} is outside 0..{self.capacity - 1}")
        if self._windows:
            w = self._windows.get(lba >> self._wshift)
            if w is not None:
                i = lba & self._wmask
                if w.write >> i & 1:
                    return self._stage.get(w, i)
                if w.discard >> i & 1:
                    return self._tree.zero
        block = self._cache.get(lba)
        if block is not None:
            return block
        return self._guard(self._tree.fetch, (lba,))[lba]

    def read_many(self, lbas: Sequence[int]) -> list[bytes]:
        """``read`` of each block, fetching the missing ones in as few device reads as possible. A long
        read (more than two windows to fetch) is taken as streaming: its whole-window segments are
        returned without being cached."""
        if self._stopped is not None:
            self._refuse()
        get, capacity = self._cache.get, self.capacity
        out: list[bytes | None] = []
        missing: list[int] = []
        for lba in lbas:
            if not 0 <= lba < capacity:
                raise StorageError(f"logical block {lba} is outside 0..{capacity - 1}")
            if self._windows:
                w = self._windows.get(lba >> self._wshift)
                if w is not None and (w.write | w.discard) >> (lba & self._wmask) & 1:
                    out.append(self.read(lba))
                    continue
            block = get(lba)
            if block is None:
                missing.append(lba)
            out.append(block)
        if not missing:
            return out  # type: ignore[return-value]
        fetched = self._guard(self._tree.fetch, missing, streaming=len(missing) > 2 * self._geo.span)
        return [fetched[lba] if block is None else block for lba, block in zip(lbas, out, strict=True)]

    def read_into(self, first: int, count: int, out: memoryview) -> None:
        """``read_many`` of ``count`` blocks from ``first`` into ``out`` (``count * block_size``
        bytes). A long read is decrypted straight into ``out`` and not cached; on an integrity failure
        ``out`` is zeroed."""
        if self._stopped is not None:
            self._refuse()
        size = self.block_size
        if len(out) != count * size or count < 1:
            raise StorageError(f"read_into: {count} blocks do not fit a buffer of {len(out)} bytes")
        if not (0 <= first and first + count <= self.capacity):
            raise StorageError(
                f"logical blocks {first}..{first + count - 1} are outside 0..{self.capacity - 1}"
            )
        wins = range(first >> self._wshift, ((first + count - 1) >> self._wshift) + 1)
        staged = self._windows and any(win in self._windows for win in wins)
        if staged or count <= 2 * self._geo.span:
            for k, block in enumerate(self.read_many(range(first, first + count))):
                out[k * size : (k + 1) * size] = block
            return
        self._guard(self._tree.fetch_into, first, count, out)

    # ----------------------------------------------------------------- writing

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

    # ----------------------------------------------------------------- committing

    def commit(self, *, checkpoint: bool = False) -> int:
        """Make everything written durable and fresh: when this returns, the new version is on the
        device and the freshness counter has reached it. Returns the version. A small commit goes to
        the log; with ``checkpoint``, the commit goes through the tree and takes the log in (an image
        left this way mounts without reading a log)."""
        if self._stopped is not None:
            self._refuse()
        if not (self.dirty() or (checkpoint and len(self._log))):
            return self.version
        self._check_writable()
        phys = None if checkpoint else self._log_room()
        if phys is not None:
            return self._guard_write(self._commit_log, phys)
        segments, discards = self._guard(self._stage.plan, self.read)
        blocks = sum(span for _, span, _ in segments)
        nodes = self._tree.nodes_upper_bound(segments, discards)
        if blocks + nodes > self._map.free:
            raise NoSpaceError(
                f"the image is full: the commit needs {blocks + nodes} blocks, {self._map.free} are free"
            )
        return self._guard_write(self._commit, segments, discards, len(segments) + nodes)

    def _commit(self, segments: list[Segment], discards: list[int], nonces: int) -> int:
        """A commit through the tree, which is also the checkpoint of the log: the logged blocks are
        staged, so they are sealed into the tree with the rest, and the records are freed."""
        self._ensure_nonces(nonces)
        self._tree.seal_data(segments, discards, self.version + 1)
        self._stage.clear()
        root = self._tree.seal_nodes(self.version + 1)
        for phys, span in self._log.records:
            for block in range(phys, phys + span):
                self._map.release(block)
        # The blocks and the superblock go under one flush; mount tells a torn commit from a whole one.
        self._publish(
            root, self._logical + self._tree.logical_delta, self._map.live_after_commit(), self._hwm, ABSENT
        )
        self._logical += self._tree.logical_delta
        self._tree.committed(root)
        self._stage.touched_leaves.clear()
        self._log.cleared()
        return self.version

    def _log_room(self) -> int | None:
        """The first physical block of the next log record, allocated, if this commit can be one
        (``CommitLog.may_take``, with nothing sealed into the tree since the last commit)."""
        stage = self._stage
        checkpoint = stage.staged + stage.extra + len(stage.touched_leaves) * self._geo.height
        if (
            self._tree.is_dirty() or stage.bytes > self._dirty_limit
            or not self._log.may_take(self._map.free, checkpoint, self._reserve)
        ):  # fmt: skip
            return None
        return self._map.alloc_run(1 + len(self._log.fresh))

    def _commit_log(self, phys: int) -> int:
        lbas = sorted(self._log.fresh)
        blocks = [self._staged_view(lba) for lba in lbas]
        self._ensure_nonces(1)
        span, version = 1 + len(lbas), self.version + 1
        out = self._tree.writes.slot(phys, span)
        entry = seal_record(self._tree.sealer, self._tree.nonces.take(), version, len(self._log) + 1,
                            self._log.head, lbas, blocks, phys, out)  # fmt: skip
        self._publish(self._tree.root, self._logical, self._map.live_after_commit(), self._hwm, entry)
        self._map.committed()
        for lba in lbas:
            self._log.carry(lba, bool(self._windows[lba >> self._wshift].present >> (lba & self._wmask) & 1))
        self._log.appended(phys, span, entry)
        return self.version

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

    def _ensure_nonces(self, count: int) -> None:
        """Before sealing ``count`` blocks, make sure their nonces are reserved by a superblock the
        counter has acknowledged; if not, publish one (the committed tree under a higher mark)."""
        nonces = self._tree.nonces
        if count <= nonces.room():
            return
        start = self._hwm
        hwm = start + max(NONCE_RESERVATION, count)
        if hwm >= NONCE_LIMIT:
            raise StorageError("the image has used up its nonces; copy its files to a new image")
        self._publish(self._tree.root, self._logical, self._map.live, hwm, self._log.head)
        nonces.next, nonces.limit = start, hwm

    def _publish(self, root: bytes, logical: int, physical: int, hwm: int, log: bytes) -> None:
        """Write the next superblock into the other slot, then advance the counter to its version."""
        version, slot = self.version + 1, 1 - self._slot
        body = pack_body(version, self._geo, hwm, logical, physical, root, log)
        raw = self._superblocks.seal_packed(slot, body)
        self._tree.writes.drain()
        self._dev.write(slot, raw)
        self._dev.flush()
        self._counter.advance(self.version, version)
        self._other_slot = f"slot {SLOT_NAMES[self._slot]}: version {self.version}"
        self.version, self._slot, self._hwm, self._physical = version, slot, hwm, physical
        self._raw_superblock = raw

    # ----------------------------------------------------------------- checking and reporting

    def check(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Read the committed image back from the device and verify every block, the whole tree and the
        free-space map; ``progress(done, total)`` is called as blocks are verified. Raises
        IntegrityError at the first fault."""
        if self._stopped is not None:
            self._refuse()
        self._guard(self._check, progress)

    # ----------------------------------------------------------------- failure

    def _guard(self, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Run ``fn``; an integrity failure stops the store for good (fail stop)."""
        try:
            return fn(*args, **kwargs)
        except IntegrityError as e:
            self._stop(IntegrityError, f"the store stopped after an integrity failure: {e}")
            raise
        except WriteFailed as e:  # a read waited for a background write, which failed
            self._stop(StorageError, f"the store stopped after a failed write: {e}")
            raise

    def _guard_write(self, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Run ``fn``, which changes the device. Any failure leaves the in-memory state unknown, so it
        stops the store for good; the last commit on the device is whole, and a remount recovers it."""
        try:
            return fn(*args, **kwargs)
        except IntegrityError as e:
            self._stop(IntegrityError, f"the store stopped after an integrity failure: {e}")
            raise
        except BaseException as e:
            self._stop(StorageError, f"the store stopped after a failed write: {e}")
            raise

    def _stop(self, cls: type[StorageError], message: str) -> None:
        if self._stopped is None:
            self._stopped = (cls, message)

    def _refuse(self) -> NoReturn:
        assert self._stopped is not None
        cls, message = self._stopped
        raise cls(message)
