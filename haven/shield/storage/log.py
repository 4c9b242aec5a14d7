"""The commit log: a small commit as one sealed record instead of a copy-on-write path to the root.

Through the tree, a commit that creates a file, writes a block and syncs seals each changed block, then
every tree node on the paths from them to the root, then the superblock: about ten seals and a dozen
blocks. A log commit seals the changed blocks' new contents as one *record* (a header block naming them,
then the blocks) and points the superblock at it; each record points at the one before it, so the
superblock's tag covers the whole chain. The tree takes the logged blocks in later, at a *checkpoint*:
the next commit that goes through the tree (a larger commit, a discard, or the log reaching its bounds),
which frees the records with it. ``docs/storage-format.md``, "The commit log", is the format.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from haven.shield.storage.errors import IntegrityError
from haven.shield.storage.layout import (
    ABSENT,
    ENTRY,
    FIRST_FREE_BLOCK,
    LOG_MAGIC,
    TAG_SIZE,
    LogHeader,
    codec,
)
from haven.shield.storage.tree import Geometry, Sealer

# A commit of more changed blocks than this goes through the tree: past a few blocks, the nodes above
# them cost less than carrying the blocks again at the checkpoint.
LOG_MAX_BLOCKS = 32
# Records before the next commit is a checkpoint: bounds the log's space, the blocks held in memory
# until the checkpoint, and the records a mount reads.
LOG_MAX_RECORDS = 128
# The longest chain a reader follows (a writer stays at LOG_MAX_RECORDS), and the most bytes of blocks it
# replays into memory (a writer's log stays under LOG_MAX_RECORDS * LOG_MAX_BLOCKS blocks, 256 MiB at the
# largest block size): bounds on the work and the memory of a mount.
CHAIN_LIMIT = 4096
CARRIED_LIMIT = 512 << 20

_HEADER = codec(LogHeader)
_ZERO8 = bytes(8)
_ZERO16 = bytes(16)


def max_record_blocks(block_size: int) -> int:
    """The most logical blocks one record can name: its header block holds a u64 for each."""
    return (block_size - LogHeader.SIZE) // 8


@dataclass(frozen=True)
class LogRecord:
    """A record read back and authenticated: where it is, and the blocks it carries."""

    phys: int
    span: int  # physical blocks: the header block and one per logical block
    version: int
    lbas: tuple[int, ...]
    blocks: bytes  # the contents of ``lbas``, in order, one block each


def seal_record(
    sealer: Sealer,
    nonce: bytes,
    version: int,
    seq: int,
    prev: bytes,
    lbas: Sequence[int],
    blocks: Sequence[bytes | bytearray | memoryview],
    phys: int,
    out: memoryview,
) -> bytes:
    """Seal a record of ``lbas`` (with ``blocks``, their contents) into ``out`` (its ``1 + len(lbas)``
    blocks, then room for the tag) and return its entry: where it will be, and its nonce and tag."""
    count = len(lbas)
    size = len(blocks[0]) if blocks else 0
    if not 1 <= count <= max_record_blocks(size) or len(blocks) != count:
        raise ValueError(f"a log record carries 1..{max_record_blocks(size)} blocks, not {count}")
    span = 1 + count
    plain = bytearray(span * size)
    _HEADER.pack_into(plain, 0, LOG_MAGIC, version, seq, count, *ENTRY.unpack(prev), _ZERO8)
    struct.pack_into(f"<{count}Q", plain, LogHeader.SIZE, *lbas)
    for k, block in enumerate(blocks):
        if len(block) != size:
            raise ValueError(f"a logged block is {size} bytes, not {len(block)}")
        plain[(k + 1) * size : (k + 2) * size] = block
    sealer.seal_data_into(nonce, memoryview(plain), sealer.log_aad(span, version), out)
    tag = bytes(out[span * size : span * size + TAG_SIZE])
    return ENTRY.pack(phys, version, nonce, span, 0, tag, _ZERO16)


def read_chain(
    head: bytes,
    read: Callable[[int, int], bytes],
    sealer: Sealer,
    geo: Geometry,
    newest_version: int,
    tree_version: int,
) -> list[LogRecord]:
    """Every record of the chain ending at ``head``, authenticated, oldest first. Records are newer
    than the tree they apply to (``tree_version``, the root's) and no newer than the superblock that
    names the chain (``newest_version``); versions rise and sequence numbers count up by one from 1
    along the chain. Raises IntegrityError at the first fault."""
    size, most = geo.block_size, max_record_blocks(geo.block_size)
    records: list[LogRecord] = []
    entry, newer_version, newer_seq, carried = head, newest_version + 1, 0, 0
    while entry != ABSENT:
        if len(records) >= CHAIN_LIMIT:
            raise IntegrityError(f"commit log: longer than {CHAIN_LIMIT} records")
        phys, version, nonce, span, offset, tag, reserved = ENTRY.unpack(entry)
        carried += (span - 1) * size
        if carried > CARRIED_LIMIT:
            raise IntegrityError(f"commit log: carries more than {CARRIED_LIMIT >> 20} MiB of blocks")
        what = f"commit log record at block {phys}"
        if reserved != _ZERO16 or offset != 0 or not 2 <= span <= 1 + most:
            raise IntegrityError(f"{what}: malformed entry (span {span}, offset {offset})")
        if not (FIRST_FREE_BLOCK <= phys and phys + span <= geo.device_blocks):
            raise IntegrityError(f"{what}: points outside the device")
        if not tree_version < version < newer_version:
            raise IntegrityError(f"{what}: version {version} is out of order")
        plain = sealer.open_data(nonce, read(phys, span) + tag, sealer.log_aad(span, version))
        if plain is None:
            raise IntegrityError(f"{what}: fails authentication")
        magic, hversion, seq, count, *prev_fields, hreserved = _HEADER.unpack_from(plain, 0)
        prev = ENTRY.pack(*prev_fields)
        if magic != LOG_MAGIC or hversion != version or count != span - 1 or hreserved != _ZERO8:
            raise IntegrityError(f"{what}: its header does not match its entry")
        if seq < 1 or (newer_seq and seq != newer_seq - 1) or (seq == 1) != (prev == ABSENT):
            raise IntegrityError(f"{what}: sequence number {seq} is out of order")
        end = LogHeader.SIZE + 8 * count
        lbas = struct.unpack_from(f"<{count}Q", plain, LogHeader.SIZE)
        if plain[end:size].count(0) != size - end:
            raise IntegrityError(f"{what}: its header block is not zero after the block list")
        if len(set(lbas)) != count or max(lbas) >= geo.capacity:
            raise IntegrityError(f"{what}: names a logical block twice or beyond the capacity")
        records.append(LogRecord(phys, span, version, lbas, plain[size:]))
        entry, newer_version, newer_seq = prev, version, seq
    records.reverse()
    return records


class CommitLog:
    """The writer's side of the log: the chain the last commit references (its newest entry, and each
    record's physical extent, oldest first, to free them at the checkpoint), the logical blocks the
    records carry (staged in memory until then), and what changed since the last commit."""

    def __init__(self, head: bytes) -> None:
        self.head = head
        self.records: list[tuple[int, int]] = []  # (first physical block, span)
        self.blocks = 0  # physical blocks of all the records
        self.carried: set[int] = set()  # logical blocks the records carry
        self.carried_new = 0  # of them, blocks the tree does not hold
        self.fresh: set[int] = set()  # logical blocks written since the last commit
        self.loggable = True  # False once a change since the last commit needs the tree (a discard)

    def __len__(self) -> int:
        return len(self.records)

    def changed(self) -> bool:
        """Whether anything changed since the last commit that the log could not have carried."""
        return bool(self.fresh) or not self.loggable

    def may_take(self, free: int, checkpoint: int, reserve: int) -> bool:
        """Whether the fresh blocks may go to the log as one more record: at most LOG_MAX_BLOCKS of
        them and fewer than LOG_MAX_RECORDS records, with ``free`` blocks free, ``checkpoint`` of them
        needed by the checkpoint that will take the log in, and ``reserve`` kept back. The log holds
        blocks twice until the checkpoint: it stays under an eighth of the room left, so a filling
        image goes back to the tree well before the log could make a write run short."""
        count = len(self.fresh)
        return (
            self.loggable and 0 < count <= LOG_MAX_BLOCKS and len(self.records) < LOG_MAX_RECORDS
            and (self.blocks + 1 + count) * 8 <= free - checkpoint - reserve
        )  # fmt: skip

    def appended(self, phys: int, span: int, entry: bytes) -> None:
        self.records.append((phys, span))
        self.blocks += span
        self.head = entry
        self.fresh.clear()

    def carry(self, lba: int, in_tree: bool) -> None:
        """A record (written now, or read at mount) carries ``lba``."""
        if lba not in self.carried:
            self.carried.add(lba)
            self.carried_new += not in_tree

    def cleared(self) -> None:
        """A checkpoint: the tree took everything in, and nothing changed since."""
        self.records.clear()
        self.blocks = self.carried_new = 0
        self.head = ABSENT
        self.carried.clear()
        self.fresh.clear()
        self.loggable = True
