"""Images for the commit-log tests: a small image with a tree base, log commits, and the superblock as
the image file holds it (read, re-sealed with the real keys)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from haven.shield.storage.keys import StoreKeys, derive_keys
from haven.shield.storage.layout import (
    Entry,
    SuperblockBody,
    SuperblockHeader,
)
from haven.shield.storage.superblock import SuperblockWriter, read_slots
from tests.storage_block_support import Image, read_block, write_block

BS = 512  # fanout 8, windows of 8 blocks; a record's header block lists up to 52 blocks
N_BLOCKS = 4096
BASE = range(0, 24, 2)  # committed through the tree: leaves 0..2 exist, their odd blocks are absent


def make(tmp: Path, n_blocks: int = N_BLOCKS, name: str = "img") -> Image:
    img = Image.make(tmp, n_blocks, BS, name=name)
    img.fill(BASE, seed=1)
    return img


def write(img: Image, *lbas: int) -> None:
    for lba in lbas:
        img.model[lba] = os.urandom(BS)
        img.s.write(lba, img.model[lba])


def log(img: Image, *lbas: int) -> Entry:
    """Write ``lbas`` and commit; the commit must be a log record. Returns its entry."""
    records = len(img.s._log)
    write(img, *lbas)
    img.s.commit()
    assert len(img.s._log) == records + 1, "the commit did not go to the log"
    return Entry.from_bytes(img.s._log.head)


def verify(img: Image, *also: int) -> None:
    for lba in sorted(x for x in {*img.model, 1, 3, 25, 100, *also} if x < img.s.capacity):
        assert img.s.read(lba) == img.expect(lba), f"logical block {lba}"


def newest(img: Image) -> tuple[int, SuperblockHeader, StoreKeys, SuperblockBody]:
    """The newest valid superblock on the image file: (slot, header, keys, body)."""
    raws = (read_block(img.path, 0, BS), read_block(img.path, 1, BS))
    states = [s for s in read_slots(raws, BS, lambda i, salt: derive_keys(img.key, i, salt)) if s.body]
    best = max(states, key=lambda s: s.body.version if s.body else 0)
    header, body = best.header, best.body
    assert header is not None and body is not None
    return best.slot, header, derive_keys(img.key, header.image_id, header.format_salt), body


def reseal(img: Image, **changes: Any) -> None:
    """Rewrite the newest superblock with ``changes`` to its body, sealed with the real keys."""
    img.close()
    slot, header, keys, body = newest(img)
    write_block(img.path, slot, BS, SuperblockWriter(keys, header, BS).seal(slot, body.replace(**changes)))


def zero(img: Image, entry: Entry, blocks: range | None = None) -> None:
    for k in range(entry.span) if blocks is None else blocks:
        write_block(img.path, entry.phys + k, BS, bytes(BS))
