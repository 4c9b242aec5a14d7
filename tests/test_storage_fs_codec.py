"""The file system's fast serialisation: leaves' packed item tables, and records packed in one call.

Both must give exactly the bytes of the format's tables (``Struct.to_bytes`` / ``Node.parse``), and refuse
exactly what they refuse.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from haven.errors import FormatError
from haven.shield.storage.fs.alloc import Bitmap
from haven.shield.storage.fs.btree import BTree
from haven.shield.storage.fs.node import Node, leaf_item
from haven.shield.storage.fs.records import (
    FS_HEADER,
    INODE,
    FsHeader,
    InodeRecord,
    make_key,
)
from tests.fs_support import new_image

BS = 4096


class _Tree:
    def __init__(self, tmp_path: Path, cache_nodes: int = 64) -> None:
        self.image = new_image(tmp_path, 4096)
        assert self.image.store is not None
        self.store = self.image.store
        self.bitmap = Bitmap.fresh(self.store.capacity, BS, 2048)  # blocks the file system never uses
        self.tree = BTree.create(self.store, self._alloc, self._free, cache_nodes=cache_nodes)

    def _alloc(self) -> int:
        return self.bitmap.allocate(1)[0]

    def _free(self, lba: int) -> None:
        self.bitmap.release(lba, 1)

    def leaves(self) -> list[Node]:
        return [n for n, _, _ in self.tree.walk_nodes() if n.level == 0]


def _check_tables(t: _Tree) -> None:
    """Every leaf's kept table is what its items pack to, and its bytes parse back to the same items."""
    for node in t.leaves():
        assert node.table is not None
        assert node.table == [leaf_item(k, len(v)) for k, v in zip(node.keys, node.vals, strict=True)]
        again = Node.parse(node.lba, node.to_bytes(BS), 0)
        assert (again.keys, again.vals, again.used) == (node.keys, node.vals, node.used)
        assert again.table == node.table


def test_leaf_tables_follow_every_change(tmp_path: Path) -> None:
    t = _Tree(tmp_path)
    rng = random.Random(7)
    model: dict[int, bytes] = {}
    keys = [make_key(rng.randrange(1, 40), rng.randrange(1, 5), rng.randrange(1 << 30)) for _ in range(1500)]
    for step in range(6000):
        key = rng.choice(keys)
        value = rng.randbytes(rng.choice([0, 3, 16, 80, 300, 900]))
        if key not in model:
            t.tree.insert(key, value)
            model[key] = value
        elif rng.random() < 0.5:
            t.tree.replace(key, value)  # lengths change: entries are re-packed
            model[key] = value
        else:
            t.tree.delete(key)  # merges and redistributions move entries between leaves
            del model[key]
        if step % 500 == 499:
            _check_tables(t)
            t.tree.trim()  # evictions write nodes out; misses parse them back with their tables
    assert t.tree.height >= 2
    assert list(t.tree.scan(0, 1 << 200)) == sorted(model.items())
    _check_tables(t)


def test_a_hand_made_node_without_a_table_serialises_as_before(tmp_path: Path) -> None:
    node = Node(5, 0)
    node.keys = [make_key(1, 1, 0), make_key(1, 2, 9)]
    node.vals = [b"abc", b"defg"]
    node.used = 16 + 2 * 19 + 7
    data = node.to_bytes(BS)
    parsed = Node.parse(5, data, 0)
    assert parsed.keys == node.keys and parsed.vals == node.vals and parsed.table == node.table
    node.used += 1  # accounting that does not match the items is refused, as before
    with pytest.raises(AssertionError, match="accounted"):
        node.to_bytes(BS)


def test_insert_new_changes_nothing_when_the_key_is_there(tmp_path: Path) -> None:
    t = _Tree(tmp_path)
    for i in range(2000):
        t.tree.insert(make_key(3, 2, i * 7), bytes(30))
    t.tree.flush()
    before = [(n.lba, n.to_bytes(BS)) for n, _, _ in t.tree.walk_nodes()]
    assert not t.tree.insert_new(make_key(3, 2, 0), b"other")  # the smallest key: nothing lowered
    assert not t.tree.insert_new(make_key(3, 2, 700), b"other")
    assert [(n.lba, n.to_bytes(BS)) for n, _, _ in t.tree.walk_nodes()] == before
    assert t.tree.flush() == 0  # and nothing was marked dirty
    assert t.tree.insert_new(make_key(3, 2, 701), b"new")
    assert t.tree.get(make_key(3, 2, 701)) == b"new"


def test_an_in_place_update_does_not_rebalance_the_newest_leaf(tmp_path: Path) -> None:
    """Inode records are appended (numbers only grow) and then rewritten at their own size: the light
    leaf an appending split leaves on the right must not pull half its full sibling over each time."""
    t = _Tree(tmp_path, cache_nodes=8192)
    record = bytes(InodeRecord.SIZE)
    ino = 0
    while len(t.leaves()) < 3:
        ino += 1
        t.tree.insert(make_key(ino, 1, 0), record)
    t.tree.flush()
    newest = t.leaves()[-1]
    assert len(newest.keys) == 1  # the append split kept the full leaf full
    t.tree.replace(make_key(ino, 1, 0), b"\1" * InodeRecord.SIZE)
    assert t.tree.flush() == 1  # only that leaf, not its sibling too
    assert len(t.leaves()[-1].keys) == 1
    t.tree.replace(make_key(ino, 1, 0), b"\1")  # a shrinking value may rebalance, as a delete does
    _check_tables(t)


def _random_inode(rng: random.Random) -> InodeRecord:
    return InodeRecord(
        kind=rng.randrange(256), mode=rng.randrange(1 << 32), nlink=rng.randrange(1 << 32),
        max_probe=rng.randrange(1 << 32), size=rng.randrange(1 << 64), atime_ns=rng.randrange(1 << 64),
        mtime_ns=rng.randrange(1 << 64), ctime_ns=rng.randrange(1 << 64),
        generation=rng.randrange(1 << 64), parent=rng.randrange(1 << 64),
    )  # fmt: skip


def test_records_pack_and_parse_as_their_tables_do() -> None:
    rng = random.Random(1)
    for _ in range(300):
        rec = _random_inode(rng)
        raw = INODE.pack(rec)
        assert raw == rec.to_bytes()
        assert INODE.unpack(raw) == InodeRecord.from_bytes(raw) == rec
    header = FsHeader(magic=b"HAVENFS\x01", format_version=1, block_size=BS, capacity=99, name_key=bytes(32))
    assert FS_HEADER.pack(header) == header.to_bytes()
    assert FS_HEADER.unpack(header.to_bytes()) == header


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (bytes(InodeRecord.SIZE - 1), "79 bytes, expected 80"),
        (bytes(InodeRecord.SIZE + 1), "81 bytes, expected 80"),
        (bytes(1) + b"\1" + bytes(InodeRecord.SIZE - 2), "reserved0: reserved bytes are not zero"),
        (bytes(InodeRecord.SIZE - 1) + b"\1", "reserved1: reserved bytes are not zero"),
    ],
    ids=["short", "long", "reserved0", "reserved1"],
)
def test_a_bad_record_is_refused_as_the_table_refuses_it(raw: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        INODE.unpack(raw)
    with pytest.raises(FormatError, match=message):
        InodeRecord.from_bytes(raw)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nlink": 1 << 32}, "nlink"),
        ({"size": -1}, "size"),
        ({"reserved1": bytes(15)}, "reserved1: needs 16 bytes"),
        ({"reserved0": "abc"}, "reserved0: needs 3 bytes"),
    ],
    ids=["nlink-too-big", "negative-size", "short-bytes", "not-bytes"],
)
def test_a_record_that_does_not_fit_is_refused_naming_the_field(
    change: dict[str, object], message: str
) -> None:
    rec = InodeRecord(kind=1, nlink=1)
    for name, value in change.items():
        setattr(rec, name, value)
    with pytest.raises(FormatError, match=message):
        INODE.pack(rec)
