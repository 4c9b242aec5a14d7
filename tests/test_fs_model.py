"""A hypothesis state machine: the file system against a small in-memory model of a POSIX tree.

Every step runs one operation on both and compares the outcome (the same inode, or the same errno);
after every step the whole tree is compared: listings, kinds, link counts, sizes and every byte of
every file. ``sync`` snapshots the model; ``crash`` drops the mount without syncing, and the model
goes back to its snapshot: what was not synced is gone as a whole, what was synced is all there.
"""

from __future__ import annotations

import copy
import errno
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from haven.shield.storage.fs import FileSystem, FsError
from tests.fs_support import Image, new_image

NAMES = st.sampled_from([b"a", b"b", b"c", b"long-name-" + b"x" * 40])
BS = 4096


@dataclass
class MInode:
    kind: str
    nlink: int
    data: bytearray = field(default_factory=bytearray)
    target: bytes = b""
    entries: dict[bytes, int] = field(default_factory=dict)
    parent: int = 0


class Model:
    def __init__(self, root: int) -> None:
        self.root = root
        self.inodes: dict[int, MInode] = {root: MInode("dir", 2, parent=root)}

    def dirs(self) -> list[int]:
        return sorted(i for i, n in self.inodes.items() if n.kind == "dir")

    def files(self) -> list[int]:
        return sorted(i for i, n in self.inodes.items() if n.kind == "file")

    def drop_link(self, ino: int) -> None:
        node = self.inodes[ino]
        node.nlink = 0 if node.kind == "dir" else node.nlink - 1
        if node.nlink == 0:
            del self.inodes[ino]

    def inside(self, ino: int, d: int) -> bool:
        while True:
            if d == ino:
                return True
            if d == self.root:
                return False
            d = self.inodes[d].parent

    def rename_errno(self, sd: int, s: bytes, dd: int, d: bytes) -> int | None:
        """The errno rename must give, or None if it succeeds (in the file system's check order)."""
        src = self.inodes[sd].entries.get(s)
        if src is None:
            return errno.ENOENT
        dst = self.inodes[dd].entries.get(d)
        if dst == src:
            return None
        kind = self.inodes[src].kind
        if kind == "dir" and self.inside(src, dd):
            return errno.EINVAL
        if dst is not None:
            dkind = self.inodes[dst].kind
            if kind == "dir" and dkind != "dir":
                return errno.ENOTDIR
            if kind != "dir" and dkind == "dir":
                return errno.EISDIR
            if dkind == "dir" and self.inodes[dst].entries:
                return errno.ENOTEMPTY
        return None


class FsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory()
        self.image: Image = new_image(Path(self._tmp.name), 2048)
        assert self.image.fs is not None
        self.fs: FileSystem = self.image.fs
        self.model = Model(self.fs.root)
        self.synced = copy.deepcopy(self.model)

    def teardown(self) -> None:
        self.image.close()
        self._tmp.cleanup()

    def _expect(self, code: int | None, op):
        try:
            result = op()
        except FsError as e:
            assert e.errno == code, f"errno {e.errno}, expected {code}: {e}"
            return None
        assert code is None, f"succeeded, expected errno {code}"
        return result

    def _new(self, d: int, name: bytes, node: MInode, op) -> None:
        code = errno.EEXIST if name in self.model.inodes[d].entries else None
        ino = self._expect(code, op)
        if ino is not None:
            assert ino not in self.model.inodes
            self.model.inodes[ino] = node
            self.model.inodes[d].entries[name] = ino
            if node.kind == "dir":
                self.model.inodes[d].nlink += 1

    @rule(di=st.integers(0, 50), name=NAMES)
    def create(self, di: int, name: bytes) -> None:
        dirs = self.model.dirs()
        d = dirs[di % len(dirs)]
        self._new(d, name, MInode("file", 1), lambda: self.fs.create(d, name))

    @rule(di=st.integers(0, 50), name=NAMES)
    def mkdir(self, di: int, name: bytes) -> None:
        dirs = self.model.dirs()
        d = dirs[di % len(dirs)]
        self._new(d, name, MInode("dir", 2, parent=d), lambda: self.fs.mkdir(d, name))

    @rule(di=st.integers(0, 50), name=NAMES,
          to=st.binary(min_size=1, max_size=700).map(lambda t: t.replace(b"\0", b"x")))
    def symlink(self, di: int, name: bytes, to: bytes) -> None:
        dirs = self.model.dirs()
        d = dirs[di % len(dirs)]
        self._new(d, name, MInode("symlink", 1, target=to), lambda: self.fs.symlink(d, name, to))

    @precondition(lambda self: self.model.files())
    @rule(fi=st.integers(0, 50), offset=st.sampled_from([0, 1, BS - 3, BS, 3 * BS + 5, 20 * BS]),
          data=st.binary(min_size=1, max_size=2 * BS + 10))
    def write(self, fi: int, offset: int, data: bytes) -> None:
        files = self.model.files()
        f = files[fi % len(files)]
        assert self.fs.write(f, offset, data) == len(data)
        buf = self.model.inodes[f].data
        if offset > len(buf):
            buf.extend(bytes(offset - len(buf)))
        buf[offset : offset + len(data)] = data

    @precondition(lambda self: self.model.files())
    @rule(fi=st.integers(0, 50), size=st.sampled_from([0, 1, BS - 1, BS, BS + 1, 5 * BS + 7, 30 * BS]))
    def truncate(self, fi: int, size: int) -> None:
        files = self.model.files()
        f = files[fi % len(files)]
        self.fs.truncate(f, size)
        buf = self.model.inodes[f].data
        if size < len(buf):
            del buf[size:]
        else:
            buf.extend(bytes(size - len(buf)))

    @rule(di=st.integers(0, 50), name=NAMES)
    def unlink(self, di: int, name: bytes) -> None:
        dirs = self.model.dirs()
        d = dirs[di % len(dirs)]
        child = self.model.inodes[d].entries.get(name)
        code = None if child is not None and self.model.inodes[child].kind != "dir" else (
            errno.ENOENT if child is None else errno.EISDIR)
        self._expect(code, lambda: self.fs.unlink(d, name))
        if code is None and child is not None:
            del self.model.inodes[d].entries[name]
            self.model.drop_link(child)

    @rule(di=st.integers(0, 50), name=NAMES)
    def rmdir(self, di: int, name: bytes) -> None:
        dirs = self.model.dirs()
        d = dirs[di % len(dirs)]
        child = self.model.inodes[d].entries.get(name)
        if child is None:
            code: int | None = errno.ENOENT
        elif self.model.inodes[child].kind != "dir":
            code = errno.ENOTDIR
        elif self.model.inodes[child].entries:
            code = errno.ENOTEMPTY
        else:
            code = None
        self._expect(code, lambda: self.fs.rmdir(d, name))
        if code is None and child is not None:
            del self.model.inodes[d].entries[name]
            self.model.inodes[d].nlink -= 1
            self.model.drop_link(child)

    @rule(si=st.integers(0, 50), s=NAMES, di=st.integers(0, 50), d=NAMES)
    def rename(self, si: int, s: bytes, di: int, d: bytes) -> None:
        dirs = self.model.dirs()
        sd, dd = dirs[si % len(dirs)], dirs[di % len(dirs)]
        code = self.model.rename_errno(sd, s, dd, d)
        self._expect(code, lambda: self.fs.rename(sd, s, dd, d))
        if code is not None:
            return
        m = self.model
        src = m.inodes[sd].entries[s]
        dst = m.inodes[dd].entries.get(d)
        if dst == src:
            return
        del m.inodes[sd].entries[s]
        m.inodes[dd].entries[d] = src
        if m.inodes[src].kind == "dir":
            m.inodes[sd].nlink -= 1
            m.inodes[dd].nlink += 1
            m.inodes[src].parent = dd
        if dst is not None:
            if m.inodes[dst].kind == "dir":
                m.inodes[dd].nlink -= 1
            m.drop_link(dst)

    @precondition(lambda self: self.model.files())
    @rule(fi=st.integers(0, 50), di=st.integers(0, 50), name=NAMES)
    def link(self, fi: int, di: int, name: bytes) -> None:
        files = self.model.files()
        f = files[fi % len(files)]
        dirs = self.model.dirs()
        d = dirs[di % len(dirs)]
        code = errno.EEXIST if name in self.model.inodes[d].entries else None
        self._expect(code, lambda: self.fs.link(f, d, name))
        if code is None:
            self.model.inodes[d].entries[name] = f
            self.model.inodes[f].nlink += 1

    @rule()
    def sync(self) -> None:
        self.fs.sync()
        self.synced = copy.deepcopy(self.model)

    @rule()
    def remount(self) -> None:
        self.fs = self.image.remount()
        self.synced = copy.deepcopy(self.model)

    @rule()
    def crash(self) -> None:
        self.fs = self.image.remount(sync=False)
        self.model = copy.deepcopy(self.synced)

    @invariant()
    def same_tree(self) -> None:
        fs, m = self.fs, self.model
        seen_dirs = 0
        stack = [m.root]
        while stack:
            d = stack.pop()
            seen_dirs += 1
            listed = {e.name: (e.ino, e.kind) for e in fs.readdir(d)}
            expected = {name: (ino, m.inodes[ino].kind) for name, ino in m.inodes[d].entries.items()}
            assert listed == expected
            st_ = fs.stat(d)
            assert (st_.nlink, st_.size) == (m.inodes[d].nlink, len(expected))
            for name, (ino, kind) in expected.items():
                assert fs.lookup(d, name) == ino
                node = m.inodes[ino]
                s = fs.stat(ino)
                assert (s.kind, s.nlink) == (kind, node.nlink)
                if kind == "dir":
                    assert fs.parent(ino) == d
                    stack.append(ino)
                elif kind == "file":
                    assert s.size == len(node.data)
                    assert fs.read(ino, 0, len(node.data) + 10) == bytes(node.data)
                else:
                    assert fs.readlink(ino) == node.target
        assert seen_dirs == len(m.dirs())
        self.image.check()


_BASE = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
_Case: Any = FsMachine.TestCase


class TestFileSystemMatchesTheModel(_Case):  # type: ignore[misc]
    settings = settings(_BASE, max_examples=40, stateful_step_count=40)


def _random_walk(seed: int, steps: int, check_every: int) -> None:
    """The same machine driven by a seeded random walk: long runs that reach big, deep trees."""
    rng = random.Random(seed)
    m = FsMachine()
    names = [b"a", b"b", b"c", b"d", b"e", b"long-name-" + b"x" * 40]
    try:
        for step in range(steps):
            roll = rng.random()
            n = rng.choice(names)
            i, j = rng.randrange(50), rng.randrange(50)
            has_files = bool(m.model.files())
            if roll < 0.15:
                m.create(i, n)
            elif roll < 0.25:
                m.mkdir(i, n)
            elif roll < 0.30:
                m.symlink(i, n, rng.randbytes(rng.randrange(1, 700)).replace(b"\0", b"x"))
            elif roll < 0.45 and has_files:
                m.write(i, rng.choice([0, 1, BS - 3, BS, 3 * BS + 5, 20 * BS, rng.randrange(40 * BS)]),
                        rng.randbytes(rng.randrange(1, 3 * BS)))
            elif roll < 0.52 and has_files:
                m.truncate(i, rng.choice([0, 1, BS - 1, BS + 1, rng.randrange(40 * BS)]))
            elif roll < 0.62:
                m.unlink(i, n)
            elif roll < 0.67:
                m.rmdir(i, n)
            elif roll < 0.82:
                m.rename(i, n, j, rng.choice(names))
            elif roll < 0.88 and has_files:
                m.link(i, j, n)
            elif roll < 0.94:
                m.sync()
            elif roll < 0.97:
                m.remount()
            else:
                m.crash()
            if step % check_every == check_every - 1:
                m.same_tree()
        m.same_tree()
    finally:
        m.teardown()


def test_a_long_random_walk_matches_the_model() -> None:
    _random_walk(seed=2024, steps=2500, check_every=50)


@pytest.mark.soak
class TestFileSystemMatchesTheModelLong(_Case):  # type: ignore[misc]
    settings = settings(_BASE, max_examples=300, stateful_step_count=100)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(20))
def test_long_random_walks_match_the_model(seed: int) -> None:
    _random_walk(seed=seed, steps=5000, check_every=100)


del _Case  # only the subclasses above are tests
