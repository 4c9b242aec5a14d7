"""What a store reads back and reports about its committed state: the commit log's records (at mount
and in ``check``), the committed image verified block by block (``check``), and ``usage`` and ``info``.

:class:`StoreReports` is the part of :class:`~haven.shield.storage.store.SecureStore` that only reads its
state; the write and commit paths stay in ``store.py``.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from haven.shield.storage.alloc import PhysMap
from haven.shield.storage.blocktree import BlockTree
from haven.shield.storage.device import BlockDevice
from haven.shield.storage.errors import IntegrityError
from haven.shield.storage.layout import ENTRY, FIRST_FREE_BLOCK
from haven.shield.storage.log import CommitLog, LogRecord, read_chain
from haven.shield.storage.stage import Stage, Window
from haven.shield.storage.superblock import SLOT_NAMES
from haven.shield.storage.tree import Geometry
from haven.shield.storage.usage import StoreInfo, StoreUsage
from haven.shield.storage.verify import TreeWalk, compare_maps


class StoreReports:
    # The store's state read here, set up by SecureStore.__init__ and kept by its write and commit paths.
    version: int
    block_size: int
    capacity: int
    image_id: bytes
    _dev: BlockDevice
    _geo: Geometry
    _tree: BlockTree
    _map: PhysMap
    _stage: Stage
    _windows: dict[int, Window]
    _wshift: int
    _wmask: int
    _reserve: int
    _slot: int
    _other_slot: str
    _raw_superblock: bytes
    _hwm: int
    _logical: int
    _physical: int
    _log: CommitLog

    def _read_log(self, pmap: PhysMap) -> list[LogRecord]:
        """The commit log's records, authenticated, oldest first, each marked in use in ``pmap``."""
        root_version = ENTRY.unpack(self._tree.root)[1]
        records = read_chain(self._log.head, self._tree.read_device, self._tree.sealer, self._geo,
                             self.version, root_version)  # fmt: skip
        for record in records:
            pmap.mark_live_run(record.phys, record.span, f"commit log record (version {record.version})")
        return records

    def _check(self, progress: Callable[[int, int], None] | None) -> None:
        self._tree.writes.drain()  # blocks sealed early are read back like any other
        if not hmac.compare_digest(self._tree.read_device(self._slot, 1), self._raw_superblock):
            raise IntegrityError(
                f"superblock slot {SLOT_NAMES[self._slot]} changed on the device since it was read"
            )
        fresh = PhysMap(self._geo.device_blocks)
        walk = TreeWalk(self._dev, self._geo, self._tree.sealer, self.version, fresh, verify_data=True,
                        progress=progress, total=self._physical)  # fmt: skip
        logical = walk.run(ENTRY.unpack(self._tree.root))
        self._read_log(fresh)
        if progress is not None:
            progress(fresh.live, self._physical)  # every block verified is marked live: the log's too
        self._check_counts(logical, fresh.live)
        compare_maps(fresh, self._map)

    def _check_counts(self, logical: int, physical: int) -> None:
        if logical != self._logical:
            raise IntegrityError(
                f"the tree holds {logical} logical blocks; the superblock says {self._logical}"
            )
        if physical != self._physical:
            raise IntegrityError(
                f"the tree and the commit log use {physical} physical blocks; the superblock says"
                f" {self._physical}"
            )

    def _logged_counts(self) -> tuple[int, int]:
        """For ``usage``'s count of changes since the last commit, among the logged blocks: (staged
        ones nothing changed since: durable already, not changes; discarded ones the stage keeps no
        mark of, the tree never having held them: changes all the same)."""
        durable = gone = 0
        for lba in self._log.carried:
            w = self._windows.get(lba >> self._wshift)
            bit = lba & self._wmask
            if w is not None and w.write >> bit & 1:
                durable += lba not in self._log.fresh
            elif w is None or not w.discard >> bit & 1:
                gone += 1
        return durable, gone

    def usage(self) -> StoreUsage:
        durable, gone = self._logged_counts()
        return StoreUsage(
            block_size=self.block_size, device_blocks=self._geo.device_blocks, capacity=self.capacity,
            physical_used=self._map.n_blocks - FIRST_FREE_BLOCK - self._map.free,
            physical_free=self._map.free,
            reserve=self._reserve, logical_used=self._logical + self._log.carried_new,
            dirty_blocks=self._stage.dirty_blocks() - durable + gone,
        )  # fmt: skip

    def info(self) -> StoreInfo:
        return StoreInfo(
            image_id=self.image_id, version=self.version, block_size=self.block_size,
            device_blocks=self._geo.device_blocks, capacity=self.capacity, height=self._geo.height,
            max_span=self._geo.span, nonce_hwm=self._hwm, slot=SLOT_NAMES[self._slot],
            other_slot=self._other_slot, usage=self.usage(), log_records=len(self._log),
            log_blocks=self._log.blocks,
        )  # fmt: skip
