"""A node of the file system's B+tree, as a block holds it and as the tree works on it.

Layout (``docs/storage-filesystem.md``): a :class:`NodeHeader`, then ``count`` item-table entries, then
(leaves) the values back to back in item order; the rest of the block is zero. :meth:`Node.parse`
checks everything a block claims before the tree trusts it; :meth:`Node.to_bytes` lays it out again.
"""

from __future__ import annotations

from haven.errors import FormatError
from haven.shield.storage.fs.errors import FsCorruptError
from haven.shield.storage.fs.records import (
    BRANCH_ITEM,
    LEAF_ITEM,
    NODE_HEADER,
    NODE_MAGIC,
    BranchItem,
    LeafItem,
    NodeHeader,
    split_key,
)

HEADER = NodeHeader.SIZE
LEAF_ENTRY = LeafItem.SIZE
BRANCH_ENTRY = BranchItem.SIZE
_MASK64 = (1 << 64) - 1
_HEADER_RESERVED = bytes(6)  # NodeHeader.reserved1


def leaf_item(key: int, value_len: int) -> bytes:
    """A leaf's table entry (:class:`LeafItem`) for an item."""
    return LEAF_ITEM.pack(key >> 72, (key >> 64) & 0xFF, key & _MASK64, value_len)


class Node:
    """A parsed node: sorted integer keys, and values (leaf) or child block numbers (internal).

    A leaf also keeps each item's packed table entry (``table``, parallel to ``keys`` and ``vals``),
    made when the item is inserted or its value's length changes: serialising a node at sync is
    then one join, not a hundred packs (a node is written back at every sync that touches it).
    """

    __slots__ = ("children", "dirty", "keys", "lba", "level", "table", "used", "vals")

    def __init__(self, lba: int, level: int) -> None:
        self.lba = lba
        self.level = level
        self.keys: list[int] = []
        self.vals: list[bytes] = []
        self.children: list[int] = []
        self.table: list[bytes] | None = None  # leaves: see entries()
        self.used = HEADER
        self.dirty = False

    def entries(self) -> list[bytes]:
        """A leaf's packed item-table entries, parallel to ``keys``; made from the items when missing.

        Callers that change a leaf take this list *before* they change ``keys`` or ``vals``, and
        change it alongside them.
        """
        table = self.table
        if table is None:
            table = self.table = [leaf_item(k, len(v)) for k, v in zip(self.keys, self.vals, strict=True)]
        return table

    def to_bytes(self, block_size: int) -> bytes:
        count, used = len(self.keys), self.used
        if used > block_size:
            raise AssertionError(f"B+tree node {self.lba}: {used} bytes do not fit a block")
        header = NODE_HEADER.pack(NODE_MAGIC, self.level, 0, count, used, _HEADER_RESERVED)
        if self.level == 0:
            table = self.entries()
            if len(table) != count:
                raise AssertionError(f"B+tree node {self.lba}: {len(table)} table entries, {count} keys")
            data = b"".join([header, *table, *self.vals, bytes(block_size - used)])
        else:
            pack = BRANCH_ITEM.pack
            parts = [header]
            parts.extend(
                pack(k >> 72, (k >> 64) & 0xFF, k & _MASK64, c)
                for k, c in zip(self.keys, self.children, strict=True)
            )
            parts.append(bytes(block_size - used))
            data = b"".join(parts)
        if len(data) != block_size:
            actual = len(data) - block_size + used
            raise AssertionError(f"B+tree node {self.lba}: {actual} bytes, accounted {used}")
        return data

    @classmethod
    def parse(cls, lba: int, data: bytes, level: int) -> Node:
        """Parse and check a node read from block ``lba``, expected at ``level``."""
        where = f"B+tree node at logical block {lba}"
        try:
            header = NodeHeader.from_bytes(data[:HEADER])
        except FormatError as e:
            raise FsCorruptError(f"{where}: {e}") from None
        if header.magic != NODE_MAGIC:
            raise FsCorruptError(f"{where}: not a node (bad magic)")
        if header.level != level:
            raise FsCorruptError(f"{where}: level {header.level}, expected {level}")
        node = cls(lba, level)
        n = header.count
        if level == 0:
            end = HEADER + n * LEAF_ENTRY
            if end > len(data):
                raise FsCorruptError(f"{where}: {n} items do not fit")
            pos = end
            keys, vals = node.keys, node.vals
            for objid, kind, offset, vlen in LEAF_ITEM.iter_unpack(data[HEADER:end]):
                keys.append((objid << 72) | (kind << 64) | offset)
                vals.append(data[pos : pos + vlen])
                pos += vlen
            node.table = [data[at : at + LEAF_ENTRY] for at in range(HEADER, end, LEAF_ENTRY)]
        else:
            pos = HEADER + n * BRANCH_ENTRY
            if pos > len(data) or n == 0:
                raise FsCorruptError(f"{where}: {n} children")
            for objid, kind, offset, child in BRANCH_ITEM.iter_unpack(data[HEADER:pos]):
                node.keys.append((objid << 72) | (kind << 64) | offset)
                node.children.append(child)
        if pos > len(data) or header.used != pos:
            raise FsCorruptError(f"{where}: size {header.used} does not match its items")
        if data.count(0, pos) != len(data) - pos:
            raise FsCorruptError(f"{where}: bytes after the items are not zero")
        keys = node.keys
        if any(keys[i] >= keys[i + 1] for i in range(len(keys) - 1)):
            raise FsCorruptError(f"{where}: keys out of order")
        node.used = pos
        return node


def describe_key(key: int) -> str:
    objid, kind, offset = split_key(key)
    return f"({objid}, {kind}, {offset})"
