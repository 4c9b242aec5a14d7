"""The tree as the enclave holds it: the committed root, the nodes changed since, and the verified
blocks in the cache; fetching and authenticating blocks, and sealing new ones copy-on-write."""

from __future__ import annotations

from collections.abc import Sequence

from haven.shield.storage.alloc import PhysMap
from haven.shield.storage.cache import BlockCache
from haven.shield.storage.device import BlockDevice
from haven.shield.storage.errors import IntegrityError, StorageError
from haven.shield.storage.layout import ABSENT, ENTRY, ENTRY_SIZE, NONCE_SIZE, TAG_SIZE
from haven.shield.storage.tree import EntryTuple, Geometry, Sealer, node_key

# Device reads of physically consecutive segments are merged up to this many blocks, and so are
# device writes of consecutive sealed blocks: few calls matter once the host serves them.
MAX_READ_RUN = 256
MAX_WRITE_RUN = 1024
_ZERO_RESERVED = bytes(16)

# (first logical block, span, plaintext) of a data segment to seal.
Segment = tuple[int, int, memoryview]


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
        self._scratch = bytearray()

    # ----------------------------------------------------------------- reading

    def read_device(self, phys: int, n: int) -> bytes:
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

    def _keep(self, first: int, span: int, plain: bytes, got: dict[int, bytes], skip_cache: bool) -> None:
        put, size = self.cache.put, self.block_size
        if span == 1:
            got[first] = plain
            put(first, plain)
        elif skip_cache:
            for k in range(span):
                got[first + k] = plain[k * size : (k + 1) * size]
        else:
            for k in range(span):
                block = plain[k * size : (k + 1) * size]
                got[first + k] = block
                put(first + k, block)

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
        """Seal each segment into newly allocated blocks, write them, and point the leaves at them."""
        size = self.block_size
        placed: list[tuple[int, int, int, memoryview]] = []  # (phys, first lba, span, plaintext)
        for first, span, view in segments:
            done = 0
            for phys, length in self.map.alloc(span):  # a segment splits where free space is not contiguous
                placed.append((phys, first + done, length, view[done * size : (done + length) * size]))
                done += length
        placed.sort(key=lambda p: p[0])
        i = 0
        while i < len(placed):
            j, blocks = i, placed[i][2]
            while (
                j + 1 < len(placed)
                and placed[j + 1][0] == placed[j][0] + placed[j][2]
                and blocks < MAX_WRITE_RUN
            ):
                j += 1
                blocks += placed[j][2]
            out = self._seal_buffer(blocks * size + TAG_SIZE)
            at = 0
            for phys, first, span, view in placed[i : j + 1]:
                end = at + span * size
                nonce = self.nonces.take()
                aad = self.sealer.data_aad(first, span, version)
                self.sealer.seal_data_into(nonce, view, aad, out[at : end + TAG_SIZE])
                tag = bytes(out[end : end + TAG_SIZE])  # the next segment's ciphertext overwrites it
                self._place(first, span, phys, version, nonce, tag, view)
                at = end
            self.dev.write(placed[i][0], out[: blocks * size])
            i = j + 1
        for lba in discards:
            leaf = self.dirty_node(1, lba >> self._shift)
            at = (lba & self._fmask) * ENTRY_SIZE
            old = ENTRY.unpack_from(leaf, at)[0]
            if old:
                self.map.release(old)
                self.logical_delta -= 1
                leaf[at : at + ENTRY_SIZE] = ABSENT
            self.cache.pop(lba)

    def _seal_buffer(self, length: int) -> memoryview:
        """Scratch space for sealed runs, kept between commits (fresh memory costs page faults)."""
        if len(self._scratch) < length:
            self._scratch = bytearray(length)
        return memoryview(self._scratch)[:length]

    def _place(
        self, first: int, span: int, phys: int, version: int, nonce: bytes, tag: bytes, view: memoryview
    ) -> None:
        """Point the leaf entries of a sealed segment at it, releasing what they pointed at before."""
        size = self.block_size
        leaf = self.dirty_node(1, first >> self._shift)
        slot = first & self._fmask
        region = leaf[slot * ENTRY_SIZE : (slot + span) * ENTRY_SIZE]
        if region.count(0) == len(region):
            self.logical_delta += span  # all new blocks: nothing to release
        else:
            for old in ENTRY.iter_unpack(region):
                if old[0]:
                    self.map.release(old[0])
                else:
                    self.logical_delta += 1
        pack = ENTRY.pack_into
        for k in range(span):
            pack(leaf, (slot + k) * ENTRY_SIZE, phys + k, version, nonce, span, k, tag, _ZERO_RESERVED)
        if span == self.geo.span:
            # A whole window is bulk data: keep it out of the cache rather than evict the hot blocks
            # (file system metadata) for data that is seldom read back at once.
            for k in range(span):
                self.cache.pop(first + k)
            return
        for k in range(span):
            self.cache.put(first + k, bytes(view[k * size : (k + 1) * size]))

    def seal_nodes(self, version: int) -> bytes:
        """Seal every dirty node, leaves first, write them, and return the new root entry. An emptied
        node is not stored: its parent's entry becomes absent."""
        height, root = self.geo.height, self.root
        sealed: list[tuple[int, bytes]] = []
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
                if node.count(0) != len(node):
                    phys = self.map.alloc(1)[0][0]
                    nonce = self.nonces.take()
                    aad = self.sealer.node_aad(level, index, version)
                    ciphertext = self.sealer.seal_node(nonce, bytes(node), aad)
                    sealed.append((phys, ciphertext[:-TAG_SIZE]))
                    entry = ENTRY.pack(phys, version, nonce, 1, 0, ciphertext[-TAG_SIZE:], _ZERO_RESERVED)
                if parent is None:
                    root = entry
                else:
                    parent[at : at + ENTRY_SIZE] = entry
        sealed.sort(key=lambda s: s[0])
        i = 0
        while i < len(sealed):
            j = i
            while j + 1 < len(sealed) and sealed[j + 1][0] == sealed[j][0] + 1 and j - i < MAX_WRITE_RUN:
                j += 1
            self.dev.write(sealed[i][0], b"".join(block for _, block in sealed[i : j + 1]))
            i = j + 1
        return root

    def committed(self, root: bytes) -> None:
        """The commit with ``root`` is durable: its blocks are live, its nodes clean and cached."""
        self.map.committed()
        self.root = root
        self.logical_delta = 0
        for level, nodes in enumerate(self.dirty):
            for index, node in nodes.items():
                key = node_key(level, index)
                if node.count(0) == len(node):
                    self.cache.pop(key)
                else:
                    self.cache.put(key, bytes(node))
            nodes.clear()
