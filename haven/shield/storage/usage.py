"""What a store reports about itself: space (``SecureStore.usage``) and identity (``SecureStore.info``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StoreUsage:
    """Space in physical blocks (the device) and logical blocks (what the file system addresses)."""

    block_size: int
    device_blocks: int
    capacity: int  # logical blocks addressable
    physical_used: int  # blocks the last commit references plus blocks sealed since (no superblocks)
    physical_free: int  # blocks that can be written now
    reserve: int  # free blocks new logical blocks may not take: kept for rewrites, deletes and nodes
    logical_used: int  # logical blocks present in the last commit
    dirty_blocks: int  # logical blocks written or discarded since the last commit, not yet sealed


@dataclass(frozen=True)
class StoreInfo:
    image_id: bytes
    version: int
    block_size: int
    device_blocks: int
    capacity: int
    height: int
    max_span: int
    nonce_hwm: int
    slot: str  # the superblock slot mounted ("A" or "B")
    other_slot: str  # what the other slot holds, e.g. "slot A: version 6" or "slot B: empty"
    usage: StoreUsage
    log_records: int = 0  # commit-log records the tree has not taken in yet
    log_blocks: int = 0  # physical blocks they use
