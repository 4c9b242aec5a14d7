"""The file system stops for good when the store fails in the middle of an operation, and a write counts
the bytes of whatever buffer it is given."""

from __future__ import annotations

import errno
from array import array
from pathlib import Path

import pytest

from haven.shield.storage.counter import FileCounter
from haven.shield.storage.device import FileBlockDevice
from haven.shield.storage.errors import StorageError
from haven.shield.storage.fs import FileSystem, FsCorruptError, FsError
from haven.shield.storage.fs.fsck import check as fsck
from haven.shield.storage.store import SecureStore
from tests.fs_support import new_image


def test_a_store_failure_in_the_middle_of_a_write_stops_the_file_system(tmp_path: Path) -> None:
    img = new_image(tmp_path, 2048)
    assert img.fs is not None
    ino = img.fs.create(img.fs.root, b"f")
    img.fs.write(ino, 0, b"a" * 100)
    img.fs.sync()
    img.close()
    # A writable file system over a store that refuses writes (its device is read-only): the write
    # below maps an extent, then the store refuses the data, with the tree already changed.
    with FileBlockDevice.open(img.path, writable=False) as dev:
        store = SecureStore.mount(dev, img.key, FileCounter(img.counter_path))
        fs = FileSystem.mount(store)
        assert fs.stat(ino).size == 100
        with pytest.raises(StorageError, match="read-only"):
            fs.write(ino, 8192, b"b" * 5000)
        with pytest.raises(FsCorruptError, match="blocks mapped past the end of the file"):
            fsck(fs)  # the half-done write, which a later sync must never commit
        for call in (
            lambda: fs.stat(ino),  # answered from the caches before: refused now
            lambda: fs.read(ino, 0, 10),
            lambda: fs.lookup(fs.root, b"f"),
            lambda: list(fs.readdir(fs.root)),
            fs.sync,
        ):
            stopped = r"file system stopped after the store failed: .*read-only"
            with pytest.raises(StorageError, match=stopped):
                call()
        store.close()


def test_the_file_systems_own_refusals_do_not_stop_it(tmp_path: Path) -> None:
    img = new_image(tmp_path, 2048)
    fs = img.fs
    assert fs is not None
    for _ in range(3):
        with pytest.raises(FsError) as caught:
            fs.lookup(fs.root, b"missing")
        assert caught.value.errno == errno.ENOENT
    ino = fs.create(fs.root, b"ok")
    assert fs.stat(ino).kind == "file"


@pytest.mark.parametrize(
    "buffer",
    [
        memoryview(array("I", range(1000))),  # 4-byte items: len() is 1000, the bytes are 4000
        array("d", [1.5] * 300),
        memoryview(bytes(range(256)) * 20)[::3],  # not contiguous
        memoryview(bytearray(range(256)) * 20).cast("B", (64, 80)),  # two dimensions
        bytearray(b"plain" * 900),
        memoryview(b"plain" * 900),
    ],
    ids=["uint32", "double-array", "strided", "2d", "bytearray", "bytes-view"],
)
def test_a_write_writes_every_byte_of_any_buffer(tmp_path: Path, buffer: object) -> None:
    img = new_image(tmp_path, 2048)
    fs = img.fs
    assert fs is not None
    expect = memoryview(buffer).tobytes()  # type: ignore[arg-type]
    ino = fs.create(fs.root, b"f")
    assert fs.write(ino, 1000, buffer) == len(expect)  # type: ignore[arg-type]
    assert fs.stat(ino).size == 1000 + len(expect)
    assert fs.read(ino, 1000, len(expect) + 10) == expect
    fs.sync()
    fsck(fs)
    fs = img.remount()
    assert fs.read(ino, 0, 1 << 20) == bytes(1000) + expect
