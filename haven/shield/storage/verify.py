"""Walking the committed tree from the device: at mount (nodes only, to learn which physical blocks
are in use) and for ``check`` (every node and every data segment, read back and authenticated)."""

from __future__ import annotations

from collections.abc import Callable

from haven.shield.storage.alloc import PhysMap
from haven.shield.storage.cache import BlockCache
from haven.shield.storage.device import BlockDevice
from haven.shield.storage.errors import IntegrityError
from haven.shield.storage.tree import EntryTuple, Geometry, Sealer, node_key, validate_node

# check() reports progress at most this often (in blocks), so a progress bar costs nothing.
_PROGRESS_EVERY = 256


class TreeWalk:
    """One depth-first walk of the tree under a root entry, marking every block it references in
    ``pmap`` (so a block referenced twice, or outside the device, is caught)."""

    def __init__(
        self,
        dev: BlockDevice,
        geo: Geometry,
        sealer: Sealer,
        max_version: int,
        pmap: PhysMap,
        *,
        verify_data: bool,
        cache: BlockCache | None = None,
        progress: Callable[[int, int], None] | None = None,
        total: int = 0,
        verify_after: int | None = None,
    ) -> None:
        self._dev = dev
        self._geo = geo
        self._sealer = sealer
        self._max_version = max_version
        self._map = pmap
        self._verify_data = verify_data
        # Data segments sealed after this version are verified even when ``verify_data`` is off.
        self._verify_after = max_version if verify_after is None else verify_after
        self._cache = cache
        self._progress = progress
        self._total = total
        self._done = 0
        self._reported = 0
        self.logical = 0

    def run(self, root: EntryTuple) -> int:
        """Walk the tree; returns the number of logical blocks present."""
        if root[0]:
            self._node(root, self._geo.height, 0)
        if self._progress is not None:
            self._progress(self._done, self._total)
        return self.logical

    def _node(self, entry: EntryTuple, level: int, index: int) -> None:
        phys, version, nonce, _, _, tag, _ = entry
        what = f"tree node level {level} index {index} (physical block {phys})"
        self._check_version(version, what)
        self._map.mark_live(phys, what)
        node = self._sealer.open_node(
            nonce, self._read(phys, 1) + tag, self._sealer.node_aad(level, index, version)
        )
        if node is None:
            raise IntegrityError(f"{what} fails authentication")
        entries = validate_node(node, level, index, self._geo)
        if self._cache is not None:
            self._cache.put(node_key(level, index), node)
        self._tick(1)
        first = index << self._geo.shift
        if level > 1:
            for slot, child in enumerate(entries):
                if child[0]:
                    self._node(child, level - 1, first + slot)
            return
        for slot, (phys, version, nonce, span, offset, tag, _) in enumerate(entries):
            if phys == 0 or offset:
                continue
            lba = first + slot
            what = f"data block {lba} (segment of {span} at physical block {phys})"  # cheap next to the walk
            self._check_version(version, what)
            self._map.mark_live_run(phys, span, what)
            self.logical += span
            if self._verify_data or version > self._verify_after:
                ciphertext = self._read(phys, span)
                if (
                    self._sealer.open_data(nonce, ciphertext + tag, self._sealer.data_aad(lba, span, version))
                    is None
                ):
                    raise IntegrityError(f"{what} fails authentication")
            self._tick(span)

    def _check_version(self, version: int, what: str) -> None:
        if not 1 <= version <= self._max_version:
            raise IntegrityError(f"{what}: version {version} is not of a commit up to {self._max_version}")

    def _read(self, phys: int, n: int) -> bytes:
        data = self._dev.read(phys, n)
        if len(data) != n * self._geo.block_size:
            raise IntegrityError(f"the device returned {len(data)} bytes for {n} blocks at {phys}")
        return data

    def _tick(self, blocks: int) -> None:
        self._done += blocks
        if self._progress is not None and self._done - self._reported >= _PROGRESS_EVERY:
            self._reported = self._done
            self._progress(self._done, self._total)


def compare_maps(walked: PhysMap, kept: PhysMap) -> None:
    """The free-space map kept in memory must agree with the tree just walked, block for block."""
    a, b = walked.committed_view(), kept.committed_view()
    if a != b:
        at = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
        held = "in use" if b[at] else "free"
        raise IntegrityError(f"physical block {at}: the free-space map says {held}, the tree disagrees")
