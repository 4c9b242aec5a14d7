"""Directory entries: ``(dir ino, DIR_ENTRY, slot)`` records, and the slot that is also the readdir cookie.

A name's *home slot* is ``FIRST_COOKIE + (BLAKE2b-64(name, key=name_key) >> 2)``, keyed with a secret
chosen at format, so nobody without the image key can aim names at one slot. An entry goes in the
first free slot from its home (linear probing); the directory's inode remembers the longest probe
ever made in it (``max_probe``), so a lookup reads the slots ``home .. home + max_probe`` — with a
64-bit hash that is one exact B+tree search in practice. An entry never moves while it exists, so its
slot is a stable cookie: resuming readdir after cookie ``c`` returns the entries with slots above ``c``.
"""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from haven.shield.storage.fs.errors import FsCorruptError, FsError
from haven.shield.storage.fs.records import (
    DIRENT_FIXED,
    FIRST_COOKIE,
    HASH_SHIFT,
    NAME_MAX,
    DirEntryRecord,
    FileKind,
    InodeRecord,
    ItemKind,
    make_key,
)
from haven.shield.storage.fs.volume import Volume

_FIXED = DirEntryRecord.SIZE
_LABEL = {k.value: k.label for k in FileKind}
_LAST_SLOT = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One readdir result: resume after it with ``next_cookie``; ``kind`` is 'file', 'dir' or 'symlink'."""

    next_cookie: int
    name: bytes
    ino: int
    kind: str


def check_name(name: bytes, what: str) -> None:
    """A single path component: not empty, no '/' or NUL, not '.' or '..', at most NAME_MAX bytes."""
    if not isinstance(name, bytes):
        raise TypeError(f"{what}: names are bytes")
    if len(name) > NAME_MAX:
        raise FsError.of(errno.ENAMETOOLONG, what, name[:32] + b"...")
    if not name or b"/" in name or b"\0" in name or name in (b".", b".."):
        raise FsError.of(errno.EINVAL, what, name)


def encode_entry(name: bytes, ino: int, kind: int) -> bytes:
    return DIRENT_FIXED.pack(ino, kind, 0, len(name)) + name


def decode_entry(value: bytes, where: str) -> tuple[bytes, int, int]:
    """``(name, ino, kind)`` of an entry's value."""
    if len(value) < _FIXED:
        raise FsCorruptError(f"{where}: truncated directory entry")
    ino, kind, reserved, name_len = DIRENT_FIXED.unpack_from(value)
    if len(value) != _FIXED + name_len or reserved or not 0 < name_len <= NAME_MAX or kind not in (1, 2, 3):
        raise FsCorruptError(f"{where}: malformed directory entry")
    return value[_FIXED:], ino, kind


class Directories:
    """Lookup, insertion, removal and listing of directory entries."""

    def __init__(self, vol: Volume) -> None:
        self.vol = vol
        self.tree = vol.tree
        self._key = vol.header.name_key

    def home(self, name: bytes) -> int:
        digest = hashlib.blake2b(name, digest_size=8, key=self._key).digest()
        return FIRST_COOKIE + (int.from_bytes(digest, "little") >> HASH_SHIFT)

    def find(
        self, dir_ino: int, dir_rec: InodeRecord, name: bytes, home: int | None = None
    ) -> tuple[int, int, int] | None:
        """``(slot, child ino, child kind)`` of ``name`` in the directory, or None. ``home`` is
        ``self.home(name)`` when the caller has it already."""
        if home is None:
            home = self.home(name)
        if dir_rec.max_probe == 0:
            value = self.tree.get(make_key(dir_ino, ItemKind.DIR_ENTRY, home))
            candidates = [] if value is None else [(home, value)]
        else:
            lo = make_key(dir_ino, ItemKind.DIR_ENTRY, home)
            candidates = [
                (key & ((1 << 64) - 1), value)
                for key, value in self.tree.scan(lo, lo + dir_rec.max_probe + 1)
            ]
        for slot, value in candidates:
            entry_name, ino, kind = decode_entry(value, f"directory {dir_ino} slot {slot}")
            if entry_name == name:
                return slot, ino, kind
        return None

    def add(
        self, dir_ino: int, dir_rec: InodeRecord, name: bytes, ino: int, kind: int, home: int | None = None
    ) -> int:
        """Insert an entry (the caller checked the name is absent); returns its slot. Updates ``dir_rec``.
        ``home`` is ``self.home(name)`` when the caller has it already."""
        if home is None:
            home = self.home(name)
        slot = home
        value = encode_entry(name, ino, kind)
        insert_new = self.tree.insert_new
        while not insert_new(make_key(dir_ino, ItemKind.DIR_ENTRY, slot), value):
            slot += 1
            if slot > _LAST_SLOT:  # beyond 2**62 consecutive collisions: unreachable, but never wrap
                raise FsError(errno.ENOSPC, f"directory {dir_ino} has no free slot")
        dir_rec.max_probe = max(dir_rec.max_probe, slot - home)
        dir_rec.size += 1
        return slot

    def remove(self, dir_ino: int, dir_rec: InodeRecord, slot: int) -> None:
        self.tree.delete(make_key(dir_ino, ItemKind.DIR_ENTRY, slot))
        dir_rec.size -= 1

    def repoint(self, dir_ino: int, slot: int, name: bytes, ino: int, kind: int) -> None:
        """Make the entry in ``slot`` name another inode (rename over an existing name keeps its slot)."""
        self.tree.replace(make_key(dir_ino, ItemKind.DIR_ENTRY, slot), encode_entry(name, ino, kind))

    def entries(self, dir_ino: int, cookie: int = 0) -> Iterator[DirEntry]:
        """Entries with slots above ``cookie``, in slot order."""
        start = max(cookie + 1, FIRST_COOKIE)
        if start > _LAST_SLOT:
            return
        lo = make_key(dir_ino, ItemKind.DIR_ENTRY, start)
        hi = make_key(dir_ino, ItemKind.DIR_ENTRY + 1, 0)
        for key, value in self.tree.scan(lo, hi):
            slot = key & ((1 << 64) - 1)
            name, ino, kind = decode_entry(value, f"directory {dir_ino} slot {slot}")
            yield DirEntry(slot, name, ino, _LABEL[kind])

    def is_empty(self, dir_ino: int) -> bool:
        lo = make_key(dir_ino, ItemKind.DIR_ENTRY, 0)
        hi = make_key(dir_ino, ItemKind.DIR_ENTRY + 1, 0)
        return next(iter(self.tree.scan(lo, hi)), None) is None
