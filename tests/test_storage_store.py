"""SecureStore: logical blocks, copy-on-write commits, space, nonces, and a model-based run."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from haven.shield.storage import opening as opening_module
from haven.shield.storage import store as store_module
from haven.shield.storage.counter import FileCounter
from haven.shield.storage.device import FileBlockDevice
from haven.shield.storage.errors import NoSpaceError, StorageError
from haven.shield.storage.layout import MAX_SPAN
from haven.shield.storage.store import SecureStore
from haven.shield.storage.tree import Geometry, Sealer, default_capacity
from tests.storage_block_support import Image, data_phys

# ------------------------------------------------------------------ basics


def test_format_gives_an_empty_store_that_reads_zeros(tmp_path: Path) -> None:
    img = Image.make(tmp_path, 256)
    s = img.s
    assert s.block_size == 4096 and s.version == 1 and len(s.image_id) == 16
    assert 0 < s.capacity < 256
    assert s.read(0) == s.read(s.capacity - 1) == bytes(4096)
    assert not s.dirty()
    assert s.commit() == 1  # nothing to commit
    assert FileCounter(img.counter_path).read() == 1
    s.check()


def test_write_read_commit_and_remount(tmp_path: Path) -> None:
    img = Image.make(tmp_path, 256)
    s = img.s
    s.write(5, b"x" * 4096)
    assert s.dirty() and s.read(5) == b"x" * 4096  # staged writes are read back at once
    assert s.commit() == 2 and not s.dirty()
    assert FileCounter(img.counter_path).read() == 2
    s.write(5, b"y" * 4096)
    s.write(6, memoryview(bytearray(b"z" * 4096)))
    s.close()  # without commit: the staged writes are gone
    s = img.open()
    assert s.version == 2
    assert s.read(5) == b"x" * 4096 and s.read(6) == bytes(4096)
    s.check()


def test_discard(tmp_path: Path) -> None:
    img = Image.make(tmp_path, 256)
    img.fill(range(10, 20))
    used = img.s.usage().logical_used
    img.s.discard(12)
    img.s.discard(100)  # never written: nothing to do
    assert img.s.read(12) == bytes(4096)
    img.s.write(13, b"n" * 4096)
    img.s.discard(13)  # a staged write, then discarded
    img.s.commit()
    assert img.s.usage().logical_used == used - 2
    s = img.open()
    assert s.read(12) == s.read(13) == bytes(4096)
    assert s.read(11) == img.expect(11)
    s.check()
    for lba in range(10, 20):
        s.discard(lba)
    s.commit()
    assert s.usage().logical_used == 0 and s.usage().physical_used == 0  # empty subtrees are dropped
    s.check()


def test_write_run_and_read_many(tmp_path: Path) -> None:
    img = Image.make(tmp_path, 512)
    s = img.s
    blob = os.urandom(37 * 4096)
    s.write_run(3, blob)
    s.commit()
    s = img.open()
    assert b"".join(s.read_many(range(3, 40))) == blob
    assert s.read_many([39, 3, 39, 200]) == [blob[-4096:], blob[:4096], blob[-4096:], bytes(4096)]
    assert s.read_many([]) == []
    with pytest.raises(StorageError, match="multiple of 4096"):
        s.write_run(0, bytes(100))
    with pytest.raises(StorageError, match="outside"):
        s.write_run(s.capacity - 1, bytes(8192))


def test_arguments_outside_the_store_are_refused(tmp_path: Path) -> None:
    s = Image.make(tmp_path, 64).s
    for lba in (-1, s.capacity):
        with pytest.raises(StorageError, match="outside"):
            s.read(lba)
        with pytest.raises(StorageError, match="outside"):
            s.write(lba, bytes(4096))
        with pytest.raises(StorageError, match="outside"):
            s.discard(lba)
        with pytest.raises(StorageError, match="outside"):
            s.read_many([0, lba])
    with pytest.raises(StorageError, match="4096 bytes, not 4095"):
        s.write(0, bytes(4095))


def test_a_read_only_mount_reads_and_refuses_writes(tmp_path: Path) -> None:
    img = Image.make(tmp_path, 64)
    img.fill([1, 2])
    s = img.open(writable=False)
    assert s.read(1) == img.expect(1)
    s.check()
    with pytest.raises(StorageError, match="read-only"):
        s.write(1, bytes(4096))
    with pytest.raises(StorageError, match="read-only"):
        s.discard(1)
    with pytest.raises(StorageError, match="read-only"):
        s.write_run(0, bytes(4096))


def test_a_closed_store_refuses_use(tmp_path: Path) -> None:
    img = Image.make(tmp_path, 64)
    img.s.close()
    with pytest.raises(StorageError, match="closed"):
        img.s.read(0)
    with pytest.raises(StorageError, match="closed"):
        img.s.commit()


def test_versions_follow_the_counter_and_a_counter_can_outlive_an_image(tmp_path: Path) -> None:
    img = Image.make(tmp_path, 64)
    for i in range(3):
        img.fill([i], seed=i)
    assert img.s.version == FileCounter(img.counter_path).read() == 4
    img.close()
    # Formatting again under the same counter starts after its value, never at a version it has passed.
    with FileBlockDevice.open(img.path) as dev:
        s = SecureStore.format(dev, img.key, FileCounter(img.counter_path))
        assert s.version == 5 and s.read(0) == bytes(4096)


def test_many_commits_with_spills_survive_remounts(tmp_path: Path) -> None:
    # A 64 KiB cache: staged data is sealed early (spilled) every few dozen blocks.
    img = Image.make(tmp_path, 1024, 4096, cache_bytes=64 << 10)
    rng = random.Random(7)
    for round_ in range(6):
        for _ in range(60):
            lba = rng.randrange(300)
            if rng.random() < 0.15:
                img.s.discard(lba)
                img.model.pop(lba, None)
            else:
                count = rng.choice((1, 1, 3, 16, 40))
                count = min(count, 300 - lba)
                data = rng.randbytes(count * 4096)
                img.s.write_run(lba, data)
                for k in range(count):
                    img.model[lba + k] = data[k * 4096 : (k + 1) * 4096]
        img.s.commit()
        if round_ % 2:
            img.open()
        assert all(img.s.read(lba) == data for lba, data in img.model.items())
        img.s.check()
    assert img.s.usage().logical_used == len(img.model)


def test_a_rewrite_inside_a_segment_reseals_the_rest(tmp_path: Path) -> None:
    img = Image.make(tmp_path, 256)
    img.fill(range(0, MAX_SPAN))  # one segment of a whole window
    phys = [data_phys(img.s, lba) for lba in range(MAX_SPAN)]
    assert phys == list(range(phys[0], phys[0] + MAX_SPAN))
    img.fill([5], seed=99)
    after = [data_phys(img.s, lba) for lba in range(MAX_SPAN)]
    assert not set(after) & set(phys)  # the old segment is freed whole
    s = img.open()
    assert all(s.read(lba) == img.expect(lba) for lba in range(MAX_SPAN))
    s.check()


def test_usage_and_info(tmp_path: Path) -> None:
    img = Image.make(tmp_path, 300)
    img.fill(range(40))
    img.s.write(100, bytes(4096))
    u = img.s.usage()
    assert (u.block_size, u.device_blocks, u.logical_used, u.dirty_blocks) == (4096, 300, 40, 1)
    assert u.physical_used + u.physical_free == 298 and u.physical_used >= 41
    info = img.s.info()
    assert info.version == 2 and info.slot == "B" and info.other_slot == "slot A: version 1"
    assert info.height == 2 and info.max_span == MAX_SPAN and info.image_id == img.s.image_id
    img.s.commit()
    s = img.open()
    assert s.info().slot == "A" and s.info().other_slot == "slot B: version 2"


def test_default_capacity_leaves_room_for_the_tree_and_the_reserve() -> None:
    for n, size in ((64, 4096), (1000, 4096), (1 << 20, 4096), (5000, 512)):
        capacity = default_capacity(n, size)
        geo = Geometry.for_capacity(size, capacity, n)
        assert 0 < capacity < n - 2 - geo.nodes_for(capacity)
    assert default_capacity(3, 4096) == 0


def test_too_small_and_bad_keys_are_refused(tmp_path: Path) -> None:
    counter = FileCounter.create(tmp_path / "c")
    with FileBlockDevice.create(tmp_path / "tiny", 3) as dev, pytest.raises(StorageError, match="too small"):
        SecureStore.format(dev, os.urandom(32), counter)
    with FileBlockDevice.create(tmp_path / "img", 64) as dev:
        for key in (b"", os.urandom(16), os.urandom(33)):
            with pytest.raises(StorageError, match="32 bytes"):
                SecureStore.format(dev, key, FileCounter(tmp_path / "c"))


# ------------------------------------------------------------------ space


def test_a_full_image_refuses_growth_but_still_rewrites_and_deletes(tmp_path: Path) -> None:
    img = Image.make(tmp_path, 128)
    s = img.s
    written = []
    with pytest.raises(NoSpaceError, match="full"):
        for lba in range(s.capacity):
            s.write(lba, lba.to_bytes(4, "big") * 1024)
            written.append(lba)
            if len(written) % 8 == 0:
                s.commit()
    s.commit()
    assert len(written) >= s.capacity * 0.8
    s.write(written[0], b"r" * 4096)  # a rewrite may use the reserve
    for lba in written[1:20]:
        s.discard(lba)
    s.commit()
    s.write(written[1], b"g" * 4096)  # space came back
    s.commit()
    s = img.open()
    assert s.read(written[0]) == b"r" * 4096 and s.read(written[1]) == b"g" * 4096
    assert s.read(written[-1]) == written[-1].to_bytes(4, "big") * 1024
    s.check()


def test_a_commit_larger_than_the_free_space_is_refused_and_nothing_is_lost(tmp_path: Path) -> None:
    img = Image.make(tmp_path, 128)
    img.fill(range(80))
    # Rewriting everything at once needs as many free blocks again (copy-on-write); it does not fit.
    with pytest.raises(NoSpaceError):
        for lba in range(80):
            img.s.write(lba, b"w" * 4096)
    img.s.close()
    s = img.open()
    assert all(s.read(lba) == img.expect(lba) for lba in range(80))
    s.check()


# ------------------------------------------------------------------ nonces


class _NonceLog:
    """Records every nonce handed to AES-GCM, by key, while the real sealing runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.data: list[bytes] = []
        self.node: list[bytes] = []
        seal_data, seal_node = Sealer.seal_data_into, Sealer.seal_node_into

        def data(sealer: Sealer, nonce: bytes, *args: object) -> None:
            self.data.append(nonce)
            seal_data(sealer, nonce, *args)  # type: ignore[arg-type]

        def node(sealer: Sealer, nonce: bytes, *args: object) -> None:
            self.node.append(nonce)
            seal_node(sealer, nonce, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(Sealer, "seal_data_into", data)
        monkeypatch.setattr(Sealer, "seal_node_into", node)


def test_no_nonce_repeats_across_commits_spills_and_abandoned_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _NonceLog(monkeypatch)
    img = Image.make(tmp_path, 2048, cache_bytes=64 << 10)  # spills past 256 staged blocks
    rng = random.Random(3)
    sealed_without_commit = 0
    for session in range(6):
        before = len(log.data)
        for _ in range(600):
            img.s.write(rng.randrange(1000), rng.randbytes(4096))
        if session % 2:
            img.s.commit()
        else:
            # The session ends without a commit, after spills wrote sealed blocks the host has seen:
            # the next session must not use those nonces again.
            sealed_without_commit += len(log.data) - before
        img.open()
    assert sealed_without_commit > 300 and len(log.node) > 20
    assert len(set(log.data)) == len(log.data)
    assert len(set(log.node)) == len(log.node)
    assert all(len(n) == 12 for n in log.data + log.node)


def test_running_out_of_reserved_nonces_reserves_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "NONCE_RESERVATION", 5)
    monkeypatch.setattr(opening_module, "NONCE_RESERVATION", 5)  # the format's own reservation too
    log = _NonceLog(monkeypatch)
    img = Image.make(tmp_path, 512)
    for i in range(12):
        img.fill(range(i * 3, i * 3 + 3), seed=i)
        if i % 4 == 3:
            img.open()
    assert img.s.version > 13  # reservation commits were made along the way
    nonces = log.data + log.node
    assert len(set(nonces)) == len(nonces)
    s = img.open()
    assert all(s.read(lba) == img.expect(lba) for lba in range(40))
    s.check()


# ------------------------------------------------------------------ a model-based run


class StoreMachine(RuleBasedStateMachine):
    """Random writes, runs, discards, commits (to the log or through the tree), checkpoints, clean
    remounts and crashes (remount without commit), against a dict. Small blocks and a tiny cache make
    trees of height 3, spills and evictions common."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self._tmp = tempfile.TemporaryDirectory()
        self.img = Image.make(Path(self._tmp.name), 600, 512, cache_bytes=24 * 512)
        self.committed: dict[int, bytes] = {}
        self.staged: dict[int, bytes | None] = {}
        self.lbas = st.integers(0, 79)

    def teardown(self) -> None:
        self.img.close()
        self._tmp.cleanup()

    def _now(self, lba: int) -> bytes:
        if lba in self.staged:
            return self.staged[lba] or bytes(512)
        return self.committed.get(lba, bytes(512))

    @rule(lba=st.integers(0, 79), seed=st.integers(0, 255))
    def write(self, lba: int, seed: int) -> None:
        data = bytes([seed]) * 512
        self.img.s.write(lba, data)
        self.staged[lba] = data

    @rule(first=st.integers(0, 70), count=st.integers(1, 10), seed=st.integers(0, 255))
    def write_run(self, first: int, count: int, seed: int) -> None:
        data = b"".join(bytes([seed, k]) * 256 for k in range(count))
        self.img.s.write_run(first, data)
        for k in range(count):
            self.staged[first + k] = data[k * 512 : (k + 1) * 512]

    @rule(lba=st.integers(0, 79))
    def discard(self, lba: int) -> None:
        self.img.s.discard(lba)
        self.staged[lba] = None

    @rule()
    def commit(self) -> None:
        self.commit_as(checkpoint=False)

    def commit_as(self, *, checkpoint: bool) -> None:
        self.img.s.commit(checkpoint=checkpoint)
        for lba, data in self.staged.items():
            if data is None:
                self.committed.pop(lba, None)
            else:
                self.committed[lba] = data
        self.staged.clear()

    @rule()
    def checkpoint(self) -> None:
        self.commit_as(checkpoint=True)

    @rule()
    def crash(self) -> None:
        self.img.open()
        self.staged.clear()

    @precondition(lambda self: not self.staged)
    @rule()
    def check(self) -> None:
        self.img.s.check()

    @rule(lbas=st.lists(st.integers(0, 79), max_size=12))
    def read_many(self, lbas: list[int]) -> None:
        assert self.img.s.read_many(lbas) == [self._now(lba) for lba in lbas]

    @invariant()
    def reads_match(self) -> None:
        for lba in range(0, 80, 7):
            assert self.img.s.read(lba) == self._now(lba)

    @invariant()
    def usage_matches(self) -> None:
        # Whether the last commit went to the log or through the tree, its blocks count the same.
        usage = self.img.s.usage()
        assert usage.logical_used == len(self.committed)
        if not self.staged:
            assert usage.dirty_blocks == 0 and not self.img.s.dirty()


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(
    max_examples=25, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
