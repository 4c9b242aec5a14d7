"""The file system's shared state over a store: header, free-space bitmap, B+tree and inode records.

:class:`Volume` is what the namespace (:mod:`.filesystem`), directories (:mod:`.dirs`) and file data
(:mod:`.data`) are built on. It hands out and takes back logical blocks, reads and writes inode records
(keeping parsed ones in a small cache), and writes everything that changed back to the store at
:meth:`Volume.flush`.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

from haven.errors import FormatError
from haven.shield.storage.fs.alloc import Bitmap, bitmap_blocks_for
from haven.shield.storage.fs.btree import BTree
from haven.shield.storage.fs.errors import FsCorruptError, FsError
from haven.shield.storage.fs.records import (
    EXTENT,
    FORMAT_VERSION,
    FS_HEADER,
    FS_MAGIC,
    INODE,
    MIN_BLOCK_SIZE,
    ROOT_INO,
    FileKind,
    FsHeader,
    InodeRecord,
    ItemKind,
    make_key,
)

Buffer = bytes | bytearray | memoryview
HEADER_LBA = 0
_INODE_CACHE = 4096


class LogicalStore(Protocol):
    """What the file system uses of :class:`haven.shield.storage.store.SecureStore`."""

    @property
    def block_size(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def version(self) -> int: ...

    def read(self, lba: int) -> bytes: ...
    def read_many(self, lbas: Sequence[int]) -> list[bytes]: ...
    def read_into(self, first: int, count: int, out: memoryview) -> None: ...
    def write(self, lba: int, data: Buffer) -> None: ...
    def write_run(self, first: int, data: Buffer) -> None: ...
    def discard(self, lba: int) -> None: ...
    def commit(self) -> int: ...
    def committing(self) -> contextlib.AbstractContextManager[None]: ...


class Volume:
    """Header, bitmap, tree and inode records of one mounted file system."""

    def __init__(
        self,
        store: LogicalStore,
        header: FsHeader,
        bitmap: Bitmap,
        clock: Callable[[], int],
        cache_nodes: int,
        *,
        new_tree: bool = False,
    ) -> None:
        self.store = store
        self.header = header
        self.bitmap = bitmap
        self.clock = clock
        self.block_size = store.block_size
        if new_tree:
            self.tree = BTree.create(store, self.alloc_block, self.free_block, cache_nodes)
        else:
            self.tree = BTree(
                store, header.tree_root, header.tree_height, self.alloc_block, self.free_block, cache_nodes
            )
        self._inodes: OrderedDict[int, InodeRecord] = OrderedDict()
        self._written_header = b""
        self._header_pad = bytes(self.block_size - FsHeader.SIZE)

    # -- format and mount ---------------------------------------------------------------------------

    @classmethod
    def format(cls, store: LogicalStore, clock: Callable[[], int], cache_nodes: int) -> Volume:
        bs = store.block_size
        if bs < MIN_BLOCK_SIZE or bs & (bs - 1):
            raise FsError(errno.EINVAL, f"a file system needs a block size of at least {MIN_BLOCK_SIZE}, "
                                        f"a power of two; the image has {bs}")
        nbitmap = bitmap_blocks_for(store.capacity, bs)
        reserved = 1 + nbitmap
        if store.capacity < reserved + 2:
            raise FsError(errno.ENOSPC, f"an image of {store.capacity} blocks is too small for a file system")
        bitmap = Bitmap.fresh(store.capacity, bs, reserved)
        header = FsHeader(
            magic=FS_MAGIC,
            format_version=FORMAT_VERSION,
            block_size=bs,
            capacity=store.capacity,
            bitmap_start=1,
            bitmap_blocks=nbitmap,
            tree_root=0,
            tree_height=0,
            next_ino=ROOT_INO,
            root_ino=ROOT_INO,
            name_key=os.urandom(32),
        )
        return cls(store, header, bitmap, clock, cache_nodes, new_tree=True)

    @classmethod
    def mount(cls, store: LogicalStore, clock: Callable[[], int], cache_nodes: int) -> Volume:
        bs = store.block_size
        block = store.read(HEADER_LBA)
        try:
            header = FsHeader.from_bytes(block[: FsHeader.SIZE])
        except FormatError as e:
            raise FsCorruptError(f"file system header: {e}") from None
        if header.magic != FS_MAGIC:
            raise FsCorruptError("no file system in this image (logical block 0 is not a file system header)")
        if header.format_version != FORMAT_VERSION:
            raise FsCorruptError(f"file system format version {header.format_version} is not supported")
        if block.count(0, FsHeader.SIZE) != bs - FsHeader.SIZE:
            raise FsCorruptError("file system header: bytes after the header are not zero")
        if header.block_size != bs or header.capacity != store.capacity:
            raise FsCorruptError("file system header: block size or capacity differ from the image's")
        nbitmap = bitmap_blocks_for(header.capacity, bs)
        if header.bitmap_start != 1 or header.bitmap_blocks != nbitmap:
            raise FsCorruptError("file system header: the bitmap is not where it belongs")
        if not (header.bitmap_start + nbitmap <= header.tree_root < header.capacity) or not (
            1 <= header.tree_height <= 64
        ):
            raise FsCorruptError("file system header: the B+tree root is out of range")
        if header.root_ino != ROOT_INO or header.next_ino <= ROOT_INO:
            raise FsCorruptError("file system header: inode numbers out of range")
        lbas = list(range(header.bitmap_start, header.bitmap_start + nbitmap))
        bitmap = Bitmap.from_blocks(store.read_many(lbas), header.capacity, bs)
        if bitmap.used != header.blocks_used:
            raise FsCorruptError(
                f"file system header: {header.blocks_used} blocks in use, the bitmap marks {bitmap.used}"
            )
        vol = cls(store, header, bitmap, clock, cache_nodes)
        vol._written_header = block
        return vol

    # -- blocks -------------------------------------------------------------------------------------

    def alloc_block(self) -> int:
        return self.bitmap.allocate(1)[0]

    def free_block(self, lba: int) -> None:
        self.bitmap.release(lba, 1)
        self.store.discard(lba)

    def alloc_run(self, want: int, hint: int | None) -> tuple[int, int]:
        """Up to ``want`` contiguous data blocks, leaving the tree the room :meth:`reserve` promised."""
        spare = self.bitmap.free - self.tree_margin()
        if spare <= 0:
            raise FsError(errno.ENOSPC, "no space left in the image")
        return self.bitmap.allocate(min(want, spare), hint)

    def free_run(self, start: int, count: int) -> None:
        self.bitmap.release(start, count)
        discard = self.store.discard
        for lba in range(start, start + count):
            discard(lba)

    def tree_margin(self) -> int:
        # An operation makes at most a handful of inserts, each splitting at most one node per level
        # plus a new root: keeping this many blocks back means a split never meets a full image.
        return 6 * (self.tree.height + 2)

    def reserve(self, blocks: int = 0) -> None:
        """ENOSPC, before anything changes, unless ``blocks`` data blocks and the tree's room are free."""
        if self.bitmap.free < blocks + self.tree_margin():
            raise FsError(errno.ENOSPC, "no space left in the image")

    # -- inodes -------------------------------------------------------------------------------------

    def inode(self, ino: int) -> InodeRecord:
        """The inode record of ``ino`` (FsError ENOENT if there is none)."""
        rec = self._inodes.get(ino)
        if rec is not None:
            return rec
        raw = self.tree.get(make_key(ino, ItemKind.INODE, 0)) if 0 < ino < (1 << 64) else None
        if raw is None:
            raise FsError(errno.ENOENT, f"no inode {ino}")
        try:
            rec = INODE.unpack(raw)
        except FormatError as e:
            raise FsCorruptError(f"inode {ino}: {e}") from None
        if rec.kind not in (FileKind.FILE, FileKind.DIR, FileKind.SYMLINK):
            raise FsCorruptError(f"inode {ino}: unknown kind {rec.kind}")
        cache = self._inodes
        cache[ino] = rec
        if len(cache) > _INODE_CACHE:
            cache.popitem(last=False)
        return rec

    def put_inode(self, ino: int, rec: InodeRecord) -> None:
        self.tree.replace(make_key(ino, ItemKind.INODE, 0), INODE.pack(rec))
        self._inodes[ino] = rec

    def new_inode(self, kind: FileKind, mode: int, parent: int) -> tuple[int, InodeRecord]:
        now = self.clock()
        header = self.header
        ino = header.next_ino
        header.next_ino = ino + 1
        header.inode_count += 1
        rec = InodeRecord(
            kind=kind,
            mode=mode & 0o7777,
            nlink=2 if kind == FileKind.DIR else 1,
            atime_ns=now,
            mtime_ns=now,
            ctime_ns=now,
            generation=self.store.version + 1,
            parent=parent if kind == FileKind.DIR else 0,
        )
        self.tree.insert(make_key(ino, ItemKind.INODE, 0), INODE.pack(rec))
        self._inodes[ino] = rec
        return ino, rec

    def drop_inode(self, ino: int) -> None:
        """Delete every record of ``ino`` (inode, extents, symlink chunks), freeing its data blocks."""
        tree = self.tree
        for key, value in list(tree.scan(make_key(ino, 0, 0), make_key(ino + 1, 0, 0))):
            if (key >> 64) & 0xFF == ItemKind.EXTENT:
                lba, count, _ = EXTENT.unpack(value)
                self.free_run(lba, count)
            tree.delete(key)
        self._inodes.pop(ino, None)
        self.header.inode_count -= 1

    def forget_inode(self, ino: int) -> None:
        self._inodes.pop(ino, None)

    # -- write back ---------------------------------------------------------------------------------

    def flush(self) -> None:
        """Stage every change (tree nodes, bitmap blocks, header) in the store; the caller commits."""
        self.tree.flush()
        start = self.header.bitmap_start
        for index, block in self.bitmap.dirty_blocks():
            self.store.write(start + index, block)
            self.bitmap.written(index)
        header = self.header
        header.tree_root = self.tree.root
        header.tree_height = self.tree.height
        header.blocks_used = self.bitmap.used
        block = FS_HEADER.pack(header) + self._header_pad
        if block != self._written_header:
            self.store.write(HEADER_LBA, block)
            self._written_header = block

    def trim(self) -> None:
        self.tree.trim()
