"""The tree as the enclave holds it: the committed root, the nodes changed since, and the verified
blocks in the cache; fetching and authenticating blocks, and sealing new ones copy-on-write."""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Sequence

from haven.shield.storage.alloc import PhysMap
from haven.shield.storage.cache import BlockCache
from haven.shield.storage.device import BlockDevice
from haven.shield.storage.errors import IntegrityError, StorageError
from haven.shield.storage.layout import (
    ABSENT,
    ENTRY,
    ENTRY_OFFSET_AT,
    ENTRY_SIZE,
    MAX_SPAN,
    NONCE_SIZE,
    TAG_SIZE,
)
from haven.shield.storage.tree import EntryTuple, Geometry, Sealer, node_key
from haven.shield.storage.writeback import WriteBehind

# Device reads of physically consecutive segments are merged up to this many blocks (and writes, in
# writeback.RUN_BLOCKS): few calls matter once the host serves them.
MAX_READ_RUN = 256
_ZERO_RESERVED = bytes(16)
_LITTLE_ENDIAN = sys.byteorder == "little"
_OFFSETS = [array("H", range(n)) for n in range(MAX_SPAN + 1)]
_PHYS = struct.Struct("<Q")  # an entry's first field (layout.Entry.phys)

# (first logical block, span, plaintext) of a data segment to seal.
Segment = tuple[int, int, memoryview]
# (first physical block, first logical block, span, version, nonce, tag) of a sealed data segment.
_Sealed = tuple[int, int, int, int, bytes, bytes]


class NonceRange:
    """The data/node nonces this session may use: a counter below a mark a commit has made durable
    and the freshness counter has acknowledged (docs/storage-format.md, "Nonces")."""

    def __init__(self) -> None:
        self.next = 0
        self.limit = 0

    def room(self) -> int:
        return self.limit - self.next

    def take(self) -> bytes:
        n = self.next
        if n >= self.limit:
            raise StorageError("internal: a nonce was needed beyond the reserved range")
        self.next = n + 1
        return n.to_bytes(NONCE_SIZE, "big")


class BlockTree:
    def __init__(
        self, dev: BlockDevice, geo: Geometry, sealer: Sealer, root: bytes, pmap: PhysMap, cache: BlockCache
    ) -> None:
        self.dev = dev
        self.geo = geo
        self.sealer = sealer
        self.root = root  # the committed root entry (packed)
        self.map = pmap
        self.cache = cache
        self.nonces = NonceRange()
        # Nodes changed since the last commit, by level (index 0 unused): plaintext, pinned in memory.
        self.dirty: list[dict[int, bytearray]] = [{} for _ in range(geo.height + 1)]
        self.logical_delta = 0  # logical blocks added (or, negative, removed) since the last commit
        self.block_size = geo.block_size
        self.zero = bytes(geo.block_size)
        self._shift = geo.shift
        self._fmask = geo.fanout - 1
        self.writes = WriteBehind(dev, geo.block_size)
        self._read_scratch = bytearray()

    # ----------------------------------------------------------------- reading

    def read_device(self, phys: int, n: int) -> bytes:
        if self.writes.pending():
            self.writes.drain()  # the block may still be on its way to the device
        data = self.dev.read(phys, n)
        if len(data) != n * self.block_size:
            raise IntegrityError(f"the device returned {len(data)} bytes for {n} blocks at {phys}")
        return data

    def node(self, level: int, index: int) -> bytes | bytearray | None:
        """The verified plaintext of a tree node, or None for an absent subtree."""
        node: bytes | bytearray | None = self.dirty[level].get(index)
        if node is not None:
            return node
        key = node_key(level, index)
        node = self.cache.get(key)
        if node is not None:
            return node
        if level == self.geo.height:
            entry: EntryTuple = ENTRY.unpack(self.root)
        else:
            parent = self.node(level + 1, index >> self._shift)
            if parent is None:
                return None
            entry = ENTRY.unpack_from(parent, (index & self._fmask) * ENTRY_SIZE)
        if entry[0] == 0:
            return None
        phys, version, nonce, _, _, tag, _ = entry
        node = self.sealer.open_node(
            nonce, self.read_device(phys, 1) + tag, self.sealer.node_aad(level, index, version)
        )
        if node is None:
            raise IntegrityError(
                f"tree node level {level} index {index} (physical block {phys}) fails authentication"
            )
        # Not validated again: the mount walk validated every node of the committed tree, this one is
        # byte for byte that node (same nonce, same tag), and nodes sealed since are our own.
        self.cache.put(key, node)
        return node

    def fetch(self, lbas: Sequence[int], *, streaming: bool = False) -> dict[int, bytes]:
        """Authenticate and cache the data segments holding ``lbas`` (none of them staged). When
        ``streaming``, whole-window segments are not cached: a long sequential read would only
        evict the hot blocks for data it will not read again soon."""
        got: dict[int, bytes] = {}
        heads: dict[int, tuple[int, EntryTuple]] = {}  # first physical block -> (first lba, entry)
        leaf_index, leaf, covered = -1, None, (-1, -1)  # the leaf and segment of the previous lba
        for lba in lbas:
            if covered[0] <= lba < covered[1]:
                continue  # in the segment just found
            if lba >> self._shift != leaf_index:
                leaf_index = lba >> self._shift
                leaf = self.node(1, leaf_index)
            entry = None if leaf is None else ENTRY.unpack_from(leaf, (lba & self._fmask) * ENTRY_SIZE)
            if entry is None or entry[0] == 0:
                got[lba] = self.zero
            else:
                first = lba - entry[4]
                heads[entry[0] - entry[4]] = (first, entry)
                covered = (first, first + entry[3])
        order = sorted(heads)
        i = 0
        while i < len(order):
            j, length = i, heads[order[i]][1][3]
            while (
                j + 1 < len(order)
                and order[j + 1] == order[j] + heads[order[j]][1][3]
                and length < MAX_READ_RUN
            ):
                j += 1
                length += heads[order[j]][1][3]
            raw = memoryview(self.read_device(order[i], length))
            at = 0
            for head in order[i : j + 1]:
                first, (_, version, nonce, span, _, tag, _) = heads[head]
                end = at + span * self.block_size
                aad = self.sealer.data_aad(first, span, version)
                plain = self.sealer.open_data(nonce, b"".join((raw[at:end], tag)), aad)
                if plain is None:
                    raise IntegrityError(
                        f"data block {first} (segment of {span} at physical block {head})"
                        " fails authentication"
                    )
                at = end
                self._keep(first, span, plain, got, streaming and span == self.geo.span)
            i = j + 1
        return got

    def fetch_into(self, first: int, count: int, out: memoryview) -> None:
        """Blocks ``first .. first + count - 1`` as the tree holds them, authenticated, into ``out``:
        a long read, decrypted straight into the caller's buffer. Whole-window segments are not
        cached (as a streaming ``fetch``); shorter ones are. If any segment fails, ``out`` is zeroed
        before the error is raised: AES-GCM decrypts before it checks the tag."""
        size, end = self.block_size, first + count
        segments: list[_Sealed] = []
        lba, leaf_index, leaf = first, -1, None
        while lba < end:
            if lba >> self._shift != leaf_index:  # (a leaf holds many segments: looked up once)
                leaf_index = lba >> self._shift
                leaf = self.node(1, leaf_index)
            if leaf is None:
                stop = min(end, (leaf_index + 1) << self._shift)
                out[(lba - first) * size : (stop - first) * size] = bytes((stop - lba) * size)
                lba = stop
                continue
            at = (lba & self._fmask) * ENTRY_SIZE
            phys, version, nonce, span, offset, tag, _ = ENTRY.unpack_from(leaf, at)
            if phys == 0:
                out[(lba - first) * size : (lba - first + 1) * size] = self.zero
                lba += 1
                continue
            segments.append((phys - offset, lba - offset, span, version, nonce, tag))
            lba += span - offset
        try:
            self._read_and_open(segments, first, end, out)
        except IntegrityError:
            out[:] = bytes(len(out))
            raise

    def _read_and_open(self, segments: list[_Sealed], first: int, end: int, out: memoryview) -> None:
        """Read the segments (physically consecutive ones in one device call, each followed in the
        scratch buffer by room for its tag) and open them. (A second thread reading and opening
        half of each long read was measured slower on a two-core virtual machine: the hand-off and
        the wait cost an idle core's wake-up each call, and the halves slow each other down.)"""
        size = self.block_size
        if not self._read_scratch:
            self._read_scratch = bytearray(MAX_READ_RUN * (size + TAG_SIZE))
        scratch = memoryview(self._read_scratch)
        i = 0
        while i < len(segments):  # at most MAX_READ_RUN blocks at a time: the scratch stays bounded
            j, blocks = i, 0
            while j < len(segments) and blocks + segments[j][2] <= MAX_READ_RUN:
                blocks += segments[j][2]
                j += 1
            self._read_segments(segments[i:j], scratch)
            self._open_segments(segments[i:j], scratch, first, end, out)
            i = j

    def _read_segments(self, segments: list[_Sealed], scratch: memoryview) -> None:
        size, i, at = self.block_size, 0, 0
        while i < len(segments):
            j, blocks = i, segments[i][2]
            while (
                j + 1 < len(segments)
                and segments[j + 1][0] == segments[j][0] + segments[j][2]
                and blocks + segments[j + 1][2] <= MAX_READ_RUN
            ):
                j += 1
                blocks += segments[j][2]
            parts = []
            for _, _, span, _, _, _ in segments[i : j + 1]:
                parts.append(scratch[at : at + span * size])
                at += span * size + TAG_SIZE
            self._read_device_into(segments[i][0], blocks, parts)
            i = j + 1

    def _open_segments(
        self, segments: list[_Sealed], scratch: memoryview, first: int, end: int, out: memoryview
    ) -> None:
        size, at = self.block_size, 0
        whole = self.geo.span
        data_aad, open_into = self.sealer.data_aad, self.sealer.open_data_into
        for _, seg_first, span, version, nonce, tag in segments:
            stop = at + span * size
            scratch[stop : stop + TAG_SIZE] = tag
            sealed = scratch[at : stop + TAG_SIZE]
            aad = data_aad(seg_first, span, version)
            lo, hi = max(first, seg_first), min(end, seg_first + span)
            dest = out[(lo - first) * size : (hi - first) * size]
            plain: bytes | memoryview | None
            if (lo, hi) == (seg_first, seg_first + span):  # the whole segment: opened in place
                plain = dest if open_into(nonce, sealed, aad, dest) else None
            else:  # a read starting or ending inside it: opened aside, the part wanted copied
                plain = self.sealer.open_data(nonce, bytes(sealed), aad)
                if plain is not None:
                    dest[:] = plain[(lo - seg_first) * size : (hi - seg_first) * size]
            if plain is None:
                raise IntegrityError(f"data block {seg_first} (segment of {span}) fails authentication")
            if span < whole:
                self._cache_segment(seg_first, span, bytes(plain))
            at = stop + TAG_SIZE

    def close(self) -> None:
        """End the writer thread (dropping writes not yet handed to the device)."""
        self.writes.close()

    def _read_device_into(self, phys: int, n: int, parts: list[memoryview]) -> None:
        if self.writes.pending():
            self.writes.drain()
        read_into = getattr(self.dev, "read_into", None)
        if read_into is None:
            data = self.read_device(phys, n)
            at = 0
            for part in parts:
                part[:] = data[at : at + len(part)]
                at += len(part)
            return
        read_into(phys, parts)

    def _keep(self, first: int, span: int, plain: bytes, got: dict[int, bytes], skip_cache: bool) -> None:
        size = self.block_size
        for k in range(span):
            got[first + k] = plain if span == 1 else plain[k * size : (k + 1) * size]
        if not skip_cache:
            self._cache_segment(first, span, plain)

    def _cache_segment(self, first: int, span: int, plain: bytes) -> None:
        put, size = self.cache.put, self.block_size
        if span == 1:
            put(first, plain)
            return
        for k in range(span):
            put(first + k, plain[k * size : (k + 1) * size])

    # ----------------------------------------------------------------- sealing

    def dirty_node(self, level: int, index: int) -> bytearray:
        node = self.dirty[level].get(index)
        if node is None:
            base = self.node(level, index)
            node = bytearray(self.block_size) if base is None else bytearray(base)
            self.dirty[level][index] = node
            self.cache.pop(node_key(level, index))
        return node

    def is_dirty(self) -> bool:
        return any(self.dirty)

    def nodes_upper_bound(self, segments: list[Segment], discards: list[int]) -> int:
        """Tree nodes the next commit may seal: every dirty node and every ancestor of one."""
        leaves = set(self.dirty[1]) | {lba >> self._shift for lba, _, _ in segments}
        leaves.update(lba >> self._shift for lba in discards)
        count, level_set = 0, leaves
        for level in range(1, self.geo.height + 1):
            level_set = level_set | set(self.dirty[level])
            count += len(level_set)
            level_set = {index >> self._shift for index in level_set}
        return count

    def seal_data(self, segments: list[Segment], discards: list[int], version: int) -> None:
        """Seal each segment into newly allocated blocks, hand them to the device, and point the leaves
        at them."""
        size = self.block_size
        placed: list[tuple[int, int, int, memoryview]] = []  # (phys, first lba, span, plaintext)
        for first, span, view in segments:
            done = 0
            for phys, length in self.map.alloc(span):  # a segment splits where free space is not contiguous
                placed.append((phys, first + done, length, view[done * size : (done + length) * size]))
                done += length
        placed.sort(key=lambda p: p[0])  # consecutive physical blocks go to the device as one run
        for phys, first, span, view in placed:
            self._seal_segment(phys, first, span, view, version)
        for lba in discards:
            leaf = self.dirty_node(1, lba >> self._shift)
            at = (lba & self._fmask) * ENTRY_SIZE
            old = ENTRY.unpack_from(leaf, at)[0]
            if old:
                self.map.release(old)
                self.logical_delta -= 1
                leaf[at : at + ENTRY_SIZE] = ABSENT
            self.cache.pop(lba)

    def seal_windows(self, first: int, view: memoryview, version: int) -> None:
        """Seal whole windows of new contents straight from the caller's buffer (nothing staged): one
        segment a window, split only where free space is not contiguous."""
        size, span = self.block_size, self.geo.span
        runs = self.map.alloc(len(view) // size)
        lba, done, end = first, 0, first + len(view) // size
        for phys, length in runs:
            while length:
                take = min(length, span - (lba & (span - 1)), end - lba)  # a segment stays in its window
                if take == span:
                    # Whole windows on consecutive blocks, as far as this leaf goes, are sealed and
                    # placed together (one slot, one leaf update): measured, a quarter less time
                    # outside the cipher than window by window.
                    leaf_end = ((lba >> self._shift) + 1) << self._shift
                    take = min(length, end - lba, leaf_end - lba) // span * span
                    part = view[done * size : (done + take) * size]
                    self._seal_whole(phys, lba, take // span, part, version)
                else:
                    self._seal_segment(phys, lba, take, view[done * size : (done + take) * size], version)
                phys, lba, done, length = phys + take, lba + take, done + take, length - take

    def _seal_whole(self, phys: int, first: int, n: int, view: memoryview, version: int) -> None:
        """``_seal_segment`` and ``_place`` for ``n`` whole windows from ``first`` (all in one leaf)
        bound for consecutive physical blocks from ``phys``."""
        span, size = self.geo.span, self.block_size
        wbytes, blocks = span * size, n * span
        out = self.writes.slot(phys, blocks)
        take, aad, seal = self.nonces.take, self.sealer.data_aad, self.sealer.seal_data_into
        entries = []
        for k in range(n):
            nonce, at = take(), k * wbytes
            dest = out[at : at + wbytes + TAG_SIZE]
            seal(nonce, view[at : at + wbytes], aad(first + k * span, span, version), dest)
            # (the tag is taken now: the next window's ciphertext overwrites it)
            tag = bytes(out[at + wbytes : at + wbytes + TAG_SIZE])
            entries.append(ENTRY.pack(0, version, nonce, span, 0, tag, _ZERO_RESERVED) * span)
        leaf = self.dirty_node(1, first >> self._shift)
        a = (first & self._fmask) * ENTRY_SIZE
        b = a + blocks * ENTRY_SIZE
        fresh = self._release_region(leaf, a, b)
        leaf[a:b] = b"".join(entries)
        self._set_positions(leaf, a, b, phys, span)
        if not fresh:  # (a block without an entry is never cached: nothing to forget then)
            self.cache.discard_run(first, blocks)  # bulk data: see _place

    def _seal_segment(self, phys: int, first: int, span: int, view: memoryview, version: int) -> None:
        out = self.writes.slot(phys, span)
        nonce = self.nonces.take()
        self.sealer.seal_data_into(nonce, view, self.sealer.data_aad(first, span, version), out)
        end = span * self.block_size
        self._place(first, span, phys, version, nonce, bytes(out[end : end + TAG_SIZE]), view)

    def _place(
        self, first: int, span: int, phys: int, version: int, nonce: bytes, tag: bytes, view: memoryview
    ) -> None:
        """Point the leaf entries of a sealed segment at it, releasing what they pointed at before."""
        leaf = self.dirty_node(1, first >> self._shift)
        a = (first & self._fmask) * ENTRY_SIZE
        if span == 1:  # a lone block (file system metadata, mostly): the short way
            old = _PHYS.unpack_from(leaf, a)[0]
            if old:
                self.map.release(old)
            else:
                self.logical_delta += 1
            ENTRY.pack_into(leaf, a, phys, version, nonce, 1, 0, tag, _ZERO_RESERVED)
            self.cache.put(first, bytes(view))
            return
        b = a + span * ENTRY_SIZE
        self._release_region(leaf, a, b)
        # The entries of a segment differ only in their physical block and offset: lay down one
        # template per entry, then set those two fields of all of them at once.
        leaf[a:b] = ENTRY.pack(0, version, nonce, span, 0, tag, _ZERO_RESERVED) * span
        self._set_positions(leaf, a, b, phys, span)
        if span == self.geo.span:
            # A whole window is bulk data: keep it out of the cache rather than evict the hot blocks
            # (file system metadata) for data that is seldom read back at once.
            self.cache.discard_run(first, span)
            return
        size = self.block_size
        for k in range(span):
            self.cache.put(first + k, bytes(view[k * size : (k + 1) * size]))

    def _release_region(self, leaf: bytearray, a: int, b: int) -> bool:
        """The entries at ``leaf[a:b]`` are about to be replaced: release what they point at.
        Returns whether they were all absent."""
        region = leaf[a:b]
        if region == self.zero[: b - a]:
            self.logical_delta += (b - a) // ENTRY_SIZE  # all new blocks: nothing to release
            return True
        for old in ENTRY.iter_unpack(region):
            if old[0]:
                self.map.release(old[0])
            else:
                self.logical_delta += 1
        return False

    def _set_positions(self, leaf: bytearray, a: int, b: int, phys: int, span: int) -> None:
        """Set the physical block (``phys`` onwards) and the offset in its segment (segments of
        ``span``, the first starting at ``a``) of every entry at ``leaf[a:b]``."""
        count = (b - a) // ENTRY_SIZE
        if _LITTLE_ENDIAN:
            words = memoryview(leaf).cast("Q")
            words[a // 8 : b // 8 : ENTRY_SIZE // 8] = array("Q", range(phys, phys + count))
            halves = memoryview(leaf).cast("H")
            offsets = _OFFSETS[span] if count == span else _OFFSETS[span] * (count // span)
            halves[(a + ENTRY_OFFSET_AT) // 2 : b // 2 : ENTRY_SIZE // 2] = offsets
        else:  # pragma: no cover - every platform Haven runs on is little-endian
            for k in range(count):
                at = a + k * ENTRY_SIZE
                _, version, nonce, seg_span, _, tag, reserved = ENTRY.unpack_from(leaf, at)
                ENTRY.pack_into(leaf, at, phys + k, version, nonce, seg_span, k % span, tag, reserved)

    def seal_nodes(self, version: int) -> bytes:
        """Seal every dirty node, leaves first, hand them to the device, and return the new root entry.
        An emptied node is not stored: its parent's entry becomes absent."""
        height, root = self.geo.height, self.root
        for level in range(1, height + 1):
            for index in sorted(self.dirty[level]):
                node = self.dirty[level][index]
                parent, at = None, 0
                if level == height:
                    old = ENTRY.unpack(root)[0]
                else:
                    parent = self.dirty_node(level + 1, index >> self._shift)
                    at = (index & self._fmask) * ENTRY_SIZE
                    old = ENTRY.unpack_from(parent, at)[0]
                if old:
                    self.map.release(old)
                entry = ABSENT
                if node != self.zero:  # (a compare: far cheaper than counting zeros)
                    phys = self.map.alloc(1)[0][0]
                    nonce = self.nonces.take()
                    out = self.writes.slot(phys, 1)
                    self.sealer.seal_node_into(nonce, node, self.sealer.node_aad(level, index, version), out)
                    tag = bytes(out[self.block_size :])
                    entry = ENTRY.pack(phys, version, nonce, 1, 0, tag, _ZERO_RESERVED)
                if parent is None:
                    root = entry
                else:
                    parent[at : at + ENTRY_SIZE] = entry
        return root

    def committed(self, root: bytes) -> None:
        """The commit with ``root`` is durable: its blocks are live, its nodes clean and cached."""
        self.map.committed()
        self.root = root
        self.logical_delta = 0
        for level, nodes in enumerate(self.dirty):
            for index, node in nodes.items():
                key = node_key(level, index)
                if node == self.zero:
                    self.cache.pop(key)
                else:
                    self.cache.put(key, bytes(node))
            nodes.clear()
