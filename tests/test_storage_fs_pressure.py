"""The crash harness's mixed workload, in one process, under memory pressure: a block cache of a few
blocks (every read past it is fetched and verified again) and staged writes spilled early, so partial
block writes keep reading back blocks the store has just staged, spilled or evicted.

After each session the image is remounted and must hold exactly the model's tree, pass fsck and the
store's full check. A store read that returned a block of the wrong size would surface here as the
store refusing the merged block ("a block is 4096 bytes, not N"); a stale one as a wrong tree.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from haven.shield.storage.counter import FileCounter
from haven.shield.storage.device import FileBlockDevice
from haven.shield.storage.fs import FileSystem
from haven.shield.storage.fs.fsck import check as fsck
from haven.shield.storage.store import SecureStore
from tests.crash_writer import Workload, tree_state

SMALL_CACHE = 64 << 10  # the store keeps at least 16 blocks; its staging spills past 1 MiB


class _Unjournalled(Workload):
    """The workload without its journal (nothing is killed here, so nothing needs recording), syncing
    at one in ``SYNC_EVERY`` of its sync points: megabytes are staged between syncs, past the store's
    limit, so staged blocks are sealed early (spilled) in the middle of file writes."""

    SYNC_EVERY = 20

    def record(self, obj: dict[str, object]) -> None:
        pass

    def sync(self) -> None:
        self.seq += 1
        if self.seq % self.SYNC_EVERY == 0:
            self.fs.sync()

    def finish(self) -> None:
        self.fs.sync()


def _sessions(tmp_path: Path, seed: int, *, sessions: int, steps: int, cache_bytes: int) -> None:
    path, counter = tmp_path / f"p{seed}.img", tmp_path / f"p{seed}.counter"
    key = os.urandom(32)
    dev = FileBlockDevice.create(path, 8192)
    store = SecureStore.format(dev, key, FileCounter.create(counter), cache_bytes=cache_bytes)
    fs = FileSystem.format(store)
    rng = random.Random(seed)
    try:
        for _ in range(sessions):
            work = _Unjournalled(fs, rng, -1)
            for _ in range(steps):
                work.step()
            work.finish()
            expect = work.m.state()
            store.close()
            dev.close()
            dev = FileBlockDevice.open(path)
            store = SecureStore.mount(dev, key, FileCounter(counter), cache_bytes=cache_bytes)
            fs = FileSystem.mount(store)
            assert tree_state(fs) == expect
            fsck(fs)
            store.check()
    finally:
        store.close()
        dev.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_mixed_workload_with_a_tiny_cache(tmp_path: Path, seed: int) -> None:
    _sessions(tmp_path, seed, sessions=3, steps=400, cache_bytes=SMALL_CACHE)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(100, 160))
def test_mixed_workload_soak(tmp_path: Path, seed: int) -> None:
    _sessions(tmp_path, seed, sessions=4, steps=400, cache_bytes=SMALL_CACHE if seed % 2 else 4 << 20)
