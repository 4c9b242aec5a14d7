"""The on-disk structures of a storage image, each declared once as a table.

``docs/storage-format.md`` is the prose version of this module: block roles, the tree, the
associated data of every AES-GCM seal, the key-derivation labels and the commit protocol. All
integers are little-endian. AES-GCM tags are 16 bytes and nonces 12 bytes (NIST SP 800-38D §5.2.1.1,
§8.2: 96-bit IVs).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from haven.structs import Struct, field_at

MAGIC = b"HAVENIMG"
FORMAT_VERSION = 1
TAG_SIZE = 16
NONCE_SIZE = 12

# Data and node nonces are a 64-bit counter in the 96-bit nonce field (docs: "Nonces").
NONCE_LIMIT = 1 << 64

# Physical blocks 0 and 1 hold superblock slots A and B; everything else is allocated copy-on-write.
SUPERBLOCK_SLOTS = 2
FIRST_FREE_BLOCK = SUPERBLOCK_SLOTS

MIN_BLOCK_SIZE = 512
MAX_BLOCK_SIZE = 65536

ENTRY_SIZE = 64
# A data segment is up to this many consecutive logical blocks sealed as one AES-GCM message. It never
# crosses an aligned window of that many blocks, so it always lies inside one leaf node.
MAX_SPAN = 16

# Block kinds bound into the associated data (0 is not a kind: an all-zero AAD matches nothing).
KIND_DATA = 1
KIND_NODE = 2
KIND_LOG = 3


@dataclass
class Entry(Struct):
    """One child pointer in a tree node (or the root pointer in a superblock): where the child's
    ciphertext is, and everything needed to authenticate it. An all-zero entry means "absent"
    (a never-written or discarded logical block, or an empty subtree)."""

    SIZE: ClassVar[int] = ENTRY_SIZE
    phys: int = field_at(0, "<Q")  # physical block of this block's ciphertext (0 = absent)
    version: int = field_at(8, "<Q")  # commit generation that sealed it (bound in the AAD)
    nonce: bytes = field_at(16, "12s")
    span: int = field_at(28, "<H")  # blocks in the segment sealed together (1 for nodes)
    offset: int = field_at(30, "<H")  # this block's index inside its segment
    tag: bytes = field_at(32, "16s")
    reserved: bytes = field_at(48, "16s", reserved=True)


# Byte offsets of Entry's fields that hot paths read or set across many entries at once, with strided
# memoryviews (stage.py, blocktree.py); they must agree with the table above.
ENTRY_SPAN_AT = 28
ENTRY_OFFSET_AT = 30


@dataclass
class BlockAad(Struct):
    """The AES-GCM associated data of a data segment or a tree node: it binds the image, the role
    and position of the block, and the commit that sealed it, so a block moved, swapped or replaced
    by an older version of itself fails its tag check even before the parent's tag is compared."""

    SIZE: ClassVar[int] = 40
    image_id: bytes = field_at(0, "16s")
    kind: int = field_at(16, "<B")  # KIND_DATA, KIND_NODE or KIND_LOG
    level: int = field_at(17, "<B")  # 0 for data, 1.. for nodes (1 = leaf nodes)
    span: int = field_at(18, "<H")
    reserved: int = field_at(20, "<I", reserved=True)
    # first logical block of a data segment; a node's index in its level; 0 for a log record
    index: int = field_at(24, "<Q")
    version: int = field_at(32, "<Q")


@dataclass
class SuperblockHeader(Struct):
    """The clear start of a superblock slot. It is the associated data of the sealed body, so every
    byte is authenticated; it is in the clear because the image id salts the key derivation."""

    SIZE: ClassVar[int] = 96
    magic: bytes = field_at(0, "8s")
    format_version: int = field_at(8, "<I")
    slot: int = field_at(12, "<I")  # 0 or 1: binds the slot, so swapping A and B fails
    block_size: int = field_at(16, "<I")
    reserved0: int = field_at(20, "<I", reserved=True)
    image_id: bytes = field_at(24, "16s")
    key_check: bytes = field_at(40, "16s")  # HKDF output that tells a wrong key from a damaged image
    nonce: bytes = field_at(56, "12s")
    format_salt: bytes = field_at(68, "16s")  # random per format: salts the key derivation with image_id
    reserved1: bytes = field_at(84, "12s", reserved=True)


@dataclass
class SuperblockBody(Struct):
    """The sealed part of a superblock; zero padding follows it to fill the block before the tag."""

    SIZE: ClassVar[int] = 192
    version: int = field_at(0, "<Q")  # commit generation; must agree with the freshness counter
    device_blocks: int = field_at(8, "<Q")  # the image's size in blocks, fixed at format
    capacity: int = field_at(16, "<Q")  # logical blocks addressable
    height: int = field_at(24, "<I")  # levels of tree nodes; the root node is at this level
    max_span: int = field_at(28, "<I")
    nonce_hwm: int = field_at(32, "<Q")  # every data/node nonce ever used is below this
    logical_used: int = field_at(40, "<Q")  # present logical blocks
    physical_used: int = field_at(48, "<Q")  # blocks the tree and the log use (superblocks excluded)
    reserved: bytes = field_at(56, "8s", reserved=True)
    root: Entry = field_at(64, Entry)
    log: Entry = field_at(128, Entry)  # the newest commit-log record (all zero: no log)


LOG_MAGIC = b"HVNLOG01"


@dataclass
class LogHeader(Struct):
    """The start of a commit-log record's first block (docs/storage-format.md, "The commit log"). The
    logical block numbers follow it as u64s, ``count`` of them; zeros fill the rest of the block. The
    blocks' contents follow in the record's next ``count`` blocks, in the same order."""

    SIZE: ClassVar[int] = 96
    magic: bytes = field_at(0, "8s")
    version: int = field_at(8, "<Q")  # the commit that wrote the record
    seq: int = field_at(16, "<I")  # 1 for the first record after the tree took in the last log
    count: int = field_at(20, "<I")  # logical blocks carried
    prev: Entry = field_at(24, Entry)  # the record before this one (all zero for the first)
    reserved: bytes = field_at(88, "8s", reserved=True)


def codec(table: type[Struct]) -> struct.Struct:
    """The table compiled to one ``struct.Struct`` (fields in table order), for per-block hot paths
    where building a dataclass per block would cost more than the encryption itself."""
    table._layout()  # compiles the table (once per class)
    return table._CODEC


ENTRY = codec(Entry)
AAD = codec(BlockAad)
ABSENT = bytes(ENTRY_SIZE)
