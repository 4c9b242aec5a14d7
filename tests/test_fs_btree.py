"""The B+tree alone: against a sorted-dict model through splits, merges and re-reads, and hostile nodes."""

from __future__ import annotations

import random
from bisect import bisect_right
from pathlib import Path

import pytest

from haven.shield.storage.fs.alloc import Bitmap
from haven.shield.storage.fs.btree import BTree
from haven.shield.storage.fs.errors import FsCorruptError
from haven.shield.storage.fs.node import HEADER, Node
from haven.shield.storage.fs.records import NODE_MAGIC, NodeHeader, make_key
from tests.fs_support import new_image

BS = 4096


class _Harness:
    """A tree on the blocks of a real store, with its own bitmap, checked against a dict."""

    def __init__(self, tmp_path: Path) -> None:
        self.image = new_image(tmp_path, 4096)
        assert self.image.store is not None
        self.store = self.image.store
        # Blocks from 2048 up are outside anything the mounted file system uses.
        self.bitmap = Bitmap.fresh(self.store.capacity, BS, 2048)
        self.tree = BTree.create(self.store, self._alloc, self._free, cache_nodes=64)
        self.model: dict[int, bytes] = {}

    def _alloc(self) -> int:
        return self.bitmap.allocate(1)[0]

    def _free(self, lba: int) -> None:
        self.bitmap.release(lba, 1)

    def verify(self) -> None:
        keys = sorted(self.model)
        assert list(self.tree.scan(0, 1 << 200)) == [(k, self.model[k]) for k in keys]
        leaves = 0
        for node, lo, hi in self.tree.walk_nodes():
            own = node.keys
            if own:
                assert lo is None or own[0] >= lo
                assert hi is None or own[-1] < hi
            assert node.used <= BS
            if node.level == 0:
                leaves += 1
                if node.lba != self.tree.root:
                    assert node.keys, "empty non-root leaf"
        nodes = sum(1 for _ in self.tree.walk_nodes())
        assert self.bitmap.used - 2048 == nodes, "a node block leaked or was freed twice"

    def reopen(self) -> None:
        """Write the tree out and read it back from the store with an empty cache."""
        self.tree.flush()
        t = self.tree
        self.tree = BTree(self.store, t.root, t.height, self._alloc, self._free, cache_nodes=64)


@pytest.fixture
def h(tmp_path: Path) -> _Harness:
    return _Harness(tmp_path)


def _value(rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice([0, 1, 8, 80, 300, 600, 1100]))


def test_random_operations_match_a_sorted_dict(h: _Harness) -> None:
    rng = random.Random(42)
    keyspace = [
        make_key(rng.randrange(1, 50), rng.randrange(1, 5), rng.randrange(0, 1 << 40)) for _ in range(3000)
    ]
    for step in range(12_000):
        key = rng.choice(keyspace)
        op = rng.random()
        if op < 0.5:
            if key in h.model:
                v = _value(rng)
                h.tree.replace(key, v)
                h.model[key] = v
            else:
                v = _value(rng)
                h.tree.insert(key, v)
                h.model[key] = v
        elif op < 0.85:
            if key in h.model:
                assert h.tree.delete(key) == h.model.pop(key)
        else:
            assert h.tree.get(key) == h.model.get(key)
            keys = sorted(h.model)
            i = bisect_right(keys, key) - 1
            expect = (keys[i], h.model[keys[i]]) if i >= 0 else None
            assert h.tree.floor(key) == expect
        if step % 1000 == 999:
            h.tree.trim()
            h.verify()
            h.reopen()
            h.verify()
    assert h.tree.height >= 3


def test_deleting_everything_collapses_to_an_empty_leaf(h: _Harness) -> None:
    rng = random.Random(3)
    keys = [make_key(7, 1, i) for i in range(800)]
    for k in keys:
        h.tree.insert(k, rng.randbytes(1000))
        h.model[k] = b""
    assert h.tree.height >= 3
    rng.shuffle(keys)
    for k in keys:
        h.tree.delete(k)
    h.model.clear()
    assert h.tree.height == 1 and list(h.tree.scan(0, 1 << 200)) == []
    h.verify()


def test_sequential_inserts_fill_nodes(h: _Harness) -> None:
    for i in range(5000):
        h.tree.insert(make_key(i + 1, 1, 0), bytes(80))
    leaves = [n for n, _, _ in h.tree.walk_nodes() if n.level == 0]
    fill = sum(n.used for n in leaves) / (len(leaves) * BS)
    assert fill > 0.9  # appends split unevenly, so leaves are not left half empty


def test_scan_is_safe_against_changes_between_items(h: _Harness) -> None:
    for i in range(3000):
        h.tree.insert(make_key(1, 2, i * 10), bytes(50))
    seen = []
    for key, _ in h.tree.scan(make_key(1, 2, 0), make_key(1, 3, 0)):
        seen.append(key)
        off = key & 0xFFFFFFFF
        if off % 20 == 0:
            h.tree.insert(make_key(1, 2, off + 5), bytes(900))  # splits leaves ahead and behind
        if off >= 20 and (off - 10) % 30 == 0:
            h.tree.delete(make_key(1, 2, off - 10))
    original = [make_key(1, 2, i * 10) for i in range(3000)]
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert set(original) <= set(seen) | {make_key(1, 2, i * 10) for i in range(3000)}
    assert set(original) - set(seen) == set()


def test_misuse_is_a_corrupt_error(h: _Harness) -> None:
    h.tree.insert(make_key(1, 1, 1), b"x")
    with pytest.raises(FsCorruptError, match="inserted twice"):
        h.tree.insert(make_key(1, 1, 1), b"y")
    with pytest.raises(FsCorruptError, match="to delete is missing"):
        h.tree.delete(make_key(1, 1, 2))
    with pytest.raises(FsCorruptError, match="to replace is missing"):
        h.tree.replace(make_key(1, 1, 2), b"")


# -- hostile node blocks: each check of Node.parse, broken alone ------------------------------------


def _leaf_bytes() -> bytes:
    node = Node(5, 0)
    node.keys = [make_key(1, 1, 0), make_key(1, 2, 9)]
    node.vals = [b"abc", b"defg"]
    node.used = HEADER + 2 * 19 + 7
    return node.to_bytes(BS)


def _with_header(data: bytes, **changes: int) -> bytes:
    header = NodeHeader.from_bytes(data[:HEADER]).replace(**changes)
    return header.to_bytes() + data[HEADER:]


def test_a_good_node_parses() -> None:
    node = Node.parse(5, _leaf_bytes(), 0)
    assert node.vals == [b"abc", b"defg"] and node.used == HEADER + 45


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: _with_header(d, magic=NODE_MAGIC ^ 1), "bad magic"),
        (lambda d: _with_header(d, level=1), "level 1, expected 0"),
        (lambda d: _with_header(d, count=400), "do not fit"),
        (lambda d: _with_header(d, count=3), "does not match"),
        (lambda d: _with_header(d, used=HEADER + 44), "does not match"),
        (lambda d: d[:5] + b"\x07" + d[6:], "reserved"),
        (lambda d: d[:12] + b"\x01" + d[13:], "reserved"),
        (lambda d: d[:-1] + b"\x01", "not zero"),
        (lambda d: d[:HEADER] + d[HEADER + 19 : HEADER + 38] + d[HEADER : HEADER + 19] + d[HEADER + 38 :],
         "does not match|out of order"),
    ],
    ids=["magic", "level", "count-huge", "count", "used", "reserved0", "reserved1", "tail", "order"],
)
def test_each_node_check_refuses_its_fault(mutate, message: str) -> None:
    with pytest.raises(FsCorruptError, match=message):
        Node.parse(5, mutate(_leaf_bytes()), 0)


def test_keys_out_of_order_are_refused() -> None:
    node = Node(5, 0)
    node.keys = [make_key(1, 2, 0), make_key(1, 1, 0)]
    node.vals = [b"", b""]
    node.used = HEADER + 38
    with pytest.raises(FsCorruptError, match="out of order"):
        Node.parse(5, node.to_bytes(BS), 0)


def test_a_branch_without_children_is_refused() -> None:
    node = Node(5, 1)
    with pytest.raises(FsCorruptError, match="0 children"):
        Node.parse(5, node.to_bytes(BS), 1)
