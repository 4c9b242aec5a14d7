"""One B+tree over the store's logical blocks: every record of the file system lives in it.

Nodes are logical blocks. The store below is already copy-on-write and commits atomically, so the tree
updates its nodes in place between commits: a crash loses the uncommitted changes as a whole.
Parsed nodes are kept in an LRU cache; a changed node is marked dirty and serialised once, at
:meth:`BTree.flush` (sync) or when the cache evicts it (the store stages it until the commit).

Nodes are laid out as ``node.py`` says. An internal node's entry ``i`` says child ``i`` holds keys from
``key[i]`` up to ``key[i+1]``; keys are lower bounds (a separator stays when the key it was copied from
is deleted), strictly increasing.

Every operation touches one root-to-leaf path (plus one sibling per level when a node underflows), so
lookups, inserts and deletes cost O(log n) block touches.
"""

from __future__ import annotations

import errno
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Protocol

from haven.shield.storage.errors import NoSpaceError
from haven.shield.storage.fs.errors import FsCorruptError, FsError
from haven.shield.storage.fs.node import BRANCH_ENTRY, HEADER, LEAF_ENTRY, Node, describe_key, leaf_item


class BlockStore(Protocol):
    """What the tree needs of the store below it (a subset of :class:`SecureStore`)."""

    @property
    def block_size(self) -> int: ...

    def read(self, lba: int) -> bytes: ...
    def write(self, lba: int, data: bytes | bytearray | memoryview) -> None: ...
    def discard(self, lba: int) -> None: ...


class BTree:
    """The file system's B+tree: ``get``/``floor``/``scan``/``insert``/``replace``/``delete`` by integer key.

    ``allocate()`` hands out a free logical block for a new node and ``release(lba)`` takes one back;
    both belong to the file system, which also owns where the root is recorded (``root``, ``height``).
    """

    def __init__(
        self,
        store: BlockStore,
        root: int,
        height: int,
        allocate: Callable[[], int],
        release: Callable[[int], None],
        cache_nodes: int = 8192,
    ) -> None:
        self.store = store
        self.block_size = store.block_size
        self.root = root
        self.height = height
        self._allocate = allocate
        self._release = release
        self._cache: OrderedDict[int, Node] = OrderedDict()
        self._dirty: dict[int, Node] = {}
        self._limit = max(cache_nodes, 64)
        # A node lighter than this after a delete is merged with (or refilled from) a sibling.
        self._low = self.block_size // 4
        self.reads = 0  # nodes parsed from the store (cache misses), for benchmarks and tests

    @classmethod
    def create(
        cls,
        store: BlockStore,
        allocate: Callable[[], int],
        release: Callable[[int], None],
        cache_nodes: int = 8192,
    ) -> BTree:
        """A new, empty tree (a single empty leaf)."""
        root = allocate()
        tree = cls(store, root, 1, allocate, release, cache_nodes)
        node = Node(root, 0)
        tree._adopt(node)
        return tree

    # -- node cache ---------------------------------------------------------------------------------

    def node(self, lba: int, level: int) -> Node:
        cache = self._cache
        node = cache.get(lba)
        if node is not None:
            cache.move_to_end(lba)
            if node.level != level:
                raise FsCorruptError(f"B+tree node at logical block {lba}: reached at two levels")
            return node
        node = Node.parse(lba, self.store.read(lba), level)
        self.reads += 1
        cache[lba] = node
        return node

    def _adopt(self, node: Node) -> None:
        node.dirty = True
        self._cache[node.lba] = node
        self._dirty[node.lba] = node

    def _touch(self, node: Node) -> None:
        if not node.dirty:
            node.dirty = True
            self._dirty[node.lba] = node

    def _free(self, node: Node) -> None:
        self._cache.pop(node.lba, None)
        self._dirty.pop(node.lba, None)
        node.dirty = False
        self._release(node.lba)

    def flush(self) -> int:
        """Write every dirty node to the store (staged until the store's commit); returns how many."""
        dirty = self._dirty
        bs = self.block_size
        n = 0
        for node in list(dirty.values()):
            self.store.write(node.lba, node.to_bytes(bs))  # may refuse (no room): the rest stay dirty
            node.dirty = False
            del dirty[node.lba]
            n += 1
        return n

    def trim(self) -> None:
        """Bring the cache back under its limit (between operations only: callers hold no nodes then)."""
        cache = self._cache
        excess = len(cache) - self._limit
        if excess <= 0:
            return
        bs = self.block_size
        for _ in range(excess + self._limit // 8):
            node = next(iter(cache.values()))
            if node.dirty:
                try:
                    self.store.write(node.lba, node.to_bytes(bs))
                except NoSpaceError:
                    return  # the store has no room to stage it: keep it in memory until sync
                node.dirty = False
                del self._dirty[node.lba]
            del cache[node.lba]

    # -- lookups ------------------------------------------------------------------------------------

    def _leaf(self, key: int) -> Node:
        node = self.node(self.root, self.height - 1)
        while node.level:
            i = bisect_right(node.keys, key) - 1
            node = self.node(node.children[i if i > 0 else 0], node.level - 1)
        return node

    def _path(self, key: int, lower: bool = False) -> tuple[list[tuple[Node, int]], Node]:
        """The root-to-leaf path to ``key``; with ``lower``, first keys are lowered to admit ``key``."""
        path: list[tuple[Node, int]] = []
        node = self.node(self.root, self.height - 1)
        while node.level:
            i = bisect_right(node.keys, key) - 1
            if i < 0:
                i = 0
                if lower:
                    # A new smallest key of this subtree: keep the first key a true lower bound, so
                    # keys stay strictly increasing whatever later moves across node boundaries.
                    node.keys[0] = key
                    self._touch(node)
            path.append((node, i))
            node = self.node(node.children[i], node.level - 1)
        return path, node

    def get(self, key: int) -> bytes | None:
        leaf = self._leaf(key)
        keys = leaf.keys
        j = bisect_left(keys, key)
        if j < len(keys) and keys[j] == key:
            return leaf.vals[j]
        return None

    def floor(self, key: int) -> tuple[int, bytes] | None:
        """The item with the greatest key ``<= key``."""
        path, leaf = self._path(key)
        j = bisect_right(leaf.keys, key) - 1
        if j >= 0:
            return leaf.keys[j], leaf.vals[j]
        # Every key of this leaf is above ``key``: the answer is the last item of the leaf before it.
        for node, i in reversed(path):
            if i > 0:
                child = self.node(node.children[i - 1], node.level - 1)
                while child.level:
                    child = self.node(child.children[-1], child.level - 1)
                if not child.keys:  # delete merges any leaf it empties, so only the root is ever empty
                    raise FsCorruptError(f"B+tree node at logical block {child.lba}: an empty leaf")
                return child.keys[-1], child.vals[-1]
        return None

    def scan(self, lo: int, hi: int) -> Iterator[tuple[int, bytes]]:
        """Items with ``lo <= key < hi`` in key order.

        Safe against changes to the tree between items: each leaf's share is copied out, and the next
        leaf is found by a fresh search from the last key seen.
        """
        while True:
            path, leaf = self._path(lo)
            keys = leaf.keys
            j = bisect_left(keys, lo)
            batch = []
            while j < len(keys) and keys[j] < hi:
                batch.append((keys[j], leaf.vals[j]))
                j += 1
            # Where the next leaf starts, taken before the caller runs: its changes may split the path.
            nxt = self._next_leaf_key(path) if j >= len(keys) else None
            yield from batch
            if nxt is None or nxt >= hi:
                return
            lo = nxt

    def _next_leaf_key(self, path: list[tuple[Node, int]]) -> int | None:
        """The lower bound of the subtree right of the path's leaf, or None at the tree's end."""
        for node, i in reversed(path):
            if i + 1 < len(node.keys):
                return node.keys[i + 1]
        return None

    # -- updates ------------------------------------------------------------------------------------

    def insert(self, key: int, value: bytes) -> None:
        if not self.insert_new(key, value):
            raise FsCorruptError(f"B+tree: key {describe_key(key)} inserted twice")

    def insert_new(self, key: int, value: bytes) -> bool:
        """Insert ``key`` unless it is there already: then return False, having changed nothing (a key
        in the tree is at or above the first key of every node on its path, so no key is lowered)."""
        path, leaf = self._path(key, lower=True)
        keys = leaf.keys
        j = bisect_left(keys, key)
        if j < len(keys) and keys[j] == key:
            return False
        leaf.entries().insert(j, leaf_item(key, len(value)))
        keys.insert(j, key)
        leaf.vals.insert(j, value)
        leaf.used += LEAF_ENTRY + len(value)
        self._touch(leaf)
        if leaf.used > self.block_size:
            self._split(path, leaf, append=j == len(keys) - 1)
        return True

    def replace(self, key: int, value: bytes) -> None:
        path, leaf = self._path(key)
        keys = leaf.keys
        j = bisect_left(keys, key)
        if j >= len(keys) or keys[j] != key:
            raise FsCorruptError(f"B+tree: key {describe_key(key)} to replace is missing")
        grow = len(value) - len(leaf.vals[j])
        if grow:
            leaf.entries()[j] = leaf_item(key, len(value))
            leaf.used += grow
        leaf.vals[j] = value
        self._touch(leaf)
        if leaf.used > self.block_size:
            self._split(path, leaf)
        elif grow < 0 and leaf.used < self._low and path:
            # Only a shrinking value can make a node light; one left light on purpose (the right
            # half of an appending split) is not refilled from its full sibling, which would only
            # rewrite two nodes and undo what the split kept together.
            self._rebalance(path, leaf)

    def delete(self, key: int) -> bytes:
        path, leaf = self._path(key)
        keys = leaf.keys
        j = bisect_left(keys, key)
        if j >= len(keys) or keys[j] != key:
            raise FsCorruptError(f"B+tree: key {describe_key(key)} to delete is missing")
        del leaf.entries()[j]
        del keys[j]
        value = leaf.vals.pop(j)
        leaf.used -= LEAF_ENTRY + len(value)
        self._touch(leaf)
        if leaf.used < self._low and path:
            self._rebalance(path, leaf)
        return value

    def _split(self, path: list[tuple[Node, int]], node: Node, append: bool = False) -> None:
        """Split an overfull node, and its parents as far as needed.

        When the item that overfilled the node went at its end (keys that only grow, like new inode
        numbers), the old items stay together and the new one starts the right node: sequential
        inserts then fill nodes instead of leaving each half empty.
        """
        while node.used > self.block_size:
            right = Node(self._allocate(), node.level)
            if append and len(node.keys) > 1:
                m = len(node.keys) - 1
            elif node.level == 0:
                # Split by bytes, so both halves fit whatever the sizes of the values.
                half = (node.used - HEADER) // 2
                acc = 0
                m = 0
                while m < len(node.keys) - 1 and acc + LEAF_ENTRY + len(node.vals[m]) <= half:
                    acc += LEAF_ENTRY + len(node.vals[m])
                    m += 1
                m = max(m, 1)
            else:
                m = len(node.keys) // 2
            if node.level == 0:
                table = node.entries()
                right.table, node.table = table[m:], table[:m]
            right.keys, node.keys = node.keys[m:], node.keys[:m]
            if node.level == 0:
                right.vals, node.vals = node.vals[m:], node.vals[:m]
                right.used = HEADER + sum(LEAF_ENTRY + len(v) for v in right.vals)
                node.used = HEADER + sum(LEAF_ENTRY + len(v) for v in node.vals)
            else:
                right.children, node.children = node.children[m:], node.children[:m]
                right.used = HEADER + len(right.keys) * BRANCH_ENTRY
                node.used = HEADER + len(node.keys) * BRANCH_ENTRY
            self._adopt(right)
            self._touch(node)
            separator = right.keys[0]
            if not path:
                root = Node(self._allocate(), node.level + 1)
                root.keys = [node.keys[0], separator]
                root.children = [node.lba, right.lba]
                root.used = HEADER + 2 * BRANCH_ENTRY
                self._adopt(root)
                self.root = root.lba
                self.height += 1
                return
            parent, i = path.pop()
            append = i + 1 == len(parent.keys)
            parent.keys.insert(i + 1, separator)
            parent.children.insert(i + 1, right.lba)
            parent.used += BRANCH_ENTRY
            self._touch(parent)
            node = parent

    def _rebalance(self, path: list[tuple[Node, int]], node: Node) -> None:
        while path and node.used < self._low:
            parent, i = path.pop()
            if len(parent.children) < 2:
                break
            if i + 1 < len(parent.children):
                left, right, r = node, self.node(parent.children[i + 1], node.level), i + 1
            else:
                left, right, r = self.node(parent.children[i - 1], node.level), node, i
            if left.level:
                right.keys[0] = parent.keys[r]  # the exact lower bound: keys move across it
            self._touch(left)
            self._touch(right)
            if left.used + right.used - HEADER <= self.block_size:
                if left.level == 0:
                    left.entries().extend(right.entries())
                left.keys.extend(right.keys)
                left.vals.extend(right.vals)
                left.children.extend(right.children)
                left.used += right.used - HEADER
                right.keys, right.vals, right.children, right.table = [], [], [], None
                self._free(right)
                del parent.keys[r]
                del parent.children[r]
                parent.used -= BRANCH_ENTRY
                self._touch(parent)
                node = parent
                continue
            self._redistribute(left, right)
            parent.keys[r] = right.keys[0]
            self._touch(parent)
            return
        if not path and node.level and len(node.children) == 1 and node.lba == self.root:
            self._collapse_root()

    def _collapse_root(self) -> None:
        root = self.node(self.root, self.height - 1)
        while root.level and len(root.children) == 1:
            child = self.node(root.children[0], root.level - 1)
            self._free(root)
            self.root = child.lba
            self.height -= 1
            root = child

    def _redistribute(self, left: Node, right: Node) -> None:
        """Move items across the boundary until the two nodes hold about the same bytes."""

        def size(node: Node, j: int) -> int:
            return LEAF_ENTRY + len(node.vals[j]) if node.level == 0 else BRANCH_ENTRY

        leaf = left.level == 0
        ltable, rtable = (left.entries(), right.entries()) if leaf else ([], [])
        while left.used > right.used and len(left.keys) > 1:
            s = size(left, -1)
            if right.used + s > left.used - s + s // 2 or right.used + s > self.block_size:
                break
            right.keys.insert(0, left.keys.pop())
            if leaf:
                rtable.insert(0, ltable.pop())
                right.vals.insert(0, left.vals.pop())
            else:
                right.children.insert(0, left.children.pop())
            left.used -= s
            right.used += s
        while right.used > left.used and len(right.keys) > 1:
            s = size(right, 0)
            if left.used + s > right.used - s + s // 2 or left.used + s > self.block_size:
                break
            left.keys.append(right.keys.pop(0))
            if leaf:
                ltable.append(rtable.pop(0))
                left.vals.append(right.vals.pop(0))
            else:
                left.children.append(right.children.pop(0))
            right.used -= s
            left.used += s

    # -- whole-tree walks ---------------------------------------------------------------------------

    def walk_nodes(self) -> Iterator[tuple[Node, int | None, int | None]]:
        """Every node with the key range its parent assigns it ``[lo, hi)`` (None: unbounded)."""
        stack: list[tuple[int, int, int | None, int | None]] = [(self.root, self.height - 1, None, None)]
        while stack:
            lba, level, lo, hi = stack.pop()
            node = self.node(lba, level)
            yield node, lo, hi
            if node.level:
                bounds = [*node.keys[1:], hi]
                for i in range(len(node.children) - 1, -1, -1):
                    child_lo = node.keys[i]
                    stack.append((node.children[i], node.level - 1, child_lo, bounds[i]))


def full_error(what: str) -> FsError:
    return FsError(errno.ENOSPC, what)
