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

This module holds the lifecycle (format, mount), reads and the commit path; taking writes is
``writing.py``, reading back and reporting ``report.py``, and fail stop ``failstop.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

from haven.shield.storage.alloc import PhysMap
from haven.shield.storage.blocktree import BlockTree, Segment
from haven.shield.storage.cache import BlockCache
from haven.shield.storage.counter import FreshnessCounter
from haven.shield.storage.device import BlockDevice
from haven.shield.storage.errors import IntegrityError, NoSpaceError, StorageError
from haven.shield.storage.keys import derive_keys
from haven.shield.storage.layout import ABSENT, ENTRY, NONCE_LIMIT
from haven.shield.storage.log import CommitLog, seal_record
from haven.shield.storage.opening import NONCE_RESERVATION as NONCE_RESERVATION
from haven.shield.storage.opening import read_committed, write_first_superblock
from haven.shield.storage.report import StoreReports
from haven.shield.storage.stage import Stage, bits
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
from haven.shield.storage.writing import StoreWrites


class SecureStore(StoreWrites, StoreReports):
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
        self._stopped = None
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
        if count <= 2 * self._geo.span:
            for k, block in enumerate(self.read_many(range(first, first + count))):
                out[k * size : (k + 1) * size] = block
            return
        self._guard(self._tree.fetch_into, first, count, out)
        if self._windows:
            self._overlay_staged(first, count, out)

    def _overlay_staged(self, first: int, count: int, out: memoryview) -> None:
        """Over what the tree holds in ``out``, what is staged there since (written or discarded)."""
        size, end, zero = self.block_size, first + count, self._tree.zero
        for win in range(first >> self._wshift, ((end - 1) >> self._wshift) + 1):
            w = self._windows.get(win)
            if w is None:
                continue
            base = win << self._wshift
            for i in bits(w.write | w.discard):
                if first <= base + i < end:
                    at = (base + i - first) * size
                    out[at : at + size] = self._staged_view(base + i) if w.write >> i & 1 else zero

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

