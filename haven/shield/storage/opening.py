"""Opening an image, before there is a store: a new image's first superblock, and, at mount, the two
superblock slots read, authenticated and judged against the freshness counter.

What follows — walking the chosen tree, and the crash rule for a commit the counter has not reached —
is :meth:`SecureStore.mount`'s (docs/storage-format.md, "Freshness").
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from haven.shield.storage.counter import FreshnessCounter
from haven.shield.storage.device import BlockDevice, check_block_size
from haven.shield.storage.errors import IntegrityError, StorageError
from haven.shield.storage.keys import FORMAT_SALT_SIZE, IMAGE_ID_SIZE, KEY_SIZE, derive_keys
from haven.shield.storage.layout import (
    FIRST_FREE_BLOCK,
    FORMAT_VERSION,
    MAGIC,
    SuperblockBody,
    SuperblockHeader,
)
from haven.shield.storage.superblock import (
    EMPTY,
    VALID,
    SlotState,
    SuperblockWriter,
    check_geometry,
    choose,
    read_slots,
)
from haven.shield.storage.tree import Geometry, default_capacity

# Each reservation commit sets aside this many data/node nonces for the session (docs: "Nonces").
NONCE_RESERVATION = 1 << 32


@dataclass(frozen=True)
class FirstCommit:
    """A new image's state: its superblock (slot A) and the cleared slot B."""

    current: SlotState
    other: SlotState
    raw: bytes  # slot A's bytes


@dataclass(frozen=True)
class Committed:
    """The superblock a mount goes on from, with the other slot and the counter's value."""

    best: SlotState  # the newest valid slot, judged against the counter
    other: SlotState
    raws: tuple[bytes, bytes]  # both slots' bytes
    counter: int  # the freshness counter's value at mount
    ahead: bool  # ``best`` is one commit ahead of the counter: a crash cut a commit short


def write_first_superblock(
    dev: BlockDevice,
    key: bytes,
    counter: FreshnessCounter,
    *,
    image_id: bytes | None,
    capacity: int | None,
) -> FirstCommit:
    """Make ``dev`` an empty image: its first superblock, at the counter's value plus one (so a counter
    can outlive the image it was made for), durable, and the counter advanced to it."""
    check_key(key)
    block_size = dev.block_size
    check_block_size(block_size)
    n = device_size(dev)
    image_id = os.urandom(IMAGE_ID_SIZE) if image_id is None else image_id
    if len(image_id) != IMAGE_ID_SIZE:
        raise StorageError(f"an image id is {IMAGE_ID_SIZE} bytes")
    capacity = default_capacity(n, block_size) if capacity is None else capacity
    if capacity < 1 or n < FIRST_FREE_BLOCK + 2:
        raise StorageError(f"an image of {n} blocks of {block_size} bytes is too small")
    geo = Geometry.for_capacity(block_size, capacity, n)
    version = counter.read() + 1
    header = SuperblockHeader(
        magic=MAGIC, format_version=FORMAT_VERSION, slot=0, block_size=block_size, image_id=image_id,
        format_salt=os.urandom(FORMAT_SALT_SIZE),
    )  # fmt: skip
    body = SuperblockBody(
        version=version, device_blocks=n, capacity=capacity, height=geo.height, max_span=geo.span,
        nonce_hwm=NONCE_RESERVATION,
    )  # fmt: skip
    raw = SuperblockWriter(derive_keys(key, image_id, header.format_salt), header, block_size).seal(0, body)
    dev.write(0, raw + bytes(block_size))  # slot B is cleared: nothing of an earlier image survives
    dev.flush()
    counter.advance(version - 1, version)
    return FirstCommit(SlotState(0, VALID, header, body), SlotState(1, EMPTY), raw)


def read_committed(
    dev: BlockDevice, key: bytes, counter: FreshnessCounter, *, image_id: bytes | None
) -> Committed:
    """Read both superblock slots, authenticate them under ``key`` and choose one against ``counter``;
    refuse an image of another id (with ``image_id``), of another size than it was made with, or with
    a geometry that does not fit."""
    check_key(key)
    block_size = dev.block_size
    check_block_size(block_size)
    n = device_size(dev)
    if n < FIRST_FREE_BLOCK + 1:
        raise IntegrityError(f"mount: the image has {n} blocks, too few to be one")
    raw = dev.read(0, FIRST_FREE_BLOCK)
    if len(raw) != FIRST_FREE_BLOCK * block_size:
        raise IntegrityError(f"mount: the device returned {len(raw)} bytes for the two superblocks")
    raws = (raw[:block_size], raw[block_size:])
    states = read_slots(raws, block_size, lambda image, salt: derive_keys(key, image, salt))
    value = counter.read()
    best, ahead = choose(states, value, "mount")
    assert best.header is not None and best.body is not None
    body = best.body
    if image_id is not None and best.header.image_id != image_id:
        raise IntegrityError("mount: this is another image (its id is not the one expected)")
    if body.device_blocks != n:
        raise IntegrityError(
            f"mount: the image was made with {body.device_blocks} blocks but has {n}: truncated or extended"
        )
    check_geometry(body, block_size)
    return Committed(best, states[1 - best.slot], raws, value, ahead)


def check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise StorageError(f"an image key is {KEY_SIZE} bytes")


def device_size(dev: BlockDevice) -> int:
    n = dev.size()
    if not isinstance(n, int) or n < 0:
        raise IntegrityError(f"the device reported a size of {n!r} blocks")
    return n
