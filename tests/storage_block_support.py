"""Images for the block-layer tests, on the real layers (FileBlockDevice, FileCounter, SecureStore), and
the tools an attacker uses on an image file: find where a block lives, flip a bit, copy blocks about."""

from __future__ import annotations

import os
import random
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

from haven.shield.storage.counter import FileCounter
from haven.shield.storage.device import Buffer, FileBlockDevice
from haven.shield.storage.errors import StorageError
from haven.shield.storage.layout import ENTRY, ENTRY_SIZE
from haven.shield.storage.store import SecureStore


@dataclass
class Image:
    """An image file, its counter file and its key; ``open`` mounts it, ``close`` unmounts it."""

    path: Path
    counter_path: Path
    key: bytes
    block_size: int
    dev: FileBlockDevice | None = None
    store: SecureStore | None = None
    cache_bytes: int = 1 << 20
    model: dict[int, bytes] = field(default_factory=dict)  # what the last commit holds

    @classmethod
    def make(
        cls,
        tmp: Path,
        n_blocks: int = 256,
        block_size: int = 4096,
        *,
        cache_bytes: int = 1 << 20,
        name: str = "img",
    ) -> Image:
        img = cls(tmp / name, tmp / f"{name}.counter", os.urandom(32), block_size, cache_bytes=cache_bytes)
        img.dev = FileBlockDevice.create(img.path, n_blocks, block_size)
        img.store = SecureStore.format(
            img.dev, img.key, FileCounter.create(img.counter_path), cache_bytes=cache_bytes
        )
        return img

    def open(self, *, key: bytes | None = None, writable: bool = True) -> SecureStore:
        self.close()
        self.dev = FileBlockDevice.open(self.path, self.block_size, writable=writable)
        self.store = SecureStore.mount(
            self.dev, key or self.key, FileCounter(self.counter_path), cache_bytes=self.cache_bytes
        )
        return self.store

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None
        if self.dev is not None:
            self.dev.close()
            self.dev = None

    @property
    def s(self) -> SecureStore:
        assert self.store is not None
        return self.store

    def fill(self, lbas: range | list[int], seed: int = 0, *, checkpoint: bool = True) -> None:
        """Write recognisable random contents to ``lbas`` and commit (the model follows); by default
        through the tree, where the attacks on it find the blocks."""
        rng = random.Random(seed)
        for lba in lbas:
            data = rng.randbytes(self.block_size)
            self.s.write(lba, data)
            self.model[lba] = data
        self.s.commit(checkpoint=checkpoint)

    def expect(self, lba: int) -> bytes:
        return self.model.get(lba, bytes(self.block_size))

    def snapshot(self, name: str) -> tuple[Path, Path]:
        """Copies of the image and counter files as they are now."""
        img, ctr = self.path.with_name(name), self.path.with_name(name + ".counter")
        shutil.copyfile(self.path, img)
        shutil.copyfile(self.counter_path, ctr)
        return img, ctr


class CrashBeforeAdvance:
    """A counter whose advance, after ``allow`` of them, never happens: the process dies with the
    commit's blocks and superblock written but the counter not moved."""

    def __init__(self, inner: FileCounter, allow: int) -> None:
        self.inner, self.allow = inner, allow

    def read(self) -> int:
        return self.inner.read()

    def advance(self, expected: int, new: int) -> None:
        if self.allow <= 0:
            raise KeyboardInterrupt("power lost before the counter moved")
        self.allow -= 1
        self.inner.advance(expected, new)


def data_phys(store: SecureStore, lba: int) -> int:
    """The physical block holding logical block ``lba`` (0 if absent)."""
    tree = store._tree
    leaf = tree.node(1, lba >> tree.geo.shift)
    assert leaf is not None
    return int(ENTRY.unpack_from(leaf, (lba & (tree.geo.fanout - 1)) * ENTRY_SIZE)[0])


def node_phys(store: SecureStore, level: int, index: int) -> int:
    """The physical block holding tree node ``index`` of ``level`` (the root is at ``geo.height``)."""
    tree = store._tree
    if level == tree.geo.height:
        return int(ENTRY.unpack(tree.root)[0])
    parent = tree.node(level + 1, index >> tree.geo.shift)
    assert parent is not None
    return int(ENTRY.unpack_from(parent, (index & (tree.geo.fanout - 1)) * ENTRY_SIZE)[0])


def flip_bit(path: Path, block: int, block_size: int, bit: int = 0) -> None:
    """Flip one bit inside physical ``block`` of an image file."""
    with path.open("r+b") as f:
        f.seek(block * block_size + bit // 8)
        byte = f.read(1)[0]
        f.seek(block * block_size + bit // 8)
        f.write(bytes([byte ^ (1 << (bit % 8))]))


def read_block(path: Path, block: int, block_size: int) -> bytes:
    with path.open("rb") as f:
        f.seek(block * block_size)
        return f.read(block_size)


def write_block(path: Path, block: int, block_size: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(block * block_size)
        f.write(data)


class FailingWrites:
    """A device whose writes start failing after ``ok`` of them (the disk went away); it notes the
    threads that wrote."""

    concurrent = True

    def __init__(self, inner: FileBlockDevice, ok: int) -> None:
        self.inner, self.ok = inner, ok
        self.block_size = inner.block_size
        self.writers: set[str] = set()

    def size(self) -> int:
        return self.inner.size()

    def read(self, lba: int, n: int = 1) -> bytes:
        return self.inner.read(lba, n)

    def read_into(self, lba: int, parts: list[memoryview]) -> None:
        self.inner.read_into(lba, parts)

    def write(self, lba: int, data: Buffer) -> None:
        self.writers.add(threading.current_thread().name)
        if self.ok <= 0:
            raise StorageError("write failed (EIO)")
        self.ok -= 1
        self.inner.write(lba, data)

    def flush(self) -> None:
        self.inner.flush()
