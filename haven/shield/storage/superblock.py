"""Superblocks: sealing a slot, opening both, and choosing which one to mount (sans I/O).

A slot is one block: the clear :class:`SuperblockHeader`, then the sealed :class:`SuperblockBody`
padded with zeros to fill the block, then the tag, so every byte of the slot is authenticated. Each
seal draws a fresh random 96-bit nonce (there is one superblock write per commit; see
``docs/storage-format.md``, "Nonces").
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from haven.errors import FormatError
from haven.shield.storage.errors import IntegrityError, RollbackError, StorageError
from haven.shield.storage.keys import StoreKeys
from haven.shield.storage.layout import (
    ABSENT,
    ENTRY,
    FIRST_FREE_BLOCK,
    FORMAT_VERSION,
    MAGIC,
    NONCE_LIMIT,
    NONCE_SIZE,
    TAG_SIZE,
    SuperblockBody,
    SuperblockHeader,
    codec,
)
from haven.shield.storage.tree import Geometry

SLOT_NAMES = ("A", "B")

# Slot states (SlotState.status).
VALID = "valid"
EMPTY = "empty"  # all zero: never written
DAMAGED = "damaged"  # an image's superblock that fails its checks (torn write or tampering)
WRONG_KEY = "wrong key"  # intact header whose key check value does not match the key given
FOREIGN = "not a superblock"  # no magic: not part of a Haven image


@dataclass(frozen=True)
class SlotState:
    slot: int
    status: str
    header: SuperblockHeader | None = None
    body: SuperblockBody | None = None
    reason: str = ""
    block_size: int = 0  # set when the slot claims another block size than the one opened with

    def describe(self) -> str:
        if self.status == VALID and self.body is not None:
            return f"slot {SLOT_NAMES[self.slot]}: version {self.body.version}"
        detail = f" ({self.reason})" if self.reason else ""
        return f"slot {SLOT_NAMES[self.slot]}: {self.status}{detail}"


class SuperblockWriter:
    """Seals superblocks of one image format: ``header`` is the template (its slot and nonce are set
    per seal), and becomes the associated data of the body."""

    def __init__(self, keys: StoreKeys, header: SuperblockHeader, block_size: int) -> None:
        self._aead = AESGCM(keys.superblock)
        self._header = header.replace(key_check=keys.key_check)
        self._padding = bytes(block_size - SuperblockHeader.SIZE - TAG_SIZE - SuperblockBody.SIZE)
        # Each slot's header bytes with the nonce left out, for the commit path (seal_packed).
        self._around_nonce = [
            (raw[:_NONCE_AT], raw[_NONCE_AT + NONCE_SIZE :])
            for raw in (self._header.replace(slot=slot).to_bytes() for slot in range(2))
        ]

    def seal(self, slot: int, body: SuperblockBody) -> bytes:
        """The slot's block, under a fresh random nonce."""
        return self.seal_packed(slot, body.to_bytes())

    def seal_packed(self, slot: int, body: bytes) -> bytes:
        """``seal`` of a body already packed (``pack_body``): a commit's, with no structure built."""
        nonce = os.urandom(NONCE_SIZE)
        before, after = self._around_nonce[slot]
        aad = before + nonce + after
        return aad + self._aead.encrypt(nonce, body + self._padding, aad)


_NONCE_AT = SuperblockHeader.offset_of("nonce")
_BODY = codec(SuperblockBody)
_ZERO8 = bytes(8)


def pack_body(
    version: int, geo: Geometry, hwm: int, logical: int, physical: int, root: bytes, log: bytes
) -> bytes:
    """A SuperblockBody's bytes, packed straight from the commit's values (entries already packed)."""
    return _BODY.pack(
        version, geo.device_blocks, geo.capacity, geo.height, geo.span, hwm, logical, physical, _ZERO8,
        *ENTRY.unpack(root), *ENTRY.unpack(log),
    )  # fmt: skip


def parse_header(block: bytes, slot: int, block_size: int) -> SlotState | SuperblockHeader:
    """The slot's header if it is plausibly one of ours, else the slot's (non-valid) state."""
    if block.count(0) == len(block):
        return SlotState(slot, EMPTY)
    if block[: len(MAGIC)] != MAGIC:
        return SlotState(slot, FOREIGN)
    try:
        header = SuperblockHeader.from_bytes(block[: SuperblockHeader.SIZE])
    except FormatError:
        return SlotState(slot, DAMAGED, reason="reserved header bytes are not zero")
    if header.format_version != FORMAT_VERSION:
        return SlotState(slot, DAMAGED, reason=f"format version {header.format_version}")
    if header.slot != slot:
        return SlotState(slot, DAMAGED, reason=f"header names slot {header.slot}")
    if header.block_size != block_size:
        return SlotState(
            slot, DAMAGED, reason=f"made with {header.block_size}-byte blocks", block_size=header.block_size
        )
    return header


def open_superblock(keys: StoreKeys, header: SuperblockHeader, block: bytes, slot: int) -> SlotState:
    """Authenticate a slot whose header parsed, under the sub-keys of its image id."""
    if not hmac.compare_digest(header.key_check, keys.key_check):
        return SlotState(slot, WRONG_KEY, header)
    aad = block[: SuperblockHeader.SIZE]
    try:
        plaintext = AESGCM(keys.superblock).decrypt(header.nonce, block[SuperblockHeader.SIZE :], aad)
    except InvalidTag:
        return SlotState(slot, DAMAGED, header, reason="fails authentication")
    body_bytes, padding = plaintext[: SuperblockBody.SIZE], plaintext[SuperblockBody.SIZE :]
    try:
        body = SuperblockBody.from_bytes(body_bytes)
    except FormatError as e:
        return SlotState(slot, DAMAGED, header, reason=str(e))
    if padding.count(0) != len(padding):
        return SlotState(slot, DAMAGED, header, reason="padding is not zero")
    return SlotState(slot, VALID, header, body)


def read_slots(
    blocks: tuple[bytes, bytes], block_size: int, derive: Callable[[bytes, bytes], StoreKeys]
) -> list[SlotState]:
    """Both slots' states; ``derive(image_id, format_salt)`` gives the sub-keys of a format."""
    states: list[SlotState] = []
    keys: dict[tuple[bytes, bytes], StoreKeys] = {}
    for slot, block in enumerate(blocks):
        parsed = parse_header(block, slot, block_size)
        if isinstance(parsed, SlotState):
            states.append(parsed)
            continue
        which = (parsed.image_id, parsed.format_salt)
        if which not in keys:
            keys[which] = derive(*which)
        states.append(open_superblock(keys[which], parsed, block, slot))
    return states


def choose(states: list[SlotState], counter: int, where: str) -> tuple[SlotState, bool]:
    """The slot to mount and whether the counter must be advanced to its version.

    The newest valid slot is taken, then judged by the freshness counter: older than the counter is a
    rollback; equal is the normal case; exactly one ahead means a crash fell between writing that
    superblock and advancing the counter, so it is accepted and the counter caught up; further ahead
    means the counter is not this image's (or was reset), and nothing is trusted.
    """
    valid = [(s, s.header, s.body) for s in states if s.header is not None and s.body is not None]
    if not valid:
        detail = "; ".join(s.describe() for s in states)
        if any(s.status == WRONG_KEY for s in states) and not any(s.status == DAMAGED for s in states):
            raise IntegrityError(f"{where}: wrong image key (the key does not open this image)")
        if all(s.status in (EMPTY, FOREIGN) for s in states):
            raise StorageError(f"{where}: not a Haven storage image")
        sizes = {s.block_size for s in states if s.status not in (EMPTY, FOREIGN)}
        if len(sizes) == 1 and 0 not in sizes:
            raise StorageError(
                f"{where}: the image has {sizes.pop()}-byte blocks; it was opened with another size"
            )
        raise IntegrityError(f"{where}: no superblock authenticates ({detail})")
    if len(valid) == 2:
        (_, ha, ba), (_, hb, bb) = valid
        if (ha.image_id, ha.format_salt) != (hb.image_id, hb.format_salt):
            raise IntegrityError(f"{where}: the two superblocks belong to different images")
        if ba.version == bb.version:
            raise IntegrityError(f"{where}: both superblocks claim version {ba.version}")
    best, _, body = max(valid, key=lambda v: v[2].version)
    version = body.version
    others = "; ".join(s.describe() for s in states if s is not best)
    if version < counter:
        raise RollbackError(
            f"{where}: the newest valid superblock ({best.describe()}) is older than the freshness"
            f" counter ({counter}): a rolled-back or stale image ({others})"
        )
    if version > counter + 1:
        raise IntegrityError(
            f"{where}: the image is at version {version} but its freshness counter is at {counter}:"
            " the counter belongs to another image or was reset"
        )
    return best, version == counter + 1


def check_geometry(body: SuperblockBody, block_size: int) -> None:
    """The superblock authenticated, so a bad geometry is a writer's bug; refuse it all the same."""
    try:
        geo = Geometry.for_capacity(block_size, body.capacity, body.device_blocks)
    except StorageError as e:
        raise IntegrityError(f"superblock: {e}") from None
    if body.height != geo.height or body.max_span != geo.span:
        raise IntegrityError("superblock: the tree's height or segment span does not fit its capacity")
    root = body.root.to_bytes()
    phys, _, _, span, offset, _, _ = ENTRY.unpack(root)
    if root != ABSENT and not (FIRST_FREE_BLOCK <= phys < body.device_blocks and (span, offset) == (1, 0)):
        raise IntegrityError("superblock: the root entry is malformed")
    if body.nonce_hwm >= NONCE_LIMIT or body.version == 0:
        raise IntegrityError("superblock: version or nonce mark out of range")
    log = body.log.to_bytes()
    phys, version, _, span, offset, _, _ = ENTRY.unpack(log)
    if log != ABSENT and not (
        FIRST_FREE_BLOCK <= phys and phys + span <= body.device_blocks and span >= 2 and offset == 0
        and 0 < version <= body.version
    ):  # fmt: skip
        raise IntegrityError("superblock: the commit log entry is malformed")
