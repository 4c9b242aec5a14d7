"""The file system's on-disk records, each declared once as a table (``docs/storage-filesystem.md``).

Everything the file system keeps lives in logical blocks of the :class:`SecureStore`, so every byte
here is inside the image's encryption and under its Merkle tree. Logical block 0 holds the
:class:`FsHeader`; the free-space bitmap follows it; every other block is a B+tree node or file data.

The B+tree has one key space, ordered as the tuple ``(objid, kind, offset)`` (like btrfs). In memory a
key is the integer ``objid << 72 | kind << 64 | offset``, so that ordering is integer ordering and a
search is one ``bisect`` per node; on disk it is the three little-endian fields of :class:`LeafItem`.
"""

from __future__ import annotations

import dataclasses
import enum
import operator
import struct
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from haven.errors import FormatError
from haven.structs import Struct, field_at

_S = TypeVar("_S", bound=Struct)

FS_MAGIC = b"HAVENFS\x01"
FORMAT_VERSION = 1
NODE_MAGIC = 0x444F4E48  # "HNOD" little-endian: the first word of every B+tree node

ROOT_INO = 1
# Inode numbers are never reused (next_ino only grows), so an inode number alone names one file for
# the life of the image; objid 0 belongs to file-system-wide records (orphans).
FIRST_INO = ROOT_INO

NAME_MAX = 255
SYMLINK_MAX = 4095  # PATH_MAX - 1 (POSIX <limits.h>), what Linux accepts for a symlink target
SYMLINK_CHUNK = 512  # a target is split into records this long, so no tree item exceeds a third of a node
LINK_MAX = 65000  # ext4's limit on hard links to one inode (EMLINK past it)
MAX_FILE_SIZE = (1 << 63) - 1  # off_t's range; file block indices stay far below 2**64

# Directory-entry slots (and so readdir cookies) start here: WASI cookies are u64 with 0 meaning "from
# the start"; values below 2**16 are left to the caller (the LibOS numbers "." and ".." there).
FIRST_COOKIE = 1 << 16
# A name's home slot is FIRST_COOKIE + (64-bit keyed hash >> 2): below 2**62 + 2**16, which leaves
# room for linear probing without ever reaching 2**63.
HASH_SHIFT = 2

MIN_BLOCK_SIZE = 2048  # a node must hold three of the largest items (a 255-byte name, a 512-byte chunk)


class ItemKind(enum.IntEnum):
    """The ``kind`` byte of a B+tree key: what the record under ``(objid, kind, offset)`` is."""

    INODE = 1  # (ino, INODE, 0) -> InodeRecord
    DIR_ENTRY = 2  # (dir ino, DIR_ENTRY, slot) -> DirEntryRecord + name
    EXTENT = 3  # (ino, EXTENT, first file block) -> ExtentRecord
    SYMLINK = 4  # (ino, SYMLINK, byte offset) -> up to SYMLINK_CHUNK bytes of the target
    ORPHAN = 5  # (0, ORPHAN, ino) -> empty: an inode unlinked while open, freed at release or mount


class FileKind(enum.IntEnum):
    """An inode's type (InodeRecord.kind)."""

    FILE = 1
    DIR = 2
    SYMLINK = 3

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {FileKind.FILE: "file", FileKind.DIR: "dir", FileKind.SYMLINK: "symlink"}

_KIND_SHIFT = 64
_OBJ_SHIFT = 72
_MASK64 = (1 << 64) - 1


def make_key(objid: int, kind: int, offset: int) -> int:
    """The in-memory key of ``(objid, kind, offset)``: an integer with the tuple's ordering."""
    return (objid << _OBJ_SHIFT) | (kind << _KIND_SHIFT) | offset


def split_key(key: int) -> tuple[int, int, int]:
    return key >> _OBJ_SHIFT, (key >> _KIND_SHIFT) & 0xFF, key & _MASK64


def key_objid(key: int) -> int:
    return key >> _OBJ_SHIFT


def key_kind(key: int) -> int:
    return (key >> _KIND_SHIFT) & 0xFF


def key_offset(key: int) -> int:
    return key & _MASK64


MAX_KEY = make_key(_MASK64, 0xFF, _MASK64)


@dataclass
class FsHeader(Struct):
    """Logical block 0: where the tree starts, the bitmap's place, counters, and the name-hash key."""

    SIZE: ClassVar[int] = 160
    magic: bytes = field_at(0, "8s")
    format_version: int = field_at(8, "<I")
    block_size: int = field_at(12, "<I")
    capacity: int = field_at(16, "<Q")  # logical blocks the store holds (fixed at format)
    bitmap_start: int = field_at(24, "<Q")  # first logical block of the free-space bitmap
    bitmap_blocks: int = field_at(32, "<Q")
    tree_root: int = field_at(40, "<Q")  # logical block of the B+tree's root node
    tree_height: int = field_at(48, "<I")  # levels: 1 when the root is a leaf
    reserved0: int = field_at(52, "<I", reserved=True)
    next_ino: int = field_at(56, "<Q")  # the next inode number to hand out (never reused)
    root_ino: int = field_at(64, "<Q")
    inode_count: int = field_at(72, "<Q")  # live inodes, orphans included
    blocks_used: int = field_at(80, "<Q")  # bits set in the bitmap
    orphan_count: int = field_at(88, "<Q")
    name_key: bytes = field_at(96, "32s")  # secret key of the directory-slot hash (random at format)
    reserved1: bytes = field_at(128, "32s", reserved=True)


@dataclass
class NodeHeader(Struct):
    """First bytes of every B+tree node; ``level`` 0 is a leaf, internal nodes count up from there."""

    SIZE: ClassVar[int] = 16
    magic: int = field_at(0, "<I")
    level: int = field_at(4, "<B")
    reserved0: int = field_at(5, "<B", reserved=True)
    count: int = field_at(6, "<H")  # items that follow the header
    used: int = field_at(8, "<H")  # bytes used by the node, header included
    reserved1: bytes = field_at(10, "6s", reserved=True)


@dataclass
class LeafItem(Struct):
    """A leaf's item table entry; the values follow the table back to back, in item order."""

    SIZE: ClassVar[int] = 19
    objid: int = field_at(0, "<Q")
    kind: int = field_at(8, "<B")
    offset: int = field_at(9, "<Q")
    value_len: int = field_at(17, "<H")


@dataclass
class BranchItem(Struct):
    """An internal node's entry: child ``child`` holds keys from this key up to the next entry's."""

    SIZE: ClassVar[int] = 25
    objid: int = field_at(0, "<Q")
    kind: int = field_at(8, "<B")
    offset: int = field_at(9, "<Q")
    child: int = field_at(17, "<Q")


@dataclass
class InodeRecord(Struct):
    """(ino, INODE, 0): one file, directory or symlink. Times are ns since the Unix epoch."""

    SIZE: ClassVar[int] = 80
    kind: int = field_at(0, "<B")  # FileKind
    reserved0: bytes = field_at(1, "3s", reserved=True)
    mode: int = field_at(4, "<I")  # permission bits (0o7777)
    nlink: int = field_at(8, "<I")
    max_probe: int = field_at(12, "<I")  # directories: the longest slot probe ever made in them
    size: int = field_at(16, "<Q")  # bytes (files, symlinks) or number of entries (directories)
    atime_ns: int = field_at(24, "<Q")
    mtime_ns: int = field_at(32, "<Q")
    ctime_ns: int = field_at(40, "<Q")
    generation: int = field_at(48, "<Q")  # the store version the inode was created in
    parent: int = field_at(56, "<Q")  # directories: the directory holding it (the root: itself)
    reserved1: bytes = field_at(64, "16s", reserved=True)


@dataclass
class DirEntryRecord(Struct):
    """(dir, DIR_ENTRY, slot): the fixed part of a directory entry; ``name_len`` name bytes follow."""

    SIZE: ClassVar[int] = 12
    ino: int = field_at(0, "<Q")
    kind: int = field_at(8, "<B")  # FileKind of the child, so readdir needs no inode lookups
    reserved: int = field_at(9, "<B", reserved=True)
    name_len: int = field_at(10, "<H")


@dataclass
class ExtentRecord(Struct):
    """(ino, EXTENT, first file block): ``count`` file blocks stored at logical blocks ``lba``..."""

    SIZE: ClassVar[int] = 16
    lba: int = field_at(0, "<Q")
    count: int = field_at(8, "<I")
    reserved: int = field_at(12, "<I", reserved=True)


MAX_EXTENT_BLOCKS = (1 << 32) - 1


def array_codec(cls: type[Struct]) -> struct.Struct:
    """The compiled codec of a flat table (integers and byte strings), packing a record in one call.

    Built from the class's own field table (so offsets are declared once); node tables hold a
    hundred items and decoding them one ``from_bytes`` at a time would dominate every cache miss.
    """
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    fmt = "".join(f.metadata["fmt"].lstrip("<") for f in fields)
    codec = struct.Struct("<" + fmt)
    cls.from_bytes(bytes(cls.SIZE))  # validates the table (offsets contiguous, SIZE covered)
    if codec.size != cls.SIZE:
        raise TypeError(f"{cls.__name__} is not a flat table")
    return codec


class RecordCodec(Generic[_S]):
    """A flat table's records packed and parsed in one C call each, with the checks of
    :meth:`Struct.to_bytes` and :meth:`Struct.from_bytes` (sizes, byte-string lengths, reserved
    fields zero). For records on hot paths: inodes are written several times per file operation,
    and the generic path walks the table field by field.
    """

    def __init__(self, cls: type[_S]) -> None:
        self.cls = cls
        self.codec = array_codec(cls)
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        self._values = operator.attrgetter(*(f.name for f in fields))
        self._strings = tuple(
            (i, f.metadata["size"]) for i, f in enumerate(fields) if f.metadata["fmt"].endswith("s")
        )
        self._reserved = tuple(
            (i, f.name, bytes(f.metadata["size"]) if f.metadata["fmt"].endswith("s") else 0)
            for i, f in enumerate(fields)
            if f.metadata["reserved"]
        )

    def pack(self, rec: _S) -> bytes:
        values = self._values(rec)
        for i, size in self._strings:
            if not isinstance(values[i], bytes) or len(values[i]) != size:
                return rec.to_bytes()  # refuses it, naming the field (struct would pad or cut it)
        try:
            return self.codec.pack(*values)
        except struct.error:
            return rec.to_bytes()  # raises FormatError naming the field that does not fit

    def unpack(self, raw: bytes) -> _S:
        if len(raw) != self.codec.size:
            raise FormatError(f"{self.cls.__name__}: {len(raw)} bytes, expected {self.codec.size}")
        values: tuple[Any, ...] = self.codec.unpack(raw)
        for i, name, zero in self._reserved:
            if values[i] != zero:
                raise FormatError(f"{self.cls.__name__}.{name}: reserved bytes are not zero")
        return self.cls(*values)


NODE_HEADER = array_codec(NodeHeader)
LEAF_ITEM = array_codec(LeafItem)
BRANCH_ITEM = array_codec(BranchItem)
DIRENT_FIXED = array_codec(DirEntryRecord)
EXTENT = array_codec(ExtentRecord)
INODE = RecordCodec(InodeRecord)
FS_HEADER = RecordCodec(FsHeader)
