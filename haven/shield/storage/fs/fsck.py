"""A full consistency check of a file system (fsck): every node, record, link count and block.

The store's own check proves each block is authentic and fresh; this one proves that what the blocks
say is a file system: the B+tree is ordered and balanced, every record sits under an inode of the
right kind, link counts match the entries, every directory hangs from the root exactly once, and the
bitmap marks exactly the blocks the header, bitmap, nodes and extents use. The first fault found is
raised as :class:`FsCorruptError`; a clean file system yields a :class:`FsCheckReport`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from haven.errors import FormatError
from haven.shield.storage.fs.dirs import Directories, decode_entry
from haven.shield.storage.fs.errors import FsCorruptError
from haven.shield.storage.fs.filesystem import FileSystem
from haven.shield.storage.fs.records import (
    EXTENT,
    FIRST_COOKIE,
    ROOT_INO,
    SYMLINK_CHUNK,
    FileKind,
    InodeRecord,
    ItemKind,
    split_key,
)


@dataclass(frozen=True)
class FsCheckReport:
    """What a clean check counted."""

    inodes: int
    files: int
    directories: int
    symlinks: int
    orphans: int
    tree_nodes: int
    tree_height: int
    data_blocks: int
    blocks_used: int


@dataclass
class _Inode:
    rec: InodeRecord
    refs: int = 0
    subdirs: int = 0
    entries: int = 0
    holder: int | None = None
    extent_end: int = 0
    symlink_bytes: int = 0
    children: list[int] = field(default_factory=list)


def check(fs: FileSystem) -> FsCheckReport:
    """Check the file system as it stands (committed state plus changes not yet synced)."""
    vol = fs.volume
    header = vol.header
    tree = vol.tree
    bs = vol.block_size
    owner: dict[int, str] = {0: "the file system header"}
    for i in range(header.bitmap_blocks):
        owner[header.bitmap_start + i] = "the bitmap"

    def claim(lba: int, what: str) -> None:
        if not 0 <= lba < header.capacity:
            raise FsCorruptError(f"{what}: logical block {lba} is outside the image")
        if lba in owner:
            raise FsCorruptError(f"{what}: logical block {lba} is also used by {owner[lba]}")
        if not vol.bitmap.is_used(lba):
            raise FsCorruptError(f"{what}: logical block {lba} is marked free in the bitmap")
        owner[lba] = what

    nodes = 0
    items: list[tuple[int, bytes]] = []
    for node, lo, hi in tree.walk_nodes():
        nodes += 1
        where = f"B+tree node at logical block {node.lba}"
        claim(node.lba, where)
        keys = node.keys
        if keys and ((lo is not None and keys[0] < lo) or (hi is not None and keys[-1] >= hi)):
            raise FsCorruptError(f"{where}: keys outside the range its parent gives it")
        if node.level == 0:
            if not node.keys and node.lba != tree.root:
                raise FsCorruptError(f"{where}: an empty leaf")
            items.extend(zip(node.keys, node.vals, strict=True))
    tree.trim()

    inodes: dict[int, _Inode] = {}
    orphans: set[int] = set()
    # (directory, child, kind, name): counted once every inode is known
    links: list[tuple[int, int, int, bytes]] = []
    dirs = Directories(vol)
    data_blocks = 0
    for key, value in items:
        objid, kind, offset = split_key(key)
        if objid == 0:
            if kind != ItemKind.ORPHAN or value:
                raise FsCorruptError(f"file system record {objid, kind, offset}: unknown file-system record")
            orphans.add(offset)
            continue
        if kind == ItemKind.INODE:
            if offset or objid >= header.next_ino:
                raise FsCorruptError(f"inode {objid}: outside the inode numbers handed out")
            try:
                rec = InodeRecord.from_bytes(value)
                FileKind(rec.kind)
            except (FormatError, ValueError) as e:
                raise FsCorruptError(f"inode {objid}: {e}") from None
            inodes[objid] = _Inode(rec)
            continue
        ino = inodes.get(objid)
        if ino is None:
            raise FsCorruptError(f"record {objid, kind, offset}: no inode {objid}")
        if kind == ItemKind.DIR_ENTRY:
            if ino.rec.kind != FileKind.DIR:
                raise FsCorruptError(f"inode {objid}: directory entries under a non-directory")
            name, child, child_kind = decode_entry(value, f"directory {objid} slot {offset}")
            home = dirs.home(name)
            if offset < FIRST_COOKIE or not home <= offset <= home + ino.rec.max_probe:
                raise FsCorruptError(f"directory {objid}: entry in slot {offset} is out of its probe window")
            ino.entries += 1
            ino.children.append(child)
            links.append((objid, child, child_kind, name))
        elif kind == ItemKind.EXTENT:
            if ino.rec.kind != FileKind.FILE:
                raise FsCorruptError(f"inode {objid}: extents under a non-file")
            lba, count, reserved = EXTENT.unpack(value)
            if reserved or count == 0 or offset < ino.extent_end:
                raise FsCorruptError(f"inode {objid}: malformed or overlapping extent at block {offset}")
            for b in range(lba, lba + count):
                claim(b, f"data of inode {objid}")
            ino.extent_end = offset + count
            data_blocks += count
            if ino.extent_end > -(-ino.rec.size // bs):
                raise FsCorruptError(f"inode {objid}: blocks mapped past the end of the file")
        elif kind == ItemKind.SYMLINK:
            if ino.rec.kind != FileKind.SYMLINK or offset != ino.symlink_bytes or not value:
                raise FsCorruptError(f"inode {objid}: misplaced symlink record at {offset}")
            if len(value) > SYMLINK_CHUNK:
                raise FsCorruptError(f"inode {objid}: symlink record longer than {SYMLINK_CHUNK} bytes")
            ino.symlink_bytes += len(value)
        else:
            raise FsCorruptError(f"record {objid, kind, offset}: unknown kind")

    for parent, child, child_kind, name in links:
        _count_link(inodes, parent, child, child_kind, name)
    counts = _check_inodes(inodes, orphans)
    _check_tree_shape(inodes)
    if len(inodes) != header.inode_count or len(orphans) != header.orphan_count:
        raise FsCorruptError("file system header: inode or orphan counts differ from the records")
    used = len(owner)
    if used != vol.bitmap.used:
        leaked = [lba for lba in range(header.capacity) if vol.bitmap.is_used(lba) and lba not in owner]
        raise FsCorruptError(f"file system bitmap: block {leaked[0]} is marked used but nothing uses it")
    return FsCheckReport(
        inodes=len(inodes),
        files=counts[FileKind.FILE],
        directories=counts[FileKind.DIR],
        symlinks=counts[FileKind.SYMLINK],
        orphans=len(orphans),
        tree_nodes=nodes,
        tree_height=tree.height,
        data_blocks=data_blocks,
        blocks_used=used,
    )


def _count_link(inodes: dict[int, _Inode], parent: int, child: int, kind: int, name: bytes) -> None:
    where = f"directory {parent} entry {name!r}"
    target = inodes.get(child)
    if target is None:
        raise FsCorruptError(f"{where}: names inode {child}, which does not exist")
    if target.rec.kind != kind:
        raise FsCorruptError(f"{where}: says kind {kind}, inode {child} is kind {target.rec.kind}")
    if child == ROOT_INO:
        raise FsCorruptError(f"{where}: names the root directory")
    target.refs += 1
    if kind == FileKind.DIR:
        if target.refs > 1:
            raise FsCorruptError(f"{where}: directory {child} has more than one name")
        target.holder = parent
        inodes[parent].subdirs += 1


def _check_inodes(inodes: dict[int, _Inode], orphans: set[int]) -> dict[int, int]:
    counts: dict[int, int] = {FileKind.FILE: 0, FileKind.DIR: 0, FileKind.SYMLINK: 0}
    if ROOT_INO not in inodes or inodes[ROOT_INO].rec.kind != FileKind.DIR:
        raise FsCorruptError("file system: no root directory")
    for o in orphans:
        if o not in inodes or inodes[o].rec.nlink or inodes[o].refs:
            raise FsCorruptError(f"orphan {o}: not an unlinked inode")
    for number, ino in inodes.items():
        rec = ino.rec
        counts[rec.kind] += 1
        where = f"inode {number}"
        if number in orphans:
            if rec.kind == FileKind.DIR and ino.entries:
                raise FsCorruptError(f"{where}: a removed directory still has entries")
            continue
        if rec.kind == FileKind.DIR:
            expect = 2 + ino.subdirs
            if number != ROOT_INO and ino.refs != 1:
                raise FsCorruptError(f"{where}: directory is not linked into the tree")
            if rec.nlink != expect:
                raise FsCorruptError(f"{where}: nlink {rec.nlink}, expected {expect}")
            if rec.size != ino.entries:
                raise FsCorruptError(f"{where}: size {rec.size}, but {ino.entries} entries")
            holder = ROOT_INO if number == ROOT_INO else ino.holder
            if rec.parent != holder:
                raise FsCorruptError(f"{where}: parent {rec.parent}, but directory {holder} holds it")
        else:
            if rec.nlink != ino.refs or ino.refs == 0:
                raise FsCorruptError(f"{where}: nlink {rec.nlink}, but {ino.refs} names")
            if rec.kind == FileKind.SYMLINK and ino.symlink_bytes != rec.size:
                raise FsCorruptError(f"{where}: symlink target of {ino.symlink_bytes} bytes, size {rec.size}")
    return counts


def _check_tree_shape(inodes: dict[int, _Inode]) -> None:
    """Every linked directory is reachable from the root (no detached loops of directories)."""
    seen = {ROOT_INO}
    stack = [ROOT_INO]
    while stack:
        for child in inodes[stack.pop()].children:
            if inodes[child].rec.kind == FileKind.DIR and child not in seen:
                seen.add(child)
                stack.append(child)
    for number, ino in inodes.items():
        if ino.rec.kind == FileKind.DIR and ino.refs and number not in seen:
            raise FsCorruptError(f"inode {number}: directory not reachable from the root")
