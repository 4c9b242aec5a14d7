"""The tree's shape and its cryptography: geometry, node validation, and the AES-GCM seals.

The tree is at once the address map and the Merkle tree: a radix tree over logical block numbers
whose nodes are arrays of :class:`~haven.shield.storage.layout.Entry`. A leaf node (level 1) points at
data segments; a node at level L > 1 points at nodes of level L - 1; the superblock points at the
root node (level ``height``). Each entry holds its child's nonce and tag, so the root entry
authenticates everything below it.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from haven.shield.storage.errors import IntegrityError, StorageError
from haven.shield.storage.keys import StoreKeys
from haven.shield.storage.layout import (
    AAD,
    ABSENT,
    ENTRY,
    ENTRY_SIZE,
    FIRST_FREE_BLOCK,
    KIND_DATA,
    KIND_LOG,
    KIND_NODE,
    MAX_SPAN,
)

# The largest logical address space a format accepts: 2^48 blocks is far beyond any image, and keeps
# every node index and logical number well inside the u64 fields.
MAX_CAPACITY = 1 << 48

# Unpacked entry: (phys, version, nonce, span, offset, tag, reserved).
EntryTuple = tuple[int, int, bytes, int, int, bytes, bytes]


@dataclass(frozen=True)
class Geometry:
    """Sizes that follow from the block size and capacity chosen at format."""

    block_size: int
    capacity: int
    height: int
    device_blocks: int

    @classmethod
    def for_capacity(cls, block_size: int, capacity: int, device_blocks: int) -> Geometry:
        if not 1 <= capacity <= MAX_CAPACITY:
            raise StorageError(f"capacity {capacity}: must be 1..{MAX_CAPACITY} blocks")
        fanout = block_size // ENTRY_SIZE
        height, covered = 1, fanout
        while covered < capacity:
            height, covered = height + 1, covered * fanout
        return cls(block_size, capacity, height, device_blocks)

    @property
    def fanout(self) -> int:
        return self.block_size // ENTRY_SIZE

    @property
    def shift(self) -> int:
        return self.fanout.bit_length() - 1

    @property
    def span(self) -> int:
        """Blocks per aligned window: the longest data segment this image's writers make."""
        return min(MAX_SPAN, self.fanout)

    def nodes_for(self, lbas: int) -> int:
        """Tree nodes needed when the first ``lbas`` logical blocks are all present."""
        total, count = 0, lbas
        for _ in range(self.height):
            count = -(-count // self.fanout)
            total += count
        return total


def reserve_for(geo: Geometry) -> int:
    """Free blocks kept back from new data: enough for a burst of rewrites and their tree paths, so a
    full image can still delete and rewrite. About 1% of the image, within sensible bounds."""
    floor = 8 * geo.height + 2 * geo.span
    return min(max(floor, geo.device_blocks // 128), geo.device_blocks // 4)


def default_capacity(device_blocks: int, block_size: int) -> int:
    """The most logical blocks that fit beside a full tree and the reserve (0 if none do)."""
    room = device_blocks - FIRST_FREE_BLOCK

    def fits(capacity: int) -> bool:
        geo = Geometry.for_capacity(block_size, capacity, device_blocks)
        return capacity + geo.nodes_for(capacity) + reserve_for(geo) <= room

    low, high = 0, min(room, MAX_CAPACITY)
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def node_key(level: int, index: int) -> int:
    """A node's key in the block cache: negative, so it never meets a data block's logical number."""
    return ~((index << 6) | level)


class Sealer:
    """AES-256-GCM over data segments and tree nodes, with the associated data of layout.BlockAad."""

    def __init__(self, keys: StoreKeys, image_id: bytes) -> None:
        self._data = AESGCM(keys.data)
        self._node = AESGCM(keys.node)
        self.image_id = image_id

    def data_aad(self, first_lba: int, span: int, version: int) -> bytes:
        return AAD.pack(self.image_id, KIND_DATA, 0, span, 0, first_lba, version)

    def node_aad(self, level: int, index: int, version: int) -> bytes:
        return AAD.pack(self.image_id, KIND_NODE, level, 1, 0, index, version)

    def log_aad(self, span: int, version: int) -> bytes:
        """A commit-log record's: under the data key, told apart from data by its kind."""
        return AAD.pack(self.image_id, KIND_LOG, 0, span, 0, 0, version)

    def seal_data_into(self, nonce: bytes, plaintext: memoryview, aad: bytes, out: memoryview) -> None:
        """Encrypt into ``out`` (ciphertext, then the 16-byte tag)."""
        self._data.encrypt_into(nonce, plaintext, aad, out)

    def seal_node_into(self, nonce: bytes, plaintext: bytes | bytearray, aad: bytes, out: memoryview) -> None:
        self._node.encrypt_into(nonce, plaintext, aad, out)

    def open_data(self, nonce: bytes, ciphertext_and_tag: bytes, aad: bytes) -> bytes | None:
        """The plaintext, or None if it fails authentication (the caller names what failed)."""
        try:
            return self._data.decrypt(nonce, ciphertext_and_tag, aad)
        except InvalidTag:
            return None

    def open_data_into(
        self, nonce: bytes, ciphertext_and_tag: memoryview, aad: bytes, out: memoryview
    ) -> bool:
        """Decrypt into ``out``; False if it fails authentication, and then ``out`` holds unverified
        bytes the caller must discard."""
        try:
            self._data.decrypt_into(nonce, ciphertext_and_tag, aad, out)
        except InvalidTag:
            return False
        return True

    def open_node(self, nonce: bytes, ciphertext_and_tag: bytes, aad: bytes) -> bytes | None:
        try:
            return self._node.decrypt(nonce, ciphertext_and_tag, aad)
        except InvalidTag:
            return None


def validate_node(node: bytes | bytearray, level: int, index: int, geo: Geometry) -> list[EntryTuple]:
    """Every entry of an authenticated node, after checking it is well formed: absent entries are all
    zero, pointers stay inside the device, and a leaf's data segments are whole and consistent.

    Authentication already rules out an attacker here; this catches a writer's bug before it could
    make a reader trust the wrong bytes.
    """
    what = f"tree node level {level} index {index}"
    entries: list[EntryTuple] = list(ENTRY.iter_unpack(node))
    first = index << (geo.shift * level)
    step = 1 << (geo.shift * (level - 1))
    window = geo.span
    expect_more = 0  # members still owed by the current segment
    head: EntryTuple | None = None
    for slot, e in enumerate(entries):
        phys, version, nonce, span, offset, tag, reserved = e
        if phys == 0:
            if node[slot * ENTRY_SIZE : (slot + 1) * ENTRY_SIZE] != ABSENT:
                raise IntegrityError(f"{what}: absent entry {slot} is not zero")
            if expect_more:
                raise IntegrityError(f"{what}: data segment cut short at entry {slot}")
            continue
        if first + slot * step >= geo.capacity:
            raise IntegrityError(f"{what}: entry {slot} is beyond the image's capacity")
        if reserved.count(0) != len(reserved):
            raise IntegrityError(f"{what}: entry {slot} has non-zero reserved bytes")
        if not FIRST_FREE_BLOCK <= phys < geo.device_blocks:
            raise IntegrityError(f"{what}: entry {slot} points outside the device (block {phys})")
        if level > 1:
            if span != 1 or offset != 0:
                raise IntegrityError(f"{what}: entry {slot} has a segment shape")
            continue
        if not 1 <= span <= window or offset >= span:
            raise IntegrityError(f"{what}: entry {slot} has span {span} and offset {offset}")
        if offset == 0:
            if expect_more:
                raise IntegrityError(f"{what}: data segment cut short at entry {slot}")
            if (slot % window) + span > window:
                raise IntegrityError(f"{what}: data segment at entry {slot} crosses a window")
            head, expect_more = e, span - 1
            continue
        if head is None or expect_more == 0 or offset != head[3] - expect_more:
            raise IntegrityError(f"{what}: entry {slot} is not part of a whole segment")
        if phys != head[0] + offset or (version, nonce, span, tag) != (head[1], head[2], head[3], head[5]):
            raise IntegrityError(f"{what}: entry {slot} disagrees with its segment")
        expect_more -= 1
    if expect_more:
        raise IntegrityError(f"{what}: data segment cut short at the end of the node")
    return entries
