"""Preallocated images: ``haven image create --preallocate`` writes the whole file at once, so the host
never allocates under a commit; the image is otherwise the same, and a failure leaves nothing behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from haven.cli.main import main
from haven.shield.storage.device import FileBlockDevice
from haven.shield.storage.errors import StorageError
from haven.shield.storage.image import create_image, open_image

KEY = bytes(range(32))
SIZE = 8 << 20


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_a_preallocated_image_is_all_allocated_and_works(tmp_path: Path) -> None:
    sparse, full = tmp_path / "sparse.img", tmp_path / "full.img"
    create_image(sparse, SIZE, KEY)
    create_image(full, SIZE, KEY, preallocate=True)
    assert _allocated(full) >= SIZE > 4 * _allocated(sparse)
    with open_image(full, KEY) as fs:
        ino = fs.create(fs.root, b"f")
        fs.write(ino, 0, b"preallocated" * 1000)
        fs.sync()
    with open_image(full, KEY, writable=False) as fs:
        assert fs.read(fs.resolve("/f"), 0, 12) == b"preallocated"
    assert os.path.getsize(full) == SIZE


def test_the_command_preallocates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "k"
    key.write_bytes(KEY)
    img = tmp_path / "disk.img"
    assert main(["image", "create", str(img), "--size", "8M", "--key", str(key), "--preallocate"]) == 0
    assert _allocated(img) >= SIZE
    assert main(["image", "check", str(img), "--key", str(key)]) == 0
    capsys.readouterr()


def test_no_room_on_the_host_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.pwrite
    calls = [0]

    def full_disk(fd: int, data: bytes | memoryview, offset: int) -> int:
        calls[0] += 1
        if calls[0] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full_disk)
    with pytest.raises(StorageError, match="cannot create it \\(No space left on device\\)"):
        FileBlockDevice.create(tmp_path / "img", 4096, preallocate=True)
    assert not (tmp_path / "img").exists()
    with pytest.raises(StorageError, match="No space left"):
        create_image(tmp_path / "disk.img", SIZE, KEY, preallocate=True)
    assert sorted(os.listdir(tmp_path)) == []
