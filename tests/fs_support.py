"""File systems for tests, on the real layers: a SecureStore over a FileBlockDevice and a FileCounter."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from haven.shield.storage.counter import FileCounter
from haven.shield.storage.device import FileBlockDevice
from haven.shield.storage.fs import FileSystem
from haven.shield.storage.fs.fsck import FsCheckReport, check
from haven.shield.storage.store import SecureStore


class TickClock:
    """A clock that moves 1 µs per reading, so every timestamp change is visible."""

    def __init__(self, start: int = 1_700_000_000_000_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1000
        return self.now


@dataclass
class Image:
    """An image file, its counter and key, with the file system mounted on it."""

    path: Path
    key: bytes
    n_blocks: int
    clock: TickClock = field(default_factory=TickClock)
    cache_nodes: int = 8192
    fs: FileSystem | None = None
    store: SecureStore | None = None
    _dev: FileBlockDevice | None = None

    @property
    def counter_path(self) -> Path:
        return self.path.with_name(self.path.name + ".counter")

    def format(self) -> FileSystem:
        self._dev = FileBlockDevice.create(self.path, self.n_blocks)
        counter = FileCounter.create(self.counter_path)
        self.store = SecureStore.format(self._dev, self.key, counter)
        self.fs = FileSystem.format(self.store, clock=self.clock, cache_nodes=self.cache_nodes)
        return self.fs

    def mount(self) -> FileSystem:
        self._dev = FileBlockDevice.open(self.path)
        self.store = SecureStore.mount(self._dev, self.key, FileCounter(self.counter_path))
        self.fs = FileSystem.mount(self.store, clock=self.clock, cache_nodes=self.cache_nodes)
        return self.fs

    def close(self) -> None:
        """Close without committing: whatever was not synced is gone (as after a crash)."""
        if self.store is not None:
            self.store.close()
        if self._dev is not None:
            self._dev.close()
        self.fs = self.store = self._dev = None

    def remount(self, *, sync: bool = True) -> FileSystem:
        if sync and self.fs is not None:
            self.fs.sync()
        self.close()
        return self.mount()

    def check(self) -> FsCheckReport:
        assert self.fs is not None
        return check(self.fs)


def new_image(tmp_path: Path, n_blocks: int = 4096, *, name: str = "img", **kw: object) -> Image:
    image = Image(tmp_path / name, os.urandom(32), n_blocks, **kw)  # type: ignore[arg-type]
    image.format()
    return image


def tree_listing(fs: FileSystem, ino: int | None = None, prefix: bytes = b"") -> dict[bytes, str]:
    """Every path under ``ino`` mapped to its kind (for comparing whole trees)."""
    at = fs.root if ino is None else ino
    out: dict[bytes, str] = {}
    for entry in fs.readdir(at):
        path = prefix + b"/" + entry.name
        out[path] = entry.kind
        if entry.kind == "dir":
            out.update(tree_listing(fs, entry.ino, path))
    return out


def every_errno(fn: Callable[[], object]) -> int:
    """The errno of the FsError ``fn`` raises (fails the test if it raises none)."""
    from haven.shield.storage.fs import FsError

    try:
        fn()
    except FsError as e:
        return e.errno
    raise AssertionError("no FsError raised")

