"""``FileSystem.read_into``: reads decrypted straight into the caller's buffer agree with ``read`` at
every offset and length — partial first and last blocks, holes, the end of file, staged writes — and a
read of a damaged block fails without leaving its plaintext in the buffer."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest

from haven.shield.storage.errors import IntegrityError
from haven.shield.storage.fs import FsError
from tests.fs_support import Image
from tests.storage_block_support import data_phys, flip_bit

BS = 4096


def _image(tmp_path: Path) -> Image:
    img = Image(tmp_path / "img", os.urandom(32), 4096)
    img.format()
    return img


def _sparse_file(img: Image, rng: random.Random) -> tuple[int, bytearray]:
    """A file with whole windows, a hole, unaligned pieces and a tail shorter than a block."""
    assert img.fs is not None
    fs = img.fs
    ino = fs.create(fs.root, b"f")
    model = bytearray()

    def put(offset: int, data: bytes) -> None:
        fs.write(ino, offset, data)
        if len(model) < offset + len(data):
            model.extend(bytes(offset + len(data) - len(model)))
        model[offset : offset + len(data)] = data

    put(0, rng.randbytes(100 * BS))  # whole windows
    put(140 * BS + 123, rng.randbytes(70 * BS))  # after a hole, unaligned
    put(50 * BS + 7, rng.randbytes(3000))  # a rewrite inside a block
    put(len(model), rng.randbytes(1234))  # a short tail
    return ino, model


def test_read_into_agrees_with_read(tmp_path: Path) -> None:
    img = _image(tmp_path)
    rng = random.Random(4)
    ino, model = _sparse_file(img, rng)
    assert img.fs is not None
    size = len(model)
    cases = [(0, size), (0, 80 * BS), (123, 90 * BS), (size - 5000, 10_000), (size, 10), (139 * BS, 3 * BS)]
    cases += [(rng.randrange(size), rng.randrange(1, 120 * BS)) for _ in range(60)]
    for synced in (False, True):
        for offset, length in cases:
            buf = bytearray(b"\xaa" * length)
            n = img.fs.read_into(ino, offset, memoryview(buf))
            want = bytes(model[offset : offset + length])
            assert n == len(want) and buf[:n] == want, (offset, length, synced)
            assert buf[n:] == b"\xaa" * (length - n)  # nothing written past what was read
            assert img.fs.read(ino, offset, length) == want
        img.fs.sync()
        img.close()
        img.mount()


def test_read_into_refuses_a_negative_offset_and_a_read_only_buffer(tmp_path: Path) -> None:
    img = _image(tmp_path)
    assert img.fs is not None
    ino, _ = _sparse_file(img, random.Random(1))
    with pytest.raises(FsError) as e:
        img.fs.read_into(ino, -1, memoryview(bytearray(10)))
    assert e.value.errno == errno.EINVAL
    with pytest.raises(FsError) as e:
        img.fs.read_into(ino, 0, memoryview(bytes(10)))
    assert e.value.errno == errno.EINVAL
    with pytest.raises(FsError) as e:
        img.fs.read_into(img.fs.root, 0, memoryview(bytearray(10)))
    assert e.value.errno == errno.EISDIR


def test_a_damaged_block_leaves_no_plaintext_in_the_buffer(tmp_path: Path) -> None:
    img = _image(tmp_path)
    assert img.fs is not None and img.store is not None
    ino, _ = _sparse_file(img, random.Random(2))
    img.fs.sync()
    lba = next(  # the logical block holding file block 40: a whole window, read straight into the buffer
        lba for lba in range(img.store.capacity) if img.store.read(lba) == img.fs.read(ino, 40 * BS, BS)
    )
    phys = data_phys(img.store, lba)
    img.close()
    flip_bit(img.path, phys, BS, 8 * 1000)
    img.mount()
    assert img.fs is not None
    buf = bytearray(b"\xaa" * (64 * BS))
    with pytest.raises((IntegrityError, FsError)):
        img.fs.read_into(ino, 32 * BS, memoryview(buf))
    window = buf[8 * BS : 24 * BS]  # file blocks 40..55: the damaged segment's place in the buffer
    assert window == bytes(len(window))
