"""FileCounter: a compare-and-set freshness counter in a local file that survives torn writes."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from haven.shield.storage.counter import CounterRecord, FileCounter
from haven.shield.storage.errors import CounterConflict, StorageError


def test_create_read_advance_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ctr"
    counter = FileCounter.create(path)
    assert counter.read() == 0
    counter.advance(0, 1)
    counter.advance(1, 5)
    assert counter.read() == 5
    assert FileCounter(path).read() == 5
    assert path.stat().st_size == 128
    assert (path.stat().st_mode & 0o777) == 0o600
    assert FileCounter.create(tmp_path / "other", 41).read() == 41


def test_compare_and_set_refuses_a_stale_expectation(tmp_path: Path) -> None:
    a = FileCounter.create(tmp_path / "ctr")
    b = FileCounter(tmp_path / "ctr")
    a.advance(0, 1)
    with pytest.raises(CounterConflict, match="is 1, expected 0"):
        b.advance(0, 1)
    b.advance(1, 2)
    assert a.read() == 2
    # ``a`` remembers the file as its own advance left it; another writer's change is still seen.
    with pytest.raises(CounterConflict, match="is 2, expected 1"):
        a.advance(1, 3)
    a.advance(2, 3)
    with pytest.raises(CounterConflict, match="is 3, expected 2"):
        b.advance(2, 4)


def test_a_counter_only_moves_forward(tmp_path: Path) -> None:
    counter = FileCounter.create(tmp_path / "ctr", 3)
    for expected, new in ((3, 3), (3, 2), (-1, 0), (3, 1 << 64)):
        with pytest.raises(StorageError, match="cannot move"):
            counter.advance(expected, new)
    assert counter.read() == 3


def test_create_refuses_to_replace_a_counter(tmp_path: Path) -> None:
    path = tmp_path / "ctr"
    FileCounter.create(path, 7)
    with pytest.raises(StorageError, match="already exists"):
        FileCounter.create(path)
    assert FileCounter(path).read() == 7
    with pytest.raises(StorageError, match="out of range"):
        FileCounter.create(tmp_path / "neg", -1)


def test_missing_and_malformed_counter_files(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no such file"):
        FileCounter(tmp_path / "missing")
    short = tmp_path / "short"
    short.write_bytes(bytes(100))
    with pytest.raises(StorageError, match="100 bytes, expected 128"):
        FileCounter(short)
    long = tmp_path / "long"
    long.write_bytes(bytes(129))
    with pytest.raises(StorageError, match="expected 128"):
        FileCounter(long)
    zero = tmp_path / "zero"
    zero.write_bytes(bytes(128))
    with pytest.raises(StorageError, match="both records are damaged"):
        FileCounter(zero)


def test_a_torn_write_leaves_the_previous_value(tmp_path: Path) -> None:
    path = tmp_path / "ctr"
    counter = FileCounter.create(path)
    counter.advance(0, 1)
    counter.advance(1, 2)
    data = bytearray(path.read_bytes())
    newest = max(range(2), key=lambda s: CounterRecord.from_bytes(bytes(data[s * 64 : s * 64 + 64])).value)
    data[newest * 64 + 9] ^= 0x40  # the write of 2 was torn: its record no longer checks out
    path.write_bytes(bytes(data))
    assert counter.read() == 1
    counter.advance(1, 2)  # the damaged slot is the one written next
    assert counter.read() == 2
    data = bytearray(path.read_bytes())
    data[0:64] = bytes(64)
    data[64:128] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="both records are damaged"):
        counter.read()


def test_a_checksum_that_is_not_of_the_record_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ctr"
    FileCounter.create(path, 5)
    forged = CounterRecord.from_bytes(CounterRecord.encode(9)).replace(value=10).to_bytes()  # checksum of 9
    path.write_bytes(forged + forged)
    with pytest.raises(StorageError, match="damaged"):
        FileCounter(path)


def _race(path: str, start: int, wins: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    counter = FileCounter(Path(path))
    won = 0
    for value in range(start, start + 200):
        try:
            counter.advance(value, value + 1)
            won += 1
        except CounterConflict:
            pass
    wins.put(won)


def test_concurrent_processes_see_a_true_compare_and_set(tmp_path: Path) -> None:
    path = tmp_path / "ctr"
    FileCounter.create(path)
    ctx = multiprocessing.get_context("fork")
    wins: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_race, args=(str(path), 0, wins)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    total = sum(wins.get(timeout=5) for _ in procs)
    # Each step from v to v + 1 succeeds for exactly one process, however they interleave.
    assert FileCounter(path).read() == total
    assert total <= 200
