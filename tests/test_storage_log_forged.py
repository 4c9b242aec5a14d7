"""The commit log's reader against records forged with the image's real keys, as only a buggy writer could
make them: each check of ``read_chain`` and of ``check_geometry`` broken on its own; and the commit path's
packed superblock body against the table."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haven.shield.storage import log as log_module
from haven.shield.storage.alloc import FREE
from haven.shield.storage.counter import FileCounter
from haven.shield.storage.errors import IntegrityError
from haven.shield.storage.layout import (
    LOG_MAGIC,
    NONCE_SIZE,
    TAG_SIZE,
    Entry,
    LogHeader,
    SuperblockBody,
)
from haven.shield.storage.log import CHAIN_LIMIT, max_record_blocks
from haven.shield.storage.superblock import SuperblockWriter, pack_body
from haven.shield.storage.tree import Geometry, Sealer
from tests.storage_block_support import Image, data_phys, write_block
from tests.storage_log_support import BS, N_BLOCKS, log, make, newest, reseal, verify, write

# ------------------------------------------------------------------ records forged with the real keys


@dataclass
class _Forge:
    """An image whose superblock is two versions ahead of its tree (two real log commits), ready for a
    forged chain in place of the real one: records at ``free`` blocks, sealed with the real keys."""

    img: Image
    sealer: Sealer
    tree_version: int
    version: int
    tree_blocks: int  # physical blocks the tree uses
    tree_run: int  # two physical blocks holding tree data (blocks 0 and 2)
    capacity: int
    free: tuple[int, ...] = (N_BLOCKS - 200, N_BLOCKS - 100)


def _forge(tmp: Path, n_blocks: int = N_BLOCKS) -> _Forge:
    img = make(tmp, n_blocks)
    log(img, 21)
    log(img, 23)
    s = img.s
    tree_version = Entry.from_bytes(s._tree.root).version
    assert s.version == tree_version + 2
    tree_run = data_phys(s, 0)
    assert data_phys(s, 2) == tree_run + 1
    f = _Forge(img, s._tree.sealer, tree_version, s.version, s.usage().physical_used - s._log.blocks,
               tree_run, s.capacity)  # fmt: skip
    assert all(s._map.state(b) == FREE for at in f.free for b in range(at, at + 64))
    img.close()
    _, header, keys, _ = newest(img)
    f.sealer = Sealer(keys, header.image_id)
    return f


def _seal(
    f: _Forge,
    phys: int,
    version: int,
    seq: int,
    lbas: list[int],
    prev: Entry,
    *,
    magic: bytes = LOG_MAGIC,
    header_version: int = 0,
    count: int | None = None,
    reserved: bytes = bytes(8),
    tail: bytes = b"",
    aad: str = "log",
) -> tuple[Entry, list[bytes]]:
    """A record sealed into the image file at ``phys``, as ``seal_record`` would but with any field
    chosen; returns its entry and the blocks it carries."""
    span = 1 + len(lbas)
    header = LogHeader(magic=magic, version=version + header_version, seq=seq,
                       count=len(lbas) if count is None else count, prev=prev, reserved=reserved)  # fmt: skip
    listed = b"".join(lba.to_bytes(8, "little") for lba in lbas) + tail
    blocks = [os.urandom(BS) for _ in lbas]
    plain = (header.to_bytes() + listed).ljust(BS, b"\0") + b"".join(blocks)
    binding = {
        "log": f.sealer.log_aad(span, version),
        "data": f.sealer.data_aad(0, span, version),  # the same bytes sealed as a data segment
        "span": f.sealer.log_aad(span + 1, version),
    }[aad]
    nonce, out = os.urandom(NONCE_SIZE), bytearray(span * BS + TAG_SIZE)
    f.sealer.seal_data_into(nonce, memoryview(plain), binding, memoryview(out))
    for k in range(span):
        write_block(f.img.path, phys + k, BS, bytes(out[k * BS : (k + 1) * BS]))
    entry = Entry(phys=phys, version=version, nonce=nonce, span=span, offset=0, tag=bytes(out[-TAG_SIZE:]))
    return entry, blocks


def _chain(f: _Forge, specs: list[dict[str, Any]]) -> tuple[Entry, dict[int, bytes], int]:
    """Records from ``specs`` (oldest first; by default the newest at the superblock's version, each one
    version and one sequence number after the one before). Returns the head entry, what the chain
    holds, and the physical blocks it takes."""
    prev, holds, blocks = Entry(), dict[int, bytes](), 0
    for k, spec in enumerate(specs):
        spec = dict(spec)
        entry_changes = spec.pop("entry", {})
        phys = {"tree": f.tree_run}.get(spec.pop("phys", ""), f.free[k])
        version = f.tree_version + spec.pop("version", 3 - len(specs) + k)
        lbas = spec.pop("lbas", [31 + 2 * k])
        seq = spec.pop("seq", k + 1)
        entry, contents = _seal(f, phys, version, seq, lbas, prev, **spec)
        holds.update(zip(lbas, contents, strict=True))
        blocks += entry.span
        prev = entry.replace(**entry_changes)
    return prev, holds, blocks


MOST = max_record_blocks(BS)
OLD, NEW = "record at block {older}: ", "record at block {newer}: "  # (the two records of a chain)


def _case(specs: list[dict[str, Any]], message: str | None, name: str, **changes: int) -> Any:
    return pytest.param(specs, changes, message, id=name)


FORGED: list[Any] = [
    _case([{}], None, "one record"),
    _case([{}, {}], None, "two records"),
    _case([{"lbas": [21, 4, 100, 3000]}], None, "a record of four blocks"),
    _case([{"lbas": list(range(200, 200 + MOST))}], None, "a record of the most blocks"),
    _case([{"entry": {"reserved": b"r" + bytes(15)}}, {}], OLD + r"malformed entry \(span 2, offset 0",
          "entry reserved"),
    _case([{"entry": {"offset": 1}}, {}], OLD + r"malformed entry \(span 2, offset 1", "entry offset"),
    _case([{"entry": {"span": 1}}, {}], OLD + r"malformed entry \(span 1,", "entry span 1"),
    _case([{}, {"entry": {"span": 2 + MOST}}], NEW + rf"malformed entry \(span {2 + MOST},",
          "entry span beyond a header's list"),
    _case([{"entry": {"phys": 1}}, {}], "record at block 1: points outside the device",
          "entry on a superblock"),
    _case([{"entry": {"phys": N_BLOCKS - 1}}, {}],
          f"record at block {N_BLOCKS - 1}: points outside the device", "entry past the end"),
    _case([{"version": 0}], OLD + "version .* is out of order", "version of the tree"),
    _case([{"version": 0}, {}], OLD + "version .* is out of order", "older version of the tree"),
    _case([{"version": 2}, {}], OLD + "version .* is out of order", "older version not older"),
    _case([{}, {"entry": {"tag": bytes(16)}}], NEW + "fails authentication", "tag"),
    _case([{"entry": {"tag": bytes(16)}}, {}], OLD + "fails authentication", "older record's tag"),
    _case([{"aad": "data"}], OLD + "fails authentication", "sealed as data"),
    _case([{"aad": "span"}], OLD + "fails authentication", "sealed for another span"),
    _case([{"magic": b"HVNLOG02"}], OLD + "its header does not match", "header magic"),
    _case([{"header_version": -1}], OLD + "its header does not match", "header version"),
    _case([{"count": 2}], OLD + "its header does not match", "header count"),
    _case([{"reserved": b"\1" + bytes(7)}], OLD + "its header does not match", "header reserved"),
    _case([{"seq": 0}], OLD + "sequence number 0 is out of order", "sequence 0"),
    _case([{}, {"seq": 0}], NEW + "sequence number 0 is out of order", "sequence 0, not first"),
    _case([{"seq": 2}], OLD + "sequence number 2 is out of order", "first without 1"),
    _case([{}, {"seq": 1}], NEW + "sequence number 1 is out of order", "1 with a record before"),
    _case([{}, {"seq": 3}], OLD + "sequence number 1 is out of order", "sequence gap"),
    _case([{"tail": b"\1"}], OLD + "its header block is not zero after the block list",
          "bytes after the list"),
    _case([{"lbas": [21, 21]}], OLD + "names a logical block twice", "a block twice"),
    _case([{"lbas": [3539]}], OLD + "names .* beyond the capacity", "a block beyond the capacity"),
    _case([{"phys": "tree"}], "blocks {tree}..{tree1} are referenced twice", "over the tree's blocks"),
    _case([{}], "physical blocks; the superblock says", "log left out of the count", physical_used=0),
]


@pytest.mark.parametrize(("specs", "changes", "message"), FORGED)
def test_each_check_of_a_forged_chain(
    tmp_path: Path, specs: list[dict[str, Any]], changes: dict[str, int], message: str | None
) -> None:
    f = _forge(tmp_path)
    assert f.capacity == 3539
    head, holds, blocks = _chain(f, specs)
    physical = f.tree_blocks + blocks if "physical_used" not in changes else f.tree_blocks
    reseal(f.img, log=head, physical_used=physical)
    if message is not None:
        at = {"older": f.free[0], "newer": f.free[len(specs) - 1]}
        with pytest.raises(IntegrityError, match=message.format(**at, tree=f.tree_run, tree1=f.tree_run + 1)):
            f.img.open()
        return
    s = f.img.open()  # the control: a well-formed chain mounts and reads back
    del f.img.model[21], f.img.model[23]  # (the real log, replaced)
    f.img.model.update(holds)
    assert len(s._log) == len(specs)
    verify(f.img, 21, 23)
    s.check()
    s.commit(checkpoint=True)
    f.img.open()
    verify(f.img, 21, 23)


@pytest.mark.parametrize("length", [CHAIN_LIMIT, CHAIN_LIMIT + 1])
def test_the_chain_limit(tmp_path: Path, length: int) -> None:
    f = _forge(tmp_path, 8400)
    prev, last = Entry(), b""
    for k in range(length):
        prev, blocks = _seal(f, 64 + 2 * k, f.tree_version + 1 + k, k + 1, [31], prev)
        last = blocks[0]
    version = f.tree_version + length
    reseal(f.img, log=prev, version=version, physical_used=f.tree_blocks + 2 * length)
    FileCounter(f.img.counter_path).advance(f.version, version)
    if length > CHAIN_LIMIT:
        with pytest.raises(IntegrityError, match=f"longer than {CHAIN_LIMIT} records"):
            f.img.open()
        return
    s = f.img.open()
    assert len(s._log) == length and s.read(31) == last
    write(f.img, 33)
    s.commit()  # far more records than a writer keeps: a checkpoint
    assert len(s._log) == 0 and s.usage().physical_used < f.tree_blocks + 8


@pytest.mark.parametrize("limit_blocks", [5, 4])
def test_the_bound_on_what_a_chain_carries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit_blocks: int
) -> None:
    img = make(tmp_path)
    log(img, 21, 23)
    log(img, 25, 27)
    log(img, 29)  # five blocks carried in all
    img.close()
    monkeypatch.setattr(log_module, "CARRIED_LIMIT", limit_blocks * BS)
    if limit_blocks < 5:
        with pytest.raises(IntegrityError, match="commit log: carries more than"):
            img.open()
        return
    img.open()
    verify(img)


@pytest.mark.parametrize(
    ("changes", "malformed"),
    [
        ({}, False),
        ({"phys": 1}, True),
        ({"phys": N_BLOCKS - 1}, True),
        ({"span": 1}, True),
        ({"span": 0}, True),
        ({"offset": 1}, True),
        ({"version": 0}, True),
        ({"version": "newer"}, True),
    ],
)
def test_each_malformed_log_entry_in_the_superblock(
    tmp_path: Path, changes: dict[str, Any], malformed: bool
) -> None:
    f = _forge(tmp_path)
    head = newest(f.img)[3].log
    if changes.get("version") == "newer":
        changes = {"version": f.version + 1}
    reseal(f.img, log=head.replace(**changes))
    if not malformed:
        f.img.open()  # the control: the real entry, resealed, mounts
        return
    with pytest.raises(IntegrityError, match="superblock: the commit log entry is malformed"):
        f.img.open()


# ------------------------------------------------------------------ packing a superblock body


_ENTRY = st.builds(Entry, phys=st.integers(0, 2**64 - 1), version=st.integers(0, 2**64 - 1),
                   nonce=st.binary(min_size=12, max_size=12), span=st.integers(0, 0xFFFF),
                   offset=st.integers(0, 0xFFFF), tag=st.binary(min_size=16, max_size=16))  # fmt: skip
_U64 = st.integers(0, 2**64 - 1)


@settings(max_examples=60, deadline=None)
@given(_U64, st.sampled_from([512, 4096, 65536]), st.integers(1, 1 << 40), _U64, _U64, _U64, _U64,
       _ENTRY, _ENTRY)  # fmt: skip
def test_pack_body_is_the_table(
    version: int, block_size: int, capacity: int, device_blocks: int, hwm: int, logical: int,
    physical: int, root: Entry, log: Entry,
) -> None:  # fmt: skip
    geo = Geometry.for_capacity(block_size, capacity, device_blocks)
    packed = pack_body(version, geo, hwm, logical, physical, root.to_bytes(), log.to_bytes())
    body = SuperblockBody(version=version, device_blocks=device_blocks, capacity=capacity, height=geo.height,
                          max_span=geo.span, nonce_hwm=hwm, logical_used=logical, physical_used=physical,
                          root=root, log=log)  # fmt: skip
    assert packed == body.to_bytes()
    assert SuperblockBody.from_bytes(packed) == body


def test_a_packed_body_seals_as_the_table_does(tmp_path: Path) -> None:
    img = make(tmp_path)
    log(img, 21)
    img.close()
    slot, header, keys, body = newest(img)
    geo = Geometry.for_capacity(BS, body.capacity, body.device_blocks)
    packed = pack_body(body.version, geo, body.nonce_hwm, body.logical_used, body.physical_used,
                       body.root.to_bytes(), body.log.to_bytes())  # fmt: skip
    write_block(img.path, slot, BS, SuperblockWriter(keys, header, BS).seal_packed(slot, packed))
    assert newest(img)[3] == body
    img.open()
    verify(img)
