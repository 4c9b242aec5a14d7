"""The checks behind authentication: well-formed nodes, superblocks that agree with their tree, the
choice between two slots, and ``check``'s own comparisons. Each check is broken on its own here —
with the image key in hand, as only a buggy writer could — and seen to be caught."""

from __future__ import annotations

from pathlib import Path

import pytest

from haven.shield.storage.alloc import LIVE, PhysMap
from haven.shield.storage.counter import FileCounter
from haven.shield.storage.errors import IntegrityError
from haven.shield.storage.keys import derive_keys
from haven.shield.storage.layout import ABSENT, ENTRY, ENTRY_SIZE, Entry, SuperblockBody, SuperblockHeader
from haven.shield.storage.stage import bits, runs
from haven.shield.storage.superblock import (
    DAMAGED,
    EMPTY,
    VALID,
    SlotState,
    SuperblockWriter,
    choose,
    read_slots,
)
from haven.shield.storage.tree import Geometry, validate_node
from tests.storage_block_support import Image, read_block, write_block

GEO = Geometry.for_capacity(512, 300, 400)  # fanout 8, window 8, height 3
TAG = b"t" * 16
NONCE = b"n" * 12


def _entry(phys: int, span: int = 1, offset: int = 0, version: int = 1, tag: bytes = TAG) -> bytes:
    return ENTRY.pack(phys, version, NONCE, span, offset, tag, bytes(16))


def _leaf(*entries: bytes) -> bytes:
    return b"".join(entries).ljust(GEO.fanout * ENTRY_SIZE, b"\0")


# ------------------------------------------------------------------ nodes


def test_well_formed_nodes_pass() -> None:
    segment = [_entry(100 + k, span=3, offset=k) for k in range(3)]
    entries = validate_node(_leaf(_entry(50), *segment), 1, 0, GEO)
    assert [e[0] for e in entries[:4]] == [50, 100, 101, 102]
    validate_node(_leaf(_entry(7), ABSENT, _entry(9)), 2, 0, GEO)
    validate_node(bytes(GEO.block_size), 3, 0, GEO)


@pytest.mark.parametrize(
    ("node", "level", "index", "message"),
    [
        (_leaf(ABSENT[:-1] + b"\1"), 1, 0, "absent entry 0 is not zero"),
        (_leaf(ENTRY.pack(0, 1, NONCE, 1, 0, TAG, bytes(16))), 1, 0, "absent entry 0 is not zero"),
        (_leaf(*[ABSENT] * 4, _entry(50)), 1, 300 // 8, "beyond the image's capacity"),
        (_leaf(ENTRY.pack(50, 1, NONCE, 1, 0, TAG, b"r" + bytes(15))), 1, 0, "non-zero reserved"),
        (_leaf(_entry(1)), 1, 0, "points outside the device"),
        (_leaf(_entry(400)), 1, 0, "points outside the device"),
        (_leaf(_entry(50, span=2)), 2, 0, "segment shape"),
        (_leaf(_entry(50, span=1, offset=1)), 2, 0, "segment shape"),
        (_leaf(_entry(50, span=9)), 1, 0, "span 9"),
        (_leaf(_entry(50, span=0)), 1, 0, "span 0"),
        (_leaf(_entry(50, span=2, offset=2)), 1, 0, "offset 2"),
        (_leaf(_entry(50, span=3), _entry(51, span=3, offset=1)), 1, 0, "cut short at entry 2"),
        (_leaf(_entry(50, span=3), _entry(51, span=3, offset=1), _entry(60)), 1, 0, "cut short at entry 2"),
        (_leaf(*[ABSENT] * 6, _entry(50, span=2), _entry(51, span=2, offset=1)), 1, 0, None),
        (_leaf(*[ABSENT] * 7, _entry(50, span=2)), 1, 0, "crosses a window"),
        (_leaf(_entry(51, span=2, offset=1)), 1, 0, "not part of a whole segment"),
        (_leaf(_entry(50, span=2), _entry(52, span=2, offset=1)), 1, 0, "disagrees with its segment"),
        (_leaf(_entry(50, span=2), _entry(51, span=2, offset=1, version=2)), 1, 0, "disagrees"),
        (_leaf(_entry(50, span=2), _entry(51, span=2, offset=1, tag=b"x" * 16)), 1, 0, "disagrees"),
        (_leaf(_entry(50, span=3), _entry(51, span=3, offset=2)), 1, 0, "not part of a whole segment"),
    ],
)
def test_each_malformed_node_is_refused(node: bytes, level: int, index: int, message: str | None) -> None:
    if message is None:
        validate_node(node, level, index, GEO)  # the control: a segment ending a window is fine
        return
    with pytest.raises(IntegrityError, match=message):
        validate_node(node, level, index, GEO)


def test_geometry() -> None:
    assert (GEO.fanout, GEO.shift, GEO.span, GEO.height) == (8, 3, 8, 3)
    big = Geometry.for_capacity(4096, 1 << 20, 1 << 21)
    assert (big.fanout, big.span, big.height) == (64, 16, 4)
    assert Geometry.for_capacity(4096, 64, 100).height == 1
    assert Geometry.for_capacity(4096, 65, 100).height == 2
    assert GEO.nodes_for(300) == 38 + 5 + 1
    assert list(bits(0b1011_0010)) == [1, 4, 5, 7]
    assert list(runs(0b1110_0110_1000_0001)) == [(0, 1), (7, 1), (9, 2), (13, 3)]
    assert list(runs(0xFFFF)) == [(0, 16)]


# ------------------------------------------------------------------ superblocks the key holder forged


def _reseal(img: Image, **changes: object) -> None:
    """Rewrite the newest superblock with ``changes`` to its body, sealed with the real keys."""
    slot = "AB".index(img.s.info().slot)
    img.close()
    raw = read_block(img.path, slot, img.block_size)
    header = SuperblockHeader.from_bytes(raw[: SuperblockHeader.SIZE])
    keys = derive_keys(img.key, header.image_id, header.format_salt)
    states = read_slots((raw, raw), img.block_size, lambda i, s: keys)
    body = states[slot].body
    assert body is not None
    write_block(
        img.path,
        slot,
        img.block_size,
        SuperblockWriter(keys, header, img.block_size).seal(slot, body.replace(**changes)),
    )


def _image(tmp: Path) -> Image:
    img = Image.make(tmp, 400, 512)
    img.fill(range(0, 40, 2))
    return img


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"height": 4}, "height or segment span"),
        ({"max_span": 16}, "height or segment span"),
        ({"capacity": 0}, "superblock: capacity 0"),
        ({"logical_used": 19}, "the tree holds 20 logical blocks; the superblock says 19"),
        ({"physical_used": 1}, "physical blocks; the superblock says 1"),
        ({"nonce_hwm": 1 << 63}, None),
        ({"root": Entry(phys=1, span=1)}, "root entry is malformed"),
        ({"root": Entry(phys=50, span=2)}, "root entry is malformed"),
        ({"root": Entry(version=3)}, "root entry is malformed"),
        ({"device_blocks": 401}, "truncated or extended"),
    ],
)
def test_each_inconsistent_superblock_is_refused(
    tmp_path: Path, changes: dict[str, object], message: str | None
) -> None:
    img = _image(tmp_path)
    _reseal(img, **changes)
    if message is None:
        img.open()  # the control: a high (but valid) nonce mark mounts
        return
    with pytest.raises(IntegrityError, match=message):
        img.open()


def test_a_version_zero_superblock_is_refused(tmp_path: Path) -> None:
    img = _image(tmp_path)
    slot = "AB".index(img.s.info().slot)
    _reseal(img, version=0)
    write_block(img.path, 1 - slot, 512, bytes(512))
    img.counter_path.unlink()
    FileCounter.create(img.counter_path, 0)  # so the counter would accept it
    with pytest.raises(IntegrityError, match="version or nonce mark"):
        img.open()


def _slot(slot: int, version: int, image_id: bytes = b"i" * 16, salt: bytes = b"s" * 16) -> SlotState:
    header = SuperblockHeader(slot=slot, image_id=image_id, format_salt=salt)
    return SlotState(slot, VALID, header, SuperblockBody(version=version))


def test_choosing_between_slots() -> None:
    best, advance = choose([_slot(0, 5), _slot(1, 6)], 6, "t")
    assert (best.slot, advance) == (1, False)
    best, advance = choose([_slot(0, 5), _slot(1, 6)], 5, "t")
    assert (best.slot, advance) == (1, True)
    best, advance = choose([_slot(0, 5), SlotState(1, DAMAGED)], 5, "t")
    assert (best.slot, advance) == (0, False)
    best, advance = choose([SlotState(0, EMPTY), _slot(1, 1)], 0, "t")
    assert (best.slot, advance) == (1, True)
    with pytest.raises(IntegrityError, match="both superblocks claim version 5"):
        choose([_slot(0, 5), _slot(1, 5)], 5, "t")
    with pytest.raises(IntegrityError, match="belong to different images"):
        choose([_slot(0, 5), _slot(1, 6, image_id=b"j" * 16)], 6, "t")
    with pytest.raises(IntegrityError, match="belong to different images"):
        choose([_slot(0, 5), _slot(1, 6, salt=b"t" * 16)], 6, "t")


# ------------------------------------------------------------------ check's own comparisons


def test_check_sees_a_free_space_map_that_disagrees_with_the_tree(tmp_path: Path) -> None:
    img = _image(tmp_path)
    pmap: PhysMap = img.s._map
    free_block = next(b for b in range(2, 400) if pmap.state(b) == 0)
    pmap._state[free_block] = LIVE  # the map claims a block the tree does not use
    with pytest.raises(IntegrityError, match=f"physical block {free_block}: the free-space map says in use"):
        img.s.check()


def test_check_sees_a_superblock_changed_after_mount(tmp_path: Path) -> None:
    img = _image(tmp_path)
    slot = "AB".index(img.s.info().slot)
    raw = read_block(img.path, slot, 512)
    write_block(img.path, slot, 512, raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(IntegrityError, match="changed on the device"):
        img.s.check()


def test_check_reports_progress(tmp_path: Path) -> None:
    img = _image(tmp_path)
    seen: list[tuple[int, int]] = []
    img.s.check(lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1] == img.s.usage().physical_used
