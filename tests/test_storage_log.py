"""The commit log: a small commit sealed as one record, taken into the tree at the next checkpoint.

On the real layers (FileBlockDevice, FileCounter, SecureStore): what goes to the log and what
checkpoints, the usage figures, the host's attacks on records, a crash between the superblock and the
counter, and each check of ``read_chain`` and of ``check_geometry`` broken on its own by records forged
with the image's real keys, as only a buggy writer could.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from haven.shield.storage.alloc import FREE, LIVE
from haven.shield.storage.counter import FileCounter
from haven.shield.storage.errors import IntegrityError, RollbackError, StorageError
from haven.shield.storage.image import check, create_image, info, open_image
from haven.shield.storage.layout import (
    ABSENT,
    Entry,
)
from haven.shield.storage.log import LOG_MAX_BLOCKS, LOG_MAX_RECORDS
from haven.shield.storage.store import SecureStore
from tests.storage_block_support import Image, data_phys, flip_bit, read_block, write_block
from tests.storage_log_support import BASE, BS, N_BLOCKS, log, make, newest, verify, write, zero

# ------------------------------------------------------------------ what goes to the log


def test_a_small_commit_goes_to_the_log_not_the_tree(tmp_path: Path) -> None:
    img = make(tmp_path)
    s = img.s
    root, old = s._tree.root, data_phys(s, 4)
    entry = log(img, 21, 4)  # a block new to its leaf, and a rewrite of one the tree holds
    assert s._tree.root == root and data_phys(s, 21) == 0 and data_phys(s, 4) == old
    assert (entry.span, entry.offset, entry.version) == (3, 0, s.version)
    _, _, _, body = newest(img)
    assert body.version == s.version and body.log == entry and body.root.to_bytes() == root
    verify(img)
    s = img.open()
    assert len(s._log) == 1 and data_phys(s, 21) == 0 and data_phys(s, 4) == old
    verify(img)
    s.check()


def test_the_newest_logged_contents_win(tmp_path: Path) -> None:
    img = make(tmp_path)
    for _ in range(3):
        log(img, 21)
        log(img, 4, 21, 30)  # (30: a leaf the tree does not have at all)
    s = img.open()
    assert len(s._log) == 6
    verify(img)
    s.commit(checkpoint=True)
    assert len(s._log) == 0 and data_phys(s, 21) and data_phys(s, 30)
    s = img.open()
    verify(img)
    s.check()
    assert newest(img)[3].log.to_bytes() == ABSENT


@pytest.mark.parametrize("remount", [False, True])
def test_a_block_logged_twice_then_checkpointed(tmp_path: Path, remount: bool) -> None:
    img = make(tmp_path)
    log(img, 21)
    first = img.model[21]
    log(img, 21)
    assert img.s.read(21) == img.model[21] != first
    if remount:
        img.open()
    img.s.commit(checkpoint=True)
    assert len(img.s._log) == 0
    verify(img)
    img.open()
    verify(img)
    img.s.check()


def test_a_logged_block_inside_a_tree_segment(tmp_path: Path) -> None:
    """A checkpoint reseals the rest of a multi-block segment around a logged block."""
    img = make(tmp_path)
    img.fill(range(40, 56), seed=2)  # two whole windows, each one segment
    log(img, 43)
    log(img, 52, 55)
    img.open()
    verify(img)
    img.s.commit(checkpoint=True)
    img.open()
    verify(img, *range(40, 56))
    img.s.check()


# ------------------------------------------------------------------ checkpoints and usage


def test_after_the_most_records_the_next_commit_checkpoints(tmp_path: Path) -> None:
    img = make(tmp_path)
    s = img.s
    used = s.usage().physical_used
    for k in range(LOG_MAX_RECORDS):
        log(img, BASE[k % len(BASE)])  # rewrites: the tree will need no more blocks for them
    records = list(s._log.records)
    assert s.usage().physical_used == used + 2 * LOG_MAX_RECORDS
    assert all(s._map.state(b) == LIVE for p, n in records for b in range(p, p + n))
    write(img, 2)
    s.commit()
    assert len(s._log) == 0 and newest(img)[3].log.to_bytes() == ABSENT
    assert s.usage().physical_used == used
    assert all(s._map.state(b) == FREE for p, n in records for b in range(p, p + n))
    s = img.open()
    assert len(s._log) == 0
    verify(img)
    s.check()


def _discard(img: Image) -> None:
    write(img, 23)
    img.s.discard(6)
    del img.model[6]
    img.s.commit()


def _blocks(count: int) -> Callable[[Image], None]:
    def change(img: Image) -> None:
        write(img, *range(100, 100 + count))
        img.s.commit()

    return change


def _run(first: int, count: int) -> Callable[[Image], None]:
    def change(img: Image) -> None:
        write(img, 23)  # (a block staged as well: the windows sealed at once still need the tree)
        data = os.urandom(count * BS)
        img.s.write_run(first, data)
        img.model.update({first + k: data[k * BS : (k + 1) * BS] for k in range(count)})
        img.s.commit()

    return change


def _forced(img: Image) -> None:
    write(img, 23)
    img.s.commit(checkpoint=True)


@pytest.mark.parametrize(
    ("change", "logged"),
    [
        pytest.param(_discard, False, id="a discard"),
        pytest.param(_blocks(LOG_MAX_BLOCKS + 1), False, id="more than LOG_MAX_BLOCKS blocks"),
        pytest.param(_blocks(LOG_MAX_BLOCKS), True, id="LOG_MAX_BLOCKS blocks"),
        pytest.param(_run(128, 16), False, id="write_run of whole windows"),
        pytest.param(_run(130, 10), True, id="write_run of parts of windows"),
        pytest.param(_forced, False, id="commit(checkpoint=True)"),
    ],
)
def test_what_checkpoints(tmp_path: Path, change: Callable[[Image], None], logged: bool) -> None:
    img = make(tmp_path)
    log(img, 21)
    change(img)
    assert len(img.s._log) == (2 if logged else 0)
    assert bool(data_phys(img.s, 21)) != logged  # a checkpoint took the logged block into the tree
    verify(img)
    img.open()
    verify(img)
    img.s.check()


def test_a_spill_checkpoints(tmp_path: Path) -> None:
    """Blocks staged beyond the memory bound are sealed early, into the tree: the commit after it is a
    checkpoint, though it changed no more than LOG_MAX_BLOCKS blocks."""
    img = Image.make(tmp_path, N_BLOCKS, BS, cache_bytes=64 << 10)
    img.fill(BASE, seed=1)
    s, runs = img.s, iter(range(300, 3000, 30))
    while s._stage.bytes + 30 * BS <= s._dirty_limit:
        first = next(runs)
        log(img, *range(first, first + 30))
    assert len(s._log) >= 2
    first = next(runs)
    write(img, *range(first, first + 30))
    assert s._stage.bytes < 30 * BS  # spilled
    s.commit()
    assert len(s._log) == 0
    verify(img)
    img.open()
    verify(img)
    img.s.check()


def test_a_filling_image_goes_back_to_the_tree(tmp_path: Path) -> None:
    """The log keeps to an eighth of the room left: on a small image it checkpoints long before
    LOG_MAX_RECORDS; the same commits on a large image all go to the log."""
    for n_blocks, most in ((64, 2), (N_BLOCKS, 8)):
        img = Image.make(tmp_path, n_blocks, BS, name=f"img{n_blocks}")
        s, lengths = img.s, []
        for k in range(8):
            free = s.usage().physical_free
            write(img, 2 * k)
            s.commit()
            lengths.append(len(s._log))
            if s._log:
                assert 8 * s._log.blocks <= free - s._reserve
        assert max(lengths) == most
        img.open()
        verify(img)
        img.s.check()


def test_usage_counts_logged_blocks(tmp_path: Path) -> None:
    img = make(tmp_path)
    s = img.s

    def figures() -> tuple[int, int, int]:
        u = s.usage()
        return u.logical_used, u.dirty_blocks, u.physical_used

    logical, _, physical = figures()
    write(img, 21)
    assert figures() == (logical, 1, physical)
    s.commit()
    assert figures() == (logical + 1, 0, physical + 2)
    write(img, 4)
    assert figures() == (logical + 1, 1, physical + 2)
    s.commit()
    assert figures() == (logical + 1, 0, physical + 4)
    s = img.open()
    assert figures() == (logical + 1, 0, physical + 4)
    assert not s.dirty() and s.commit() == s.version  # nothing new: no record, no version
    s.commit(checkpoint=True)
    assert figures() == (logical + 1, 0, physical + 1)  # block 21 joins a leaf the tree has


def test_a_logged_block_rewritten_is_still_used(tmp_path: Path) -> None:
    img = make(tmp_path)
    log(img, 21)
    logical = img.s.usage().logical_used
    write(img, 21)
    assert img.s.usage().logical_used == logical


def test_a_logged_block_discarded_is_dirty(tmp_path: Path) -> None:
    img = make(tmp_path)
    log(img, 21)
    img.s.discard(21)
    assert img.s.dirty() and img.s.usage().dirty_blocks == 1


def test_info_counts_the_records(tmp_path: Path) -> None:
    img = make(tmp_path)
    log(img, 21)
    log(img, 4, 23)
    assert (img.s.info().log_records, img.s.info().log_blocks) == (2, 5)
    img.open()
    assert (img.s.info().log_records, img.s.info().log_blocks) == (2, 5)
    img.s.commit(checkpoint=True)
    assert (img.s.info().log_records, img.s.info().log_blocks) == (0, 0)


def test_a_discarded_logged_block_reads_as_zeros(tmp_path: Path) -> None:
    img = make(tmp_path)
    log(img, 21, 4)
    for lba in (21, 4):
        img.s.discard(lba)
        del img.model[lba]
    verify(img, 21, 4)
    img.s.commit()
    assert len(img.s._log) == 0
    img.open()
    verify(img, 21, 4)
    img.s.check()


# ------------------------------------------------------------------ the host's attacks


def _two_records(tmp: Path) -> tuple[Image, Entry, Entry]:
    img = make(tmp)
    older, newer = log(img, 21), log(img, 23)
    img.close()
    return img, older, newer


@pytest.mark.parametrize("which", ["older", "newer"])
@pytest.mark.parametrize("block", [0, 1], ids=["header block", "data block"])
def test_a_bit_flipped_in_a_record_is_caught(tmp_path: Path, which: str, block: int) -> None:
    img, older, newer = _two_records(tmp_path)
    img.open()  # the control: intact, it mounts
    entry = older if which == "older" else newer
    img.close()
    flip_bit(img.path, entry.phys + block, BS, bit=8 * 100 + 3)
    with pytest.raises(IntegrityError, match=f"record at block {entry.phys}: fails authentication"):
        img.open()


@pytest.mark.parametrize("target", ["older", "newer"])
def test_a_record_replaced_by_another_is_caught(tmp_path: Path, target: str) -> None:
    img, older, newer = _two_records(tmp_path)
    dst, src = (older, newer) if target == "older" else (newer, older)
    assert dst.span == src.span
    for k in range(src.span):
        write_block(img.path, dst.phys + k, BS, read_block(img.path, src.phys + k, BS))
    with pytest.raises(IntegrityError, match=f"record at block {dst.phys}: fails authentication"):
        img.open()


def test_a_record_replaced_by_an_older_version_in_its_place_is_caught(tmp_path: Path) -> None:
    img = Image.make(tmp_path, N_BLOCKS, BS)  # empty: the first record takes the first free blocks
    first = log(img, 5)
    old = [read_block(img.path, first.phys + k, BS) for k in range(first.span)]
    img.s.commit(checkpoint=True)  # frees the record's blocks
    img.open()  # (allocation starts again from the first free block)
    second = log(img, 5)
    assert (second.phys, second.span) == (first.phys, first.span) and second.version > first.version
    img.close()
    for k, block in enumerate(old):
        write_block(img.path, first.phys + k, BS, block)
    with pytest.raises(IntegrityError, match=f"record at block {first.phys}: fails authentication"):
        img.open()


def test_swapped_superblocks_are_refused(tmp_path: Path) -> None:
    img, _, _ = _two_records(tmp_path)
    a, b = read_block(img.path, 0, BS), read_block(img.path, 1, BS)
    write_block(img.path, 0, BS, b)
    write_block(img.path, 1, BS, a)
    with pytest.raises(IntegrityError, match="no superblock authenticates"):
        img.open()


def test_an_image_rolled_back_past_a_log_commit_is_refused(tmp_path: Path) -> None:
    img = make(tmp_path)
    log(img, 21)
    before, _ = img.snapshot("before")
    log(img, 23)
    img.close()
    shutil.copyfile(before, img.path)
    with pytest.raises(RollbackError, match="older than the freshness counter"):
        img.open()


# ------------------------------------------------------------------ a crash between superblock and counter


def _counter_missed(tmp: Path) -> tuple[Image, dict[int, bytes], Entry]:
    """Two acknowledged log commits, then a third whose superblock reached the device while the
    counter did not move (the counter file as it was before that commit)."""
    img = make(tmp)
    log(img, 21)
    log(img, 4)
    acknowledged, version = dict(img.model), img.s.version
    counter = img.counter_path.read_bytes()
    torn = log(img, 23, 21)
    assert torn.version == version + 1
    img.close()
    img.counter_path.write_bytes(counter)
    assert FileCounter(img.counter_path).read() == version
    return img, acknowledged, torn


@pytest.mark.parametrize("damage", [None, range(1), range(2, 3)], ids=["all", "header", "last block"])
def test_a_torn_log_commit_falls_back_to_the_acknowledged_one(tmp_path: Path, damage: range | None) -> None:
    img, acknowledged, torn = _counter_missed(tmp_path)
    zero(img, torn, damage)
    s = img.open()
    assert s.version == torn.version - 1 == FileCounter(img.counter_path).read()
    assert len(s._log) == 2
    img.model = acknowledged
    verify(img, 23)
    s.check()
    log(img, 25)  # the image goes on from there: the torn slot is the next one written
    img.open()
    verify(img, 23)
    img.s.check()


def _older_record(img: Image, newest: Entry) -> Entry:
    """Where the record before ``newest`` is, found as a mount finds it."""
    s = img.open(writable=False)
    records = list(s._log.records)
    img.close()
    assert records[-1] == (newest.phys, newest.span)
    return Entry(phys=records[-2][0], span=records[-2][1])


@pytest.mark.parametrize("counter_behind", [False, True])
def test_a_damaged_acknowledged_record_is_never_dropped(tmp_path: Path, counter_behind: bool) -> None:
    """Without the counter behind, the newest record was acknowledged; with it, an older one is (and both
    slots name it): either way a damaged record is an error, never a reason to mount something older."""
    if counter_behind:
        img, _, torn = _counter_missed(tmp_path)
        entry = _older_record(img, torn)  # (undamaged, it mounts)
    else:
        img = make(tmp_path)
        log(img, 21)
        entry = log(img, 23, 21)
        img.close()
    zero(img, entry)
    with pytest.raises(IntegrityError, match=f"record at block {entry.phys}: fails authentication"):
        img.open()


def test_an_intact_log_commit_the_counter_missed_is_finished(tmp_path: Path) -> None:
    img, _, torn = _counter_missed(tmp_path)
    counter = FileCounter(img.counter_path)
    before = img.path.read_bytes()
    s = img.open(writable=False)  # read-only, the commit is mounted whole and left as it is
    assert s.version == torn.version == counter.read() + 1
    verify(img)
    img.close()
    assert img.path.read_bytes() == before
    s = img.open()
    assert s.version == torn.version == counter.read()
    assert len(s._log) == 3
    verify(img)
    s.check()


def test_a_torn_checkpoint_falls_back_to_the_log_it_would_have_taken_in(tmp_path: Path) -> None:
    img = make(tmp_path)
    log(img, 21)
    log(img, 4)
    acknowledged, version = dict(img.model), img.s.version
    counter = img.counter_path.read_bytes()
    write(img, 23)
    img.s.commit(checkpoint=True)
    assert len(img.s._log) == 0
    torn_block = data_phys(img.s, 23)
    img.close()
    img.counter_path.write_bytes(counter)
    write_block(img.path, torn_block, BS, bytes(BS))  # the checkpoint's flush was cut short
    s = img.open()
    assert s.version == version and len(s._log) == 2  # the records it freed were never overwritten
    img.model = acknowledged
    verify(img, 23)
    s.check()


# ------------------------------------------------------------------ read-only, and check on an open store


def test_a_read_only_mount_of_a_logged_image_reads_and_changes_nothing(tmp_path: Path) -> None:
    img = make(tmp_path)
    log(img, 21)
    log(img, 4, 23)
    img.close()
    before = (img.path.read_bytes(), img.counter_path.read_bytes())
    s = img.open(writable=False)
    assert len(s._log) == 2
    verify(img)
    s.check()
    with pytest.raises(StorageError, match="read-only"):
        s.write(21, bytes(BS))
    with pytest.raises(StorageError, match="read-only"):
        s.commit(checkpoint=True)  # the checkpoint would write: refused before anything is sealed
    assert s.read(21) == img.expect(21)  # ... and the store goes on
    img.close()
    assert (img.path.read_bytes(), img.counter_path.read_bytes()) == before


def test_check_counts_the_records_in_its_progress(tmp_path: Path) -> None:
    img = make(tmp_path)
    log(img, 21)
    log(img, 23, 25)
    seen: list[tuple[int, int]] = []
    img.s.check(lambda done, total: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1] == img.s.usage().physical_used  # the tree's blocks and the log's
    assert seen[-1][0] > seen[-2][0]


def test_check_sees_a_record_damaged_after_mount(tmp_path: Path) -> None:
    img = make(tmp_path)
    entry = log(img, 21)
    log(img, 23)
    img.s.check()
    flip_bit(img.path, entry.phys + 1, BS, bit=77)
    with pytest.raises(IntegrityError, match=f"record at block {entry.phys}: fails authentication"):
        img.s.check()
    with pytest.raises(IntegrityError, match="stopped after an integrity failure"):
        img.s.read(4)


# ------------------------------------------------------------------ through the file system


def test_many_small_syncs_cross_checkpoints(tmp_path: Path) -> None:
    path, key = tmp_path / "disk.img", os.urandom(32)
    create_image(path, 8 << 20, key)
    rng = random.Random(7)
    files = {f"f{k:03}".encode(): rng.randbytes(rng.randrange(1, 6000)) for k in range(300)}
    lengths: list[int] = []
    with open_image(path, key) as fs:
        store = fs._vol.store
        assert isinstance(store, SecureStore)
        for name, data in files.items():
            ino = fs.create(fs.root, name)
            fs.write(ino, 0, data)
            fs.sync()
            lengths.append(len(store._log))
    facts = info(path, key).store
    assert facts is not None and (facts.log_records, facts.log_blocks) == (len(store._log), store._log.blocks)
    checkpoints = sum(1 for a, b in itertools.pairwise(lengths) if a and not b)
    assert checkpoints >= 2 and sum(1 for n in lengths if n) > len(files) // 2
    with open_image(path, key, writable=False) as fs:
        for name, data in files.items():
            assert fs.read(fs.lookup(fs.root, name), 0, len(data) + 1) == data
    report = check(path, key)
    assert report.files == len(files)


# ------------------------------------------------------------------ long reads over staged blocks


@pytest.mark.parametrize("logged", [False, True])
def test_a_long_read_lays_staged_blocks_over_the_tree(tmp_path: Path, logged: bool) -> None:
    img = make(tmp_path)
    img.fill(range(40, 140), seed=7)  # through the tree
    write(img, 41, 77, 139)
    img.s.discard(60)
    img.model.pop(60)
    if logged:
        img.s.commit()  # the discard makes this a checkpoint; the writes after it go to the log
        write(img, 42, 99)
        img.s.commit()
        assert len(img.s._log) == 1
        write(img, 99)  # staged again over the logged copy
    first, count = 38, 104  # more than two windows: the long path, starting and ending mid-window
    out = memoryview(bytearray(count * BS))
    img.s.read_into(first, count, out)
    expected = b"".join(img.expect(lba) for lba in range(first, first + count))
    assert bytes(out) == expected
    assert bytes(out) == b"".join(img.s.read_many(range(first, first + count)))
