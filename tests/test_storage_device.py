"""FileBlockDevice (a local image file as a block device) and image key files."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from haven.errors import KeyFileError
from haven.shield.storage.device import FileBlockDevice
from haven.shield.storage.errors import IntegrityError, StorageError
from haven.shield.storage.keys import derive_keys, load_image_key, parse_image_key

# ------------------------------------------------------------------ FileBlockDevice


def test_create_read_write_flush(tmp_path: Path) -> None:
    path = tmp_path / "img"
    with FileBlockDevice.create(path, 8, 512) as dev:
        assert dev.size() == 8 and dev.block_size == 512
        assert path.stat().st_size == 8 * 512
        assert dev.read(0, 8) == bytes(8 * 512)  # a new image reads as zeros
        dev.write(3, b"a" * 512 + b"b" * 512)
        dev.write(7, memoryview(bytearray(b"z" * 512)))  # any bytes-like object
        dev.flush()
        assert dev.read(3) == b"a" * 512
        assert dev.read(4, 1) == b"b" * 512
        assert dev.read(2, 3) == bytes(512) + b"a" * 512 + b"b" * 512
    with FileBlockDevice.open(path, 512) as dev:
        assert dev.size() == 8
        assert dev.read(7) == b"z" * 512
    assert (path.stat().st_mode & 0o777) == 0o600


def test_create_refuses_an_existing_file_and_bad_shapes(tmp_path: Path) -> None:
    path = tmp_path / "img"
    path.write_bytes(b"precious")
    with pytest.raises(StorageError, match="already exists"):
        FileBlockDevice.create(path, 8)
    assert path.read_bytes() == b"precious"
    with pytest.raises(StorageError, match="at least one block"):
        FileBlockDevice.create(tmp_path / "empty", 0)
    for size in (0, 256, 1000, 3000, 1 << 17):
        with pytest.raises(StorageError, match="power of two"):
            FileBlockDevice.create(tmp_path / f"bs{size}", 8, size)
    with pytest.raises(StorageError, match="cannot create"):
        FileBlockDevice.create(tmp_path / "no" / "such" / "dir", 8)


def test_open_refuses_missing_directory_and_partial_blocks(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no such file"):
        FileBlockDevice.open(tmp_path / "missing")
    with pytest.raises(StorageError, match="is a directory"):
        FileBlockDevice.open(tmp_path)
    odd = tmp_path / "odd"
    odd.write_bytes(bytes(4096 + 100))
    with pytest.raises(IntegrityError, match="not a whole number of 4096-byte blocks"):
        FileBlockDevice.open(odd)
    empty = tmp_path / "zero"
    empty.write_bytes(b"")
    with pytest.raises(IntegrityError, match="not a whole number"):
        FileBlockDevice.open(empty)


@pytest.mark.parametrize("writable", [True, False])
def test_open_refuses_a_fifo_or_device_without_blocking(tmp_path: Path, writable: bool) -> None:
    # A host that puts a FIFO where the image was must not hang the runtime (opening a FIFO blocks
    # until a writer appears), and a character device is not an image either.
    fifo = tmp_path / "img"
    os.mkfifo(fifo)
    with pytest.raises(StorageError, match="not a regular file"):
        FileBlockDevice.open(fifo, writable=writable)
    with pytest.raises(StorageError, match="not a regular file"):
        FileBlockDevice.open(Path("/dev/zero"), writable=False)


def test_out_of_range_and_partial_writes_are_refused(tmp_path: Path) -> None:
    with FileBlockDevice.create(tmp_path / "img", 4, 512) as dev:
        for lba, n in ((4, 1), (3, 2), (-1, 1), (0, 0)):
            with pytest.raises(StorageError, match="outside"):
                dev.read(lba, n)
        with pytest.raises(StorageError, match="outside"):
            dev.write(3, bytes(1024))
        with pytest.raises(StorageError, match="whole blocks"):
            dev.write(0, bytes(100))
        with pytest.raises(StorageError, match="whole blocks"):
            dev.write(0, b"")


def test_read_only_devices_refuse_writes(tmp_path: Path) -> None:
    FileBlockDevice.create(tmp_path / "img", 4, 512).close()
    with FileBlockDevice.open(tmp_path / "img", 512, writable=False) as dev:
        assert dev.read(0) == bytes(512)
        with pytest.raises(StorageError, match="read-only"):
            dev.write(0, bytes(512))


def test_an_image_is_locked_while_open(tmp_path: Path) -> None:
    path = tmp_path / "img"
    with FileBlockDevice.create(path, 4, 512):
        with pytest.raises(StorageError, match="in use by another process"):
            FileBlockDevice.open(path, 512)
        with pytest.raises(StorageError, match="in use"):
            FileBlockDevice.open(path, 512, writable=False)
    with FileBlockDevice.open(path, 512, writable=False), FileBlockDevice.open(path, 512, writable=False):
        pass  # readers share


def test_a_file_that_shrinks_while_open_gives_an_integrity_error(tmp_path: Path) -> None:
    path = tmp_path / "img"
    with FileBlockDevice.create(path, 8, 512) as dev:
        os.truncate(path, 4 * 512)
        with pytest.raises(IntegrityError, match="past the end"):
            dev.read(2, 4)


def test_a_closed_device_refuses_use(tmp_path: Path) -> None:
    dev = FileBlockDevice.create(tmp_path / "img", 4, 512)
    dev.close()
    dev.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        dev.read(0)


# ------------------------------------------------------------------ image keys

KEY = bytes(range(32))


@pytest.mark.parametrize(
    "content",
    [
        KEY,
        KEY.hex().encode(),
        KEY.hex().upper().encode() + b"\n",
        b"  " + KEY.hex().encode() + b"\r\n",
        base64.b64encode(KEY),
        base64.b64encode(KEY) + b"\n",
        base64.urlsafe_b64encode(bytes([0xFB] * 32)),  # '-' and '_' appear
    ],
    ids=["raw", "hex", "HEX-newline", "hex-spaces", "base64", "base64-newline", "base64url"],
)
def test_key_files_in_every_accepted_form(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "key"
    path.write_bytes(content)
    expected = bytes([0xFB] * 32) if b"-" in content or b"_" in content else KEY
    assert load_image_key(path) == expected


def test_a_raw_key_that_looks_like_text_is_still_raw() -> None:
    raw = b"not hex at all, 32 bytes long!!!"
    assert len(raw) == 32
    assert parse_image_key(raw) == raw


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b" \n", "empty"),
        (b"ab" * 31, "62 hex digits"),
        (b"ab" * 33, "66 hex digits"),
        (b"0123456789abcdef" * 2, "32 hex digits"),  # a 16-byte key in hex is not a 32-byte raw key
        (base64.b64encode(bytes(16)), "base64 of 16 bytes"),
        (base64.b64encode(bytes(range(48))), "base64 of 48 bytes"),
        (b"k" * 31, "neither"),
        (b"this is not a key, it is a sentence of text\n", "neither"),
        (base64.b64encode(KEY)[:-1], "neither"),  # bad padding
        (KEY + b"\n", "neither"),  # 33 raw bytes
    ],
)
def test_malformed_key_files_are_refused_without_showing_the_key(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "key"
    path.write_bytes(content)
    with pytest.raises(KeyFileError, match=message) as info:
        load_image_key(path)
    text = str(info.value)
    assert str(path) in text
    if len(content) >= 8:
        assert content.strip()[:8].decode("latin-1") not in text


def test_key_file_access_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no such file"):
        load_image_key(tmp_path / "missing")
    with pytest.raises(KeyFileError, match="is a directory"):
        load_image_key(tmp_path)
    big = tmp_path / "big"
    big.write_bytes(b"a" * 5000)
    with pytest.raises(KeyFileError, match="larger than"):
        load_image_key(big)
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked"
        locked.write_bytes(KEY)
        locked.chmod(0)
        with pytest.raises(KeyFileError, match="cannot read"):
            load_image_key(locked)


def test_sub_keys_are_distinct_and_bound_to_the_image_and_format() -> None:
    ids = (bytes(16), bytes([1]) + bytes(15))
    salts = (bytes(16), bytes([2]) + bytes(15))
    a = derive_keys(KEY, ids[0], salts[0])
    assert len({a.data, a.node, a.superblock}) == 3
    assert a == derive_keys(KEY, ids[0], salts[0])  # deterministic
    for other in (derive_keys(KEY, ids[1], salts[0]), derive_keys(KEY, ids[0], salts[1])):
        assert not {a.data, a.node, a.superblock, a.key_check} & {
            other.data,
            other.node,
            other.superblock,
            other.key_check,
        }
    assert KEY.hex() not in repr(a) and a.data.hex() not in repr(a)
    with pytest.raises(ValueError):
        derive_keys(KEY[:16], ids[0], salts[0])
