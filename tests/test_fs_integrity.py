"""Damage: a tampered image surfaces as IntegrityError and stops the file system; a damaged file system
(authentic blocks saying impossible things) is refused by mount or by the full check, each check alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from haven.shield.storage.errors import IntegrityError, StorageError
from haven.shield.storage.fs import FileSystem, FsCorruptError
from haven.shield.storage.fs.dirs import Directories, encode_entry
from haven.shield.storage.fs.fsck import check
from haven.shield.storage.fs.records import (
    EXTENT,
    FileKind,
    FsHeader,
    InodeRecord,
    ItemKind,
    make_key,
)
from tests.fs_support import Image, new_image, tree_listing

BS = 4096


def _walk_everything(fs: FileSystem) -> None:
    """Touch every record and every data block the file system has."""
    for path, kind in tree_listing(fs).items():
        ino = fs.resolve(path.decode("utf-8", "surrogateescape"), follow=False)
        st = fs.stat(ino)
        if kind == "file":
            fs.read(ino, 0, st.size)
        elif kind == "symlink":
            fs.readlink(ino)
    check(fs)


def _populate(fs: FileSystem) -> None:
    d = fs.mkdir(fs.root, b"docs")
    for i in range(30):
        f = fs.create(d, b"note-%d.txt" % i)
        fs.write(f, 0, (b"contents of note %d " % i) * (50 * (i + 1)))
    fs.symlink(fs.root, b"link", b"docs/note-1.txt")
    fs.sync()


def test_every_tampered_block_is_caught(tmp_path: Path) -> None:
    """Flip one bit in each block of the image in turn: mount or use fails with IntegrityError, never
    with wrong data or a traceback of another kind."""
    img = new_image(tmp_path, 512)
    assert img.fs is not None
    _populate(img.fs)
    fs = img.fs
    files = [p for p, kind in tree_listing(fs).items() if kind == "file"]
    expected = {p: fs.read(fs.resolve(p.decode()), 0, 1 << 20) for p in files}
    img.close()
    pristine = img.path.read_bytes()
    used = [b for b in range(len(pristine) // BS) if pristine[b * BS : (b + 1) * BS].count(0) != BS]
    assert len(used) > 10
    counter = img.counter_path.read_bytes()
    caught = 0
    for block in used:
        damaged = bytearray(pristine)
        damaged[block * BS + 1000] ^= 0x10
        img.path.write_bytes(bytes(damaged))
        img.counter_path.write_bytes(counter)
        try:
            fs = img.mount()
            # Whatever is readable must be exactly what was written.
            for p, data in expected.items():
                assert fs.read(fs.resolve(p.decode()), 0, 1 << 20) == data
            _walk_everything(fs)
        except IntegrityError:
            caught += 1
        finally:
            img.close()
    # Blocks nothing references any more (older copies left by copy-on-write, the other superblock
    # slot) may change unnoticed; everything the image uses may not.
    assert caught >= len(used) // 2


def test_an_integrity_failure_stops_the_file_system(tmp_path: Path) -> None:
    img = new_image(tmp_path, 512, cache_nodes=64)
    assert img.fs is not None
    fs = img.fs
    f = fs.create(fs.root, b"victim")
    fs.write(f, 0, b"A" * (64 * BS))
    g = fs.create(fs.root, b"other")
    fs.write(g, 0, b"B" * 100)
    fs.sync()
    img.close()
    # Damage the middle of the file's data (it sits after the metadata written at format).
    raw = bytearray(img.path.read_bytes())
    ciphertext = [b for b in range(len(raw) // BS) if raw[b * BS : (b + 1) * BS].count(0) != BS]
    for b in ciphertext[len(ciphertext) // 2 : len(ciphertext) // 2 + 8]:
        raw[b * BS + 7] ^= 1
    img.path.write_bytes(bytes(raw))
    try:
        fs = img.mount()
    except IntegrityError:
        return  # the damage hit metadata read at mount: refused there, which is as good
    with pytest.raises(IntegrityError) as info:
        fs.read(fs.lookup(fs.root, b"victim"), 0, 64 * BS)
    assert "Traceback" not in str(info.value)
    for op in (lambda: fs.stat(fs.root), lambda: fs.read(g, 0, 10), lambda: fs.create(fs.root, b"x"),
               lambda: fs.sync(), lambda: list(fs.readdir(fs.root))):
        with pytest.raises((IntegrityError, StorageError)):
            op()
    img.close()


def test_a_wrong_image_is_not_a_file_system(tmp_path: Path) -> None:
    img = new_image(tmp_path, 256)
    assert img.store is not None
    store = img.store
    store.write(0, bytes(BS))
    store.commit()
    with pytest.raises(FsCorruptError, match="no file system"):
        FileSystem.mount(store)


# -- what mount refuses: each check of the header, bitmap, root and orphans -------------------------


def _rewrite_header(img: Image, **changes: object) -> None:
    assert img.store is not None
    block = img.store.read(0)
    header = FsHeader.from_bytes(block[: FsHeader.SIZE]).replace(**changes)
    img.store.write(0, header.to_bytes() + block[FsHeader.SIZE :])
    img.store.commit()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"magic": b"NOTAFS\0\0"}, "no file system"),
        ({"format_version": 2}, "version 2 is not supported"),
        ({"block_size": 8192}, "block size or capacity"),
        ({"capacity": 7}, "block size or capacity"),
        ({"bitmap_start": 2}, "bitmap is not where"),
        ({"bitmap_blocks": 5}, "bitmap is not where"),
        ({"tree_root": 0}, "root is out of range"),
        ({"tree_root": 1 << 40}, "root is out of range"),
        ({"tree_height": 0}, "root is out of range"),
        ({"root_ino": 2}, "inode numbers"),
        ({"next_ino": 1}, "inode numbers"),
        ({"blocks_used": 100}, "bitmap marks"),
        ({"reserved0": 1}, "reserved"),
    ],
)
def test_mount_refuses_a_bad_header(tmp_path: Path, changes: dict[str, object], message: str) -> None:
    img = new_image(tmp_path, 256)
    _rewrite_header(img, **changes)
    assert img.store is not None
    with pytest.raises(FsCorruptError, match=message):
        FileSystem.mount(img.store)


def test_mount_refuses_bytes_after_the_header(tmp_path: Path) -> None:
    img = new_image(tmp_path, 256)
    assert img.store is not None
    block = bytearray(img.store.read(0))
    block[-1] = 1
    img.store.write(0, block)
    img.store.commit()
    with pytest.raises(FsCorruptError, match="after the header"):
        FileSystem.mount(img.store)


def test_mount_refuses_a_bitmap_that_frees_blocks_past_capacity(tmp_path: Path) -> None:
    img = new_image(tmp_path, 256)
    assert img.store is not None and img.fs is not None
    capacity = img.store.capacity
    block = bytearray(img.store.read(1))
    block[capacity // 8 + 1] = 0  # bits past the capacity must stay set
    img.store.write(1, block)
    img.store.commit()
    with pytest.raises(FsCorruptError, match="past the image's capacity"):
        FileSystem.mount(img.store)


def test_mount_refuses_a_root_that_is_not_a_directory(tmp_path: Path) -> None:
    img = new_image(tmp_path, 256)
    fs = img.fs
    assert fs is not None and img.store is not None
    rec = fs.volume.inode(fs.root)
    rec.kind = FileKind.FILE
    fs.volume.put_inode(fs.root, rec)
    fs.sync()
    with pytest.raises(IntegrityError, match="root inode is not a directory"):
        FileSystem.mount(img.store)


@pytest.mark.parametrize(("setup", "message"), [("missing", "has no inode"), ("linked", "still has 1 links")])
def test_mount_refuses_a_bad_orphan(tmp_path: Path, setup: str, message: str) -> None:
    img = new_image(tmp_path, 256)
    fs = img.fs
    assert fs is not None and img.store is not None
    ino = 77 if setup == "missing" else fs.create(fs.root, b"f")
    fs.volume.tree.insert(make_key(0, ItemKind.ORPHAN, ino), b"")
    fs.sync()
    with pytest.raises(FsCorruptError, match=message):
        FileSystem.mount(img.store)


# -- what the full check refuses: each check, broken alone -----------------------------------------


class _Scene:
    """root/{f (3 blocks), h (hard link to f), d/{g, s -> f}}, plus a free data block to point at."""

    def __init__(self, tmp_path: Path) -> None:
        self.image = new_image(tmp_path, 512)
        fs = self.image.fs
        assert fs is not None
        self.fs = fs
        self.vol = fs.volume
        self.tree = fs.volume.tree
        self.f = fs.create(fs.root, b"f")
        fs.write(self.f, 0, b"x" * (3 * BS))
        fs.link(self.f, fs.root, b"h")
        self.d = fs.mkdir(fs.root, b"d")
        self.g = fs.create(self.d, b"g")
        fs.write(self.g, 0, b"y" * 10)
        self.s = fs.symlink(self.d, b"s", b"../f")
        self.spare = self.vol.alloc_block()  # in use by nothing once released
        self.vol.free_block(self.spare)
        check(fs)

    def extent_of(self, ino: int) -> tuple[int, int, int]:
        lo = make_key(ino, ItemKind.EXTENT, 0)
        key, value = next(iter(self.tree.scan(lo, make_key(ino, ItemKind.EXTENT + 1, 0))))
        lba, count, _ = EXTENT.unpack(value)
        return key, lba, count

    def slot_of(self, dir_ino: int, name: bytes) -> int:
        found = Directories(self.vol).find(dir_ino, self.vol.inode(dir_ino), name)
        assert found is not None
        return found[0]

    def edit(self, ino: int, **changes: int) -> None:
        rec = self.vol.inode(ino)
        for k, v in changes.items():
            setattr(rec, k, v)
        self.vol.put_inode(ino, rec)

    def entry(self, dir_ino: int, name: bytes, ino: int, kind: int, slot: int | None = None) -> None:
        home = Directories(self.vol).home(name)
        self.tree.insert(make_key(dir_ino, ItemKind.DIR_ENTRY, home if slot is None else slot),
                         encode_entry(name, ino, kind))


def _detached_loop(s: _Scene) -> None:
    e = s.fs.mkdir(s.d, b"e")
    s.fs.unlink(s.d, b"g")
    s.fs.unlink(s.d, b"s")
    # Move d under e behind the file system's back: d and e now hold each other, away from the root.
    s.tree.delete(make_key(s.fs.root, ItemKind.DIR_ENTRY, s.slot_of(s.fs.root, b"d")))
    root = s.vol.inode(s.fs.root)
    s.edit(s.fs.root, nlink=root.nlink - 1, size=root.size - 1)
    s.entry(e, b"d", s.d, FileKind.DIR)
    s.edit(e, nlink=3, size=1)
    s.edit(s.d, parent=e)


def _removed_dir_with_entries(s: _Scene) -> None:
    s.tree.delete(make_key(s.fs.root, ItemKind.DIR_ENTRY, s.slot_of(s.fs.root, b"d")))
    root = s.vol.inode(s.fs.root)
    s.edit(s.fs.root, nlink=root.nlink - 1, size=root.size - 1)
    s.edit(s.d, nlink=0)
    s.tree.insert(make_key(0, ItemKind.ORPHAN, s.d), b"")
    s.vol.header.orphan_count += 1


def _unlinked_dir(s: _Scene) -> None:
    ino = s.vol.header.next_ino
    s.vol.header.next_ino += 1
    s.vol.header.inode_count += 1
    rec = InodeRecord(kind=FileKind.DIR, mode=0o755, nlink=2, parent=s.fs.root)
    s.tree.insert(make_key(ino, ItemKind.INODE, 0), rec.to_bytes())


FSCK_FAULTS: list[tuple[str, Callable[[_Scene], None], str]] = [
    ("block twice", lambda s: s.tree.replace(s.extent_of(s.f)[0], EXTENT.pack(s.extent_of(s.g)[1], 1, 0)),
     "also used by"),
    ("block free", lambda s: s.vol.bitmap.release(s.extent_of(s.g)[1], 1), "marked free in the bitmap"),
    ("block outside", lambda s: s.tree.replace(s.extent_of(s.g)[0], EXTENT.pack(1 << 40, 1, 0)),
     "outside the image"),
    ("bitmap leak", lambda s: s.vol.bitmap.mark_used(s.spare, 1), "marked used but nothing uses it"),
    ("fs record", lambda s: s.tree.insert(make_key(0, 9, 0), b""), "unknown file-system record"),
    ("ino too big", lambda s: setattr(s.vol.header, "next_ino", s.d), "outside the inode numbers"),
    ("no inode", lambda s: s.tree.insert(make_key(s.vol.header.next_ino + 5, ItemKind.EXTENT, 0),
                                         EXTENT.pack(s.spare, 1, 0)), "no inode"),
    ("entry under file", lambda s: s.entry(s.f, b"x", s.g, FileKind.FILE), "under a non-directory"),
    ("probe window", lambda s: s.entry(s.d, b"x", s.g, FileKind.FILE, slot=(1 << 62) + 12345),
     "out of its probe window"),
    ("dangling entry", lambda s: s.entry(s.d, b"x", 9999, FileKind.FILE), "does not exist"),
    ("entry kind", lambda s: s.entry(s.d, b"x", s.f, FileKind.DIR), "says kind"),
    ("names root", lambda s: s.entry(s.d, b"x", s.fs.root, FileKind.DIR), "names the root"),
    ("dir twice", lambda s: s.entry(s.fs.root, b"again", s.d, FileKind.DIR), "more than one name"),
    ("extent under dir",
     lambda s: s.tree.insert(make_key(s.d, ItemKind.EXTENT, 0), EXTENT.pack(s.spare, 1, 0)),
     "extents under a non-file"),
    ("overlap", lambda s: s.tree.insert(make_key(s.f, ItemKind.EXTENT, 1), EXTENT.pack(s.spare, 1, 0)),
     "overlapping"),
    ("empty extent", lambda s: s.tree.replace(s.extent_of(s.g)[0], EXTENT.pack(s.extent_of(s.g)[1], 0, 0)),
     "malformed or overlapping"),
    ("past eof", lambda s: s.edit(s.f, size=10), "past the end of the file"),
    ("symlink record", lambda s: s.tree.insert(make_key(s.s, ItemKind.SYMLINK, 4096), b"x"),
     "misplaced symlink record"),
    ("symlink size", lambda s: s.edit(s.s, size=3), "symlink target of 4 bytes"),
    ("unknown kind", lambda s: s.tree.insert(make_key(s.f, 9, 0), b""), "unknown kind"),
    ("bad inode", lambda s: s.tree.replace(make_key(s.g, ItemKind.INODE, 0), bytes(79) + b"\x01"), "inode"),
    ("orphan linked", lambda s: s.tree.insert(make_key(0, ItemKind.ORPHAN, s.g), b""),
     "not an unlinked inode"),
    ("dir nlink", lambda s: s.edit(s.d, nlink=5), "nlink 5, expected 2"),
    ("dir size", lambda s: s.edit(s.d, size=7), "size 7, but 2 entries"),
    ("dir parent", lambda s: s.edit(s.d, parent=s.g), "parent"),
    ("file nlink", lambda s: s.edit(s.f, nlink=1), "nlink 1, but 2 names"),
    ("unlinked file", lambda s: s.edit(s.g, nlink=0), "nlink 0, but 1 names"),
    ("unlinked dir", _unlinked_dir, "not linked into the tree"),
    ("removed dir with entries", _removed_dir_with_entries, "still has entries"),
    ("detached loop", _detached_loop, "not reachable from the root"),
    ("inode count", lambda s: setattr(s.vol.header, "inode_count", 99), "inode or orphan counts"),
]


@pytest.mark.parametrize(("damage", "message"), [(d, m) for _, d, m in FSCK_FAULTS],
                         ids=[n for n, _, _ in FSCK_FAULTS])
def test_the_full_check_finds_each_fault(
    tmp_path: Path, damage: Callable[[_Scene], None], message: str
) -> None:
    scene = _Scene(tmp_path)
    damage(scene)
    with pytest.raises(FsCorruptError, match=message):
        check(scene.fs)


def test_malformed_records_met_in_use_are_refused(tmp_path: Path) -> None:
    s = _Scene(tmp_path)
    s.tree.replace(make_key(s.d, ItemKind.DIR_ENTRY, s.slot_of(s.d, b"g")), b"\x01\x02")
    with pytest.raises(FsCorruptError, match="truncated directory entry"):
        s.fs.lookup(s.d, b"g")
    with pytest.raises(IntegrityError, match="stopped"):
        s.fs.stat(s.fs.root)  # and the file system stopped


def test_a_malformed_extent_met_in_use_is_refused(tmp_path: Path) -> None:
    s = _Scene(tmp_path)
    key, lba, _ = s.extent_of(s.f)
    s.tree.replace(key, EXTENT.pack(lba, 3, 5))
    with pytest.raises(FsCorruptError, match="malformed extent"):
        s.fs.read(s.f, 0, 10)


def test_a_malformed_inode_met_in_use_is_refused(tmp_path: Path) -> None:
    s = _Scene(tmp_path)
    s.tree.replace(make_key(s.g, ItemKind.INODE, 0), InodeRecord(kind=7, nlink=1).to_bytes())
    s.vol.forget_inode(s.g)
    with pytest.raises(FsCorruptError, match="unknown kind 7"):
        s.fs.stat(s.g)


def test_a_clean_busy_file_system_checks(tmp_path: Path) -> None:
    """The check passes on a real, busy file system (so the faults above are the checks' doing)."""
    img = new_image(tmp_path, 1024)
    assert img.fs is not None
    _populate(img.fs)
    fs = img.remount()
    report = check(fs)
    assert (report.files, report.directories, report.symlinks) == (30, 2, 1)
    assert report.blocks_used == fs.statfs().blocks - fs.statfs().blocks_free
