"""The block layer's fast paths: whole windows sealed straight from the caller's buffer and written
behind, one flush per commit (a torn commit is told from a whole one at mount), long reads decrypted
straight into the caller's buffer, and the counter's write-through."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest

from haven.shield.storage.counter import FileCounter
from haven.shield.storage.device import FileBlockDevice
from haven.shield.storage.errors import IntegrityError, NoSpaceError, StorageError
from haven.shield.storage.store import SecureStore
from haven.shield.storage.writeback import RUN_BLOCKS
from tests.storage_block_support import (
    CrashBeforeAdvance,
    FailingWrites,
    Image,
    data_phys,
    flip_bit,
    node_phys,
    write_block,
)

BS = 4096
SPAN = 16  # layout.MAX_SPAN: a whole window


def _crashed_commit(img: Image) -> tuple[int, int, dict[str, int]]:
    """A committed image, then a session whose commit crashes before the counter moved. Returns
    (the acknowledged version, the crashed commit's version, physical blocks of that commit)."""
    img.fill(range(0, 40), seed=1)
    img.close()
    dev = FileBlockDevice.open(img.path, BS)
    # The first advance is the session's nonce reservation (a commit of its own); the second crashes.
    s = SecureStore.mount(dev, img.key, CrashBeforeAdvance(FileCounter(img.counter_path), allow=1))
    s.write_run(64, b"w" * (SPAN * BS))  # a whole window, sealed at once (after the reservation)
    s.write(3, b"s" * BS)  # a staged block, sealed at commit
    acknowledged = s.version
    where = {"window": data_phys(s, 64), "acknowledged slot": s._slot}
    with pytest.raises(KeyboardInterrupt):
        s.commit()
    where["leaf"] = data_phys(s, 3)  # sealed during the commit; the leaf points at it
    where["node"] = node_phys(s, 1, 0)
    dev.close()
    assert FileCounter(img.counter_path).read() == acknowledged
    return acknowledged, acknowledged + 1, where


@pytest.mark.parametrize("torn", ["window", "leaf", "node"])
def test_a_torn_commit_is_dropped_for_the_one_before_it(tmp_path: Path, torn: str) -> None:
    img = Image.make(tmp_path, 400)
    acknowledged, crashed, where = _crashed_commit(img)
    # The power went before the flush finished: the superblock reached the disk, this block did not.
    write_block(img.path, where[torn], BS, bytes(BS))
    s = img.open()
    assert s.version == acknowledged == FileCounter(img.counter_path).read()
    assert s.read(64) == bytes(BS) and s.read(3) == img.expect(3)
    assert all(s.read(lba) == img.expect(lba) for lba in range(40))
    s.check()
    # The slot of the torn commit is the next one written: the image goes on as if it never was.
    s.write(5, b"n" * BS)
    version = s.commit()  # (after a nonce reservation, itself a commit)
    assert version >= crashed
    s = img.open()
    assert s.version == version and s.read(5) == b"n" * BS and s.read(64) == bytes(BS)
    s.check()


def test_a_whole_crashed_commit_is_finished(tmp_path: Path) -> None:
    img = Image.make(tmp_path, 400)
    _, crashed, _ = _crashed_commit(img)
    s = img.open()
    assert s.version == crashed == FileCounter(img.counter_path).read()
    assert s.read(64) == b"w" * BS and s.read(3) == b"s" * BS
    s.check()


def test_a_read_only_mount_leaves_a_crashed_commit_for_the_next_writer(tmp_path: Path) -> None:
    img = Image.make(tmp_path, 400)
    acknowledged, crashed, _ = _crashed_commit(img)
    s = img.open(writable=False)
    assert s.version == crashed and s.read(64) == b"w" * BS
    assert FileCounter(img.counter_path).read() == acknowledged  # looking changed nothing
    s = img.open()
    assert s.version == crashed == FileCounter(img.counter_path).read()


def test_an_acknowledged_commit_is_never_dropped_for_an_older_one(tmp_path: Path) -> None:
    """The fallback is only for a commit the counter has not reached: a block of an acknowledged
    commit damaged on the device is an integrity failure, never a reason to mount the older slot."""
    img = Image.make(tmp_path, 400)
    img.fill(range(0, 40), seed=1)
    img.s.write_run(64, b"w" * (SPAN * BS))
    img.s.commit()
    phys = data_phys(img.s, 64)
    version = img.s.version
    img.close()
    write_block(img.path, phys, BS, bytes(BS))
    s = img.open()
    assert s.version == version
    with pytest.raises(IntegrityError, match="fails authentication"):
        s.read(64)
    with pytest.raises(IntegrityError):
        s.read(0)  # the store stopped


def test_a_torn_commit_with_no_older_commit_to_fall_back_to_is_refused(tmp_path: Path) -> None:
    img = Image.make(tmp_path, 400)
    _, _, where = _crashed_commit(img)
    write_block(img.path, where["window"], BS, bytes(BS))
    # The acknowledged commit's superblock is damaged too: nothing acknowledged can be mounted, and
    # the torn commit is not mounted either.
    flip_bit(img.path, where["acknowledged slot"], BS, 8 * 200)
    with pytest.raises(IntegrityError, match="fails authentication"):
        img.open()


# ------------------------------------------------------------------ long reads


def _mixed_image(tmp_path: Path) -> tuple[Image, dict[int, bytes]]:
    """Whole windows, partial windows, single blocks, holes, a rewritten block inside a window, and
    blocks staged but not committed."""
    img = Image.make(tmp_path, 2048, cache_bytes=256 << 10)
    rng = random.Random(5)
    model: dict[int, bytes] = {}

    def put_run(first: int, count: int) -> None:
        data = rng.randbytes(count * BS)
        img.s.write_run(first, data)
        model.update({first + k: data[k * BS : (k + 1) * BS] for k in range(count)})

    put_run(0, 4 * SPAN)  # whole windows
    put_run(SPAN * 5 + 3, 20)  # a run across a window boundary, partial at both ends
    for lba in (100, 101, 130, 200):
        model[lba] = rng.randbytes(BS)
        img.s.write(lba, model[lba])
    img.s.commit()
    model[SPAN + 7] = rng.randbytes(BS)  # rewritten inside a whole window
    img.s.write(SPAN + 7, model[SPAN + 7])
    img.s.commit()
    put_run(8 * SPAN, 2 * SPAN)  # sealed, not committed
    model[300] = rng.randbytes(BS)  # staged
    img.s.write(300, model[300])
    return img, model


def test_read_into_agrees_with_read_many_everywhere(tmp_path: Path) -> None:
    img, model = _mixed_image(tmp_path)
    rng = random.Random(9)
    ranges = [(0, 320), (0, 64), (3, 200), (SPAN + 5, 3 * SPAN), (250, 70)]
    ranges += [(rng.randrange(300), rng.randrange(1, 200)) for _ in range(40)]
    for first, count in ranges:
        count = min(count, 320 - first)
        out = bytearray(b"\xaa" * (count * BS))
        img.s.read_into(first, count, memoryview(out))
        want = b"".join(model.get(lba, bytes(BS)) for lba in range(first, first + count))
        assert out == want, (first, count)
    img.s.commit()
    img.open()
    out = bytearray(320 * BS)
    img.s.read_into(0, 320, memoryview(out))
    assert out == b"".join(model.get(lba, bytes(BS)) for lba in range(320))


@pytest.mark.parametrize(
    ("damaged", "count"), [(2 * SPAN, 4 * SPAN), (SPAN, 20 * SPAN), (19 * SPAN, 20 * SPAN)]
)
def test_a_long_read_of_a_damaged_segment_leaves_no_plaintext_behind(
    tmp_path: Path, damaged: int, count: int
) -> None:
    img, _ = _mixed_image(tmp_path)
    img.s.write_run(10 * SPAN, os.urandom(10 * SPAN * BS))
    img.s.commit()
    phys = data_phys(img.s, damaged)
    img.close()
    flip_bit(img.path, phys, BS, 8 * 100)
    s = img.open()
    out = bytearray(b"\xaa" * (count * BS))
    with pytest.raises(IntegrityError, match="fails authentication"):
        s.read_into(0, count, memoryview(out))
    # AES-GCM decrypts before it checks: every byte the failed read could have put there is gone.
    assert out == bytes(len(out))
    with pytest.raises(IntegrityError):
        s.read(0)


@pytest.mark.parametrize(("first", "count", "size"), [(0, 0, 0), (0, 2, BS), (-1, 1, BS), (1999, 2, 2 * BS)])
def test_read_into_refuses_a_bad_request(tmp_path: Path, first: int, count: int, size: int) -> None:
    img = Image.make(tmp_path, 256)
    capacity = img.s.capacity
    first = capacity - 1 if first == 1999 else first
    with pytest.raises(StorageError):
        img.s.read_into(first, count, memoryview(bytearray(size)))


# ------------------------------------------------------------------ whole windows, written behind


def test_a_failed_background_write_stops_the_store(tmp_path: Path) -> None:
    img = Image.make(tmp_path, 6000)
    img.fill(range(10), seed=2)
    version = img.s.version
    img.close()
    with FileBlockDevice.open(img.path, BS) as dev:
        s = SecureStore.mount(FailingWrites(dev, ok=1), img.key, FileCounter(img.counter_path))
        # More than a run's worth of whole windows: runs go to the writer thread while sealing goes on.
        with pytest.raises(StorageError, match="write failed"):
            for at in range(0, 4 * RUN_BLOCKS, SPAN):
                s.write_run(1000 + at, os.urandom(SPAN * BS))
            s.commit()
        with pytest.raises(StorageError, match="stopped after a failed write"):
            s.read(0)
        s.close()
    s = img.open()
    assert s.version >= version  # (the session's nonce reservation is a commit of the same tree)
    assert all(s.read(lba) == img.expect(lba) for lba in range(10))
    assert s.read(1000) == bytes(BS)
    s.check()


def test_whole_windows_fill_the_image_to_its_reserve_then_rewrites_still_work(tmp_path: Path) -> None:
    img = Image(tmp_path / "img", tmp_path / "img.counter", os.urandom(32), BS)
    img.dev = FileBlockDevice.create(img.path, 600, BS)
    # More logical blocks than physical ones (thin provisioning): the device fills up first.
    img.store = SecureStore.format(img.dev, img.key, FileCounter.create(img.counter_path), capacity=4096)
    data = os.urandom(SPAN * BS)
    written = 0
    with pytest.raises(NoSpaceError, match="full"):
        for first in range(0, 4096, SPAN):
            img.s.write_run(first, data)
            written = first + SPAN
    assert written > 400
    img.s.commit()
    # A full image can still rewrite what it holds (the reserve is for that) and commit it.
    img.s.write_run(0, bytes(reversed(data)))
    img.s.commit()
    s = img.open()
    assert s.read(0) == bytes(reversed(data))[:BS]
    assert s.read(written - 1) == data[-BS:]
    s.check()


def test_a_read_sees_a_window_still_on_its_way_to_the_device(tmp_path: Path) -> None:
    img = Image.make(tmp_path, 6000)
    blobs = {first: os.urandom(SPAN * BS) for first in range(0, 3 * RUN_BLOCKS, SPAN)}
    for first, blob in blobs.items():
        img.s.write_run(first, blob)
    for first, blob in random.Random(1).sample(sorted(blobs.items()), 20):
        assert img.s.read(first + 3) == blob[3 * BS : 4 * BS]
    img.s.commit()
    s = img.open()
    out = bytearray(len(blobs) * SPAN * BS)
    s.read_into(0, len(blobs) * SPAN, memoryview(out))
    assert out == b"".join(blobs[first] for first in sorted(blobs))
    s.check()


# ------------------------------------------------------------------ the counter's write-through


@pytest.mark.parametrize("how", ["no RWF_DSYNC", "EOPNOTSUPP"])
def test_the_counter_advances_without_a_write_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    counter = FileCounter.create(tmp_path / "c", 4)
    if how == "no RWF_DSYNC":
        monkeypatch.delattr(os, "RWF_DSYNC", raising=False)
    else:

        def refuse(*args: object) -> int:
            raise OSError(errno.EOPNOTSUPP, "not supported")

        monkeypatch.setattr(os, "pwritev", refuse)
    counter.advance(4, 5)
    counter.advance(5, 9)
    assert FileCounter(tmp_path / "c").read() == 9


def test_the_counter_reports_a_failed_write_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = FileCounter.create(tmp_path / "c", 4)

    def fail(*args: object) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "pwritev", fail)
    with pytest.raises(StorageError, match="cannot update it"):
        counter.advance(4, 5)
    monkeypatch.undo()
    assert FileCounter(tmp_path / "c").read() == 4


def test_the_entry_field_offsets_agree_with_the_table() -> None:
    """Hot paths read and set spans and offsets across many entries through these offsets."""
    import struct

    from haven.shield.storage.layout import ENTRY, ENTRY_OFFSET_AT, ENTRY_SPAN_AT

    packed = ENTRY.pack(0x1122334455667788, 2, bytes(12), 7, 3, bytes(16), bytes(16))
    assert struct.unpack_from("<Q", packed, 0)[0] == 0x1122334455667788
    assert struct.unpack_from("<H", packed, ENTRY_SPAN_AT)[0] == 7
    assert struct.unpack_from("<H", packed, ENTRY_OFFSET_AT)[0] == 3


def test_a_very_long_read_keeps_its_scratch_space_bounded(tmp_path: Path) -> None:
    from haven.shield.storage.blocktree import MAX_READ_RUN

    img = Image.make(tmp_path, 6000)
    data = os.urandom(2000 * BS)
    img.s.write_run(0, data)
    img.s.write(1500, b"x" * BS)  # a lone block in the middle
    img.s.commit()
    s = img.open()
    out = bytearray(2000 * BS)
    s.read_into(0, 2000, memoryview(out))
    assert out == data[: 1500 * BS] + b"x" * BS + data[1501 * BS :]
    assert len(s._tree._read_scratch) <= MAX_READ_RUN * (BS + 16)
