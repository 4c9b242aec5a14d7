"""Long sequential writes and reads of the block layer: whole windows sealed together straight from the
caller's buffer and written behind on a second thread, long reads decrypted straight into the caller's
buffer; what the host can break on the way, and the device that takes no second thread."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from haven.shield.storage.blocktree import MAX_READ_RUN
from haven.shield.storage.counter import FileCounter
from haven.shield.storage.device import Buffer, FileBlockDevice
from haven.shield.storage.errors import IntegrityError, StorageError
from haven.shield.storage.layout import ENTRY, ENTRY_SIZE
from haven.shield.storage.store import SecureStore
from haven.shield.storage.writeback import RUN_BLOCKS, WriteFailed
from tests.storage_block_support import FailingWrites, Image, data_phys, flip_bit

BS = 4096
SPAN = 16  # layout.MAX_SPAN: a whole window
MIB_BLOCKS = (1 << 20) // BS


# (phys, version, nonce, span, offset, tag) of a leaf entry.
_Entry = tuple[int, int, bytes, int, int, bytes]


def _segments(s: SecureStore, first: int, count: int) -> list[_Entry]:
    """The leaf entries of logical blocks ``first .. first + count - 1``."""
    tree = s._tree
    out = []
    for lba in range(first, first + count):
        leaf = tree.node(1, lba >> tree.geo.shift)
        assert leaf is not None
        phys, version, nonce, span, offset, tag, _ = ENTRY.unpack_from(
            leaf, (lba & (tree.geo.fanout - 1)) * ENTRY_SIZE
        )
        out.append((phys, version, nonce, span, offset, tag))
    return out


def _read(s: SecureStore, first: int, count: int) -> bytes:
    out = bytearray(count * BS)
    s.read_into(first, count, memoryview(out))
    return bytes(out)


# ------------------------------------------------------------------ the data comes back


def test_a_long_write_then_read_returns_the_data(tmp_path: Path) -> None:
    img = Image.make(tmp_path, 6000)
    data = os.urandom(4 * MIB_BLOCKS * BS)
    # In 1 MiB calls, as a file system passes them on; then a run that starts and ends inside windows.
    for k in range(4):
        img.s.write_run(k * MIB_BLOCKS, data[k * MIB_BLOCKS * BS : (k + 1) * MIB_BLOCKS * BS])
    odd = os.urandom(100 * BS)
    img.s.write_run(4 * MIB_BLOCKS + 5, odd)
    # Read back before the commit: every read waits for the writes still on their way.
    assert _read(img.s, 0, 4 * MIB_BLOCKS) == data
    assert _read(img.s, 4 * MIB_BLOCKS + 5, 100) == odd
    img.s.commit()
    s = img.open()
    assert _read(s, 0, 4 * MIB_BLOCKS) == data
    assert _read(s, 4 * MIB_BLOCKS + 5, 100) == odd
    assert _read(s, 7, 3 * MIB_BLOCKS + 1) == data[7 * BS : (3 * MIB_BLOCKS + 8) * BS]  # mid-segment ends
    s.check()


@pytest.mark.parametrize("block_size", [512, 1024, 65536])
def test_whole_windows_of_other_block_sizes(tmp_path: Path, block_size: int) -> None:
    # 512-byte blocks: a window is a whole leaf (8 entries); 64 KiB blocks: 64 windows a leaf.
    img = Image.make(tmp_path, 3000 if block_size < 65536 else 300, block_size)
    data = os.urandom(200 * block_size)
    img.s.write_run(0, data[: 192 * block_size])
    img.s.write_run(192, data[192 * block_size :])
    img.s.commit()
    s = img.open()
    out = bytearray(len(data))
    s.read_into(0, 200, memoryview(out))
    assert out == data
    s.check()


def test_whole_windows_are_placed_as_one_segment_each(tmp_path: Path) -> None:
    img = Image.make(tmp_path, 2000)
    img.s.write_run(0, os.urandom(MIB_BLOCKS * BS))
    entries = _segments(img.s, 0, MIB_BLOCKS)
    for w in range(MIB_BLOCKS // SPAN):
        window = entries[w * SPAN : (w + 1) * SPAN]
        head = window[0]
        assert [e[4] for e in window] == list(range(SPAN))  # offsets in the segment
        assert [e[0] for e in window] == list(range(head[0], head[0] + SPAN))  # consecutive blocks
        assert all(e[1:4] == head[1:4] and e[5] == head[5] for e in window)  # version, nonce, span, tag
        assert head[3] == SPAN
    img.s.commit()
    img.open().check()  # the mount walk validates every leaf; check authenticates every segment


def test_a_long_write_into_fragmented_space_splits_its_windows(tmp_path: Path) -> None:
    img = Image.make(tmp_path, 700)
    s = img.s
    # Windows interleaved, commit by commit, with lone blocks and tree nodes; the lone blocks then go,
    # and what is free is a patchwork of holes smaller than a window.
    for w in range(36):
        s.write_run(w * SPAN, os.urandom(SPAN * BS))
        s.write(576 + w, os.urandom(BS))
        s.commit()
    for w in range(36):
        s.discard(576 + w)
    s.commit()
    data = os.urandom(4 * SPAN * BS)
    s.write_run(0, data)  # a rewrite of four whole windows
    spans = [e[3] for e in _segments(s, 0, 4 * SPAN) if e[4] == 0]
    assert max(spans) < SPAN and sum(spans) == 4 * SPAN
    assert _read(s, 0, 4 * SPAN) == data
    s.commit()
    s = img.open()
    assert _read(s, 0, 4 * SPAN) == data
    s.check()


def test_a_long_rewrite_is_not_hidden_by_cached_blocks(tmp_path: Path) -> None:
    img = Image.make(tmp_path, 2000)
    lone = range(0, 8 * SPAN, 3)  # lone blocks (a commit too large for the log): sealed alone, cached
    for lba in lone:
        img.s.write(lba, bytes([lba]) * BS)
    img.s.commit()
    assert all(img.s.read(lba) == bytes([lba]) * BS for lba in lone)
    assert all(img.s._cache.get(lba) is not None for lba in lone)
    data = os.urandom(8 * SPAN * BS)
    img.s.write_run(0, data)  # whole windows over them, sealed at once
    assert [img.s.read(lba) for lba in range(8 * SPAN)] == [
        data[lba * BS : (lba + 1) * BS] for lba in range(8 * SPAN)
    ]
    img.s.commit()
    assert _read(img.open(), 0, 8 * SPAN) == data


def test_nonces_of_a_long_write_are_distinct_and_reserved(tmp_path: Path) -> None:
    img = Image.make(tmp_path, 6000)
    for k in range(3):
        img.s.write_run(k * MIB_BLOCKS, os.urandom(MIB_BLOCKS * BS))
    img.s.write_run(3 * MIB_BLOCKS + 3, os.urandom(40 * BS))  # partial windows: staged, sealed at commit
    img.s.commit()
    s = img.open()
    entries = _segments(s, 0, 3 * MIB_BLOCKS + 43)
    heads = [e for e in entries if e[0] and e[4] == 0]
    nonces = [int.from_bytes(e[2], "big") for e in heads]
    assert len(heads) >= 3 * MIB_BLOCKS // SPAN + 3
    assert len(set(nonces)) == len(nonces)
    # Below the superblock's mark: inside a range a committed superblock reserved.
    assert all(n < s.info().nonce_hwm for n in nonces)


# ------------------------------------------------------------------ what the host can break


@pytest.mark.parametrize("where", ["first segment", "a later device read", "last segment"])
def test_a_flipped_bit_in_a_long_read_zeroes_the_buffer(tmp_path: Path, where: str) -> None:
    img = Image.make(tmp_path, 6000)
    count = 3 * MAX_READ_RUN  # three device reads' worth
    img.s.write_run(0, os.urandom(count * BS))
    img.s.commit()
    lba = {"first segment": 2, "a later device read": MAX_READ_RUN + 37, "last segment": count - 1}[where]
    phys = data_phys(img.s, lba)
    img.close()
    flip_bit(img.path, phys, BS, bit=1234)
    s = img.open()
    out = bytearray(b"\xaa") * (count * BS)
    with pytest.raises(IntegrityError, match="fails authentication"):
        s.read_into(0, count, memoryview(out))
    assert out == bytes(len(out))  # nothing unverified, and nothing verified either, is handed back
    with pytest.raises(IntegrityError, match="stopped"):
        s.read_into(0, count, memoryview(out))


def test_a_failed_background_write_stops_the_store_for_good(tmp_path: Path) -> None:
    img = Image.make(tmp_path, 9000)
    img.fill(range(20), seed=3)
    img.close()
    with FileBlockDevice.open(img.path, BS) as dev:
        failing = FailingWrites(dev, ok=2)  # the session's nonce reservation, then one run
        s = SecureStore.mount(failing, img.key, FileCounter(img.counter_path))
        with pytest.raises(WriteFailed, match="write failed"):
            for k in range(8):  # 8 MiB: runs of RUN_BLOCKS go to the writer thread while sealing goes on
                s.write_run(1000 + k * MIB_BLOCKS, os.urandom(MIB_BLOCKS * BS))
            s.commit()
        assert any(name.startswith("haven-writeback") for name in failing.writers)
        failing.ok = 1 << 30  # the disk is back: the store stays stopped all the same
        with pytest.raises(StorageError, match="stopped after a failed write"):
            s.write(0, b"z" * BS)
        with pytest.raises(StorageError, match="stopped after a failed write"):
            s.commit()
        with pytest.raises(StorageError, match="stopped after a failed write"):
            s.read(0)
        s.close()
    s = img.open()
    assert all(s.read(lba) == img.expect(lba) for lba in range(20))
    assert s.read(1000) == bytes(BS)
    s.check()


# ------------------------------------------------------------------ a device that takes no second thread


class _OneThreadDevice:
    """A device as the host channel serves it: no ``read_into``, no calls from a second thread (every
    call is checked to come from the thread that made it)."""

    concurrent = False

    def __init__(self, inner: FileBlockDevice) -> None:
        self.inner = inner
        self.block_size = inner.block_size
        self.owner = threading.get_ident()
        self.calls = 0

    def _check(self) -> None:
        assert threading.get_ident() == self.owner, "a call from a second thread"
        self.calls += 1

    def size(self) -> int:
        return self.inner.size()

    def read(self, lba: int, n: int = 1) -> bytes:
        self._check()
        return self.inner.read(lba, n)

    def write(self, lba: int, data: Buffer) -> None:
        self._check()
        self.inner.write(lba, data)

    def flush(self) -> None:
        self._check()
        self.inner.flush()


def test_a_device_without_a_second_thread_is_used_from_one(tmp_path: Path) -> None:
    path = tmp_path / "img"
    key = os.urandom(32)
    data = os.urandom((2 * RUN_BLOCKS + 3 * SPAN) * BS)  # more than two run buffers
    with FileBlockDevice.create(path, 6000, BS) as raw:
        dev = _OneThreadDevice(raw)
        s = SecureStore.format(dev, key, FileCounter.create(tmp_path / "c"))
        for at in range(0, len(data), MIB_BLOCKS * BS):
            s.write_run(at // BS, data[at : at + MIB_BLOCKS * BS])
        assert _read(s, 0, len(data) // BS) == data
        s.commit()
        assert s._tree.writes._pool is None  # no thread was ever started
        s.close()
    with FileBlockDevice.open(path, BS) as raw:
        dev = _OneThreadDevice(raw)
        s = SecureStore.mount(dev, key, FileCounter(tmp_path / "c"))
        before = dev.calls
        assert _read(s, 0, len(data) // BS) == data
        # Physically consecutive segments are read together, MAX_READ_RUN blocks a call at most.
        assert dev.calls - before <= -(-len(data) // (MAX_READ_RUN * BS)) + 4
        s.check()
        s.close()
