"""Freshness counters: the monotonic value an image's version is checked against at mount.

:class:`FreshnessCounter` is the interface the key broker will serve; :class:`FileCounter` keeps the
value in a local file. A local file is only as trustworthy as the disk it is on: it catches an image
restored from an old copy, but not someone who rewinds the image and the counter file together. That
is why the key broker keeps the counters in production.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from haven.shield.storage.errors import CounterConflict, StorageError
from haven.shield.storage.layout import codec
from haven.structs import Struct, field_at

COUNTER_MAGIC = b"HVNCTR01"
_MAX_VALUE = (1 << 64) - 1


class FreshnessCounter(Protocol):
    def read(self) -> int:
        """The current value."""
        ...

    def advance(self, expected: int, new: int) -> None:
        """Compare-and-set: move from ``expected`` to ``new`` (> ``expected``), durably before returning.
        Raises :class:`CounterConflict` if the value is not ``expected``."""
        ...


@dataclass
class CounterRecord(Struct):
    """One of the two slots of a counter file. Writes alternate between the slots, so a write torn by
    a crash damages only the slot being written and the other still holds the previous value."""

    SIZE: ClassVar[int] = 64
    magic: bytes = field_at(0, "8s")
    value: int = field_at(8, "<Q")
    reserved: bytes = field_at(16, "16s", reserved=True)
    checksum: bytes = field_at(32, "32s")  # SHA-256 of bytes 0..31: detects a torn write, not an attacker

    @staticmethod
    def encode(value: int) -> bytes:
        head = _RECORD.pack(COUNTER_MAGIC, value, bytes(16), bytes(32))[:32]
        return head + hashlib.sha256(head).digest()

    @staticmethod
    def decode(record: bytes) -> int | None:
        """The value of an intact record, or None if it is torn or not a record."""
        magic, value, reserved, checksum = _RECORD.unpack(record)
        if magic != COUNTER_MAGIC or reserved.count(0) != len(reserved):
            return None
        if not hmac.compare_digest(checksum, hashlib.sha256(record[:32]).digest()):
            return None
        return int(value)


_RECORD = codec(CounterRecord)


def _write_durably(fd: int, data: bytes, offset: int) -> None:
    """Write and make durable in one call where the kernel can (``RWF_DSYNC``: a write through to stable
    storage, cheaper than a write and a whole-file ``fdatasync``); elsewhere, write then ``fdatasync``."""
    flag = getattr(os, "RWF_DSYNC", 0)
    if flag:
        try:
            if os.pwritev(fd, [data], offset, flag) == len(data):
                return
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
    if os.pwrite(fd, data, offset) != len(data):
        raise OSError(errno.EIO, "short write")
    os.fdatasync(fd)
_FILE_SIZE = 2 * CounterRecord.SIZE


class FileCounter:
    """A counter in a 128-byte local file of two :class:`CounterRecord` slots; the larger intact value
    is the counter. ``advance`` holds an exclusive lock across its read and write, so concurrent
    processes see a true compare-and-set."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._load()  # refuse a missing or damaged file now rather than at the first commit
        # Opened at the first advance and kept: a commit then costs the lock, a read and the write
        # through, not an open and a close as well.
        self._fd = -1
        self._closer: weakref.finalize[[int], FileCounter] | None = None
        self._known: tuple[bytes, tuple[int, int]] | None = None  # (file bytes, what they parse as)

    @classmethod
    def create(cls, path: Path, value: int = 0) -> FileCounter:
        """A new counter file holding ``value``; refuses to replace an existing file."""
        path = Path(path)
        if not 0 <= value <= _MAX_VALUE:
            raise StorageError(f"counter {path}: value {value} out of range")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise StorageError(f"counter {path}: already exists") from None
        except OSError as e:
            raise StorageError(f"counter {path}: cannot create it ({e.strerror})") from None
        try:
            record = CounterRecord.encode(value)
            os.write(fd, record + record)
            os.fsync(fd)
        finally:
            os.close(fd)
        dfd = os.open(path.parent if str(path.parent) else ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return cls(path)

    def read(self) -> int:
        return self._load()[0]

    def advance(self, expected: int, new: int) -> None:
        if not 0 <= expected < new <= _MAX_VALUE:
            raise StorageError(f"counter {self.path}: cannot move from {expected} to {new}")
        if self._fd < 0:
            self._fd = self._open(os.O_RDWR)
            self._closer = weakref.finalize(self, os.close, self._fd)
        fd = self._fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                data = os.pread(fd, _FILE_SIZE + 1, 0)
                # The file as this counter last left it parses as it did then (no checksums again).
                known = self._known
                value, stale_slot = known[1] if known and known[0] == data else self._parse(data)
                if value != expected:
                    raise CounterConflict(f"counter {self.path}: is {value}, expected {expected}")
                record, at = CounterRecord.encode(new), stale_slot * CounterRecord.SIZE
                self._known = None
                _write_durably(fd, record, at)
                self._known = (data[:at] + record + data[at + CounterRecord.SIZE :], (new, 1 - stale_slot))
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as e:
            raise StorageError(f"counter {self.path}: cannot update it ({e.strerror})") from None

    def close(self) -> None:
        """Close the file kept open for advancing (it is also closed when the counter is freed)."""
        if self._closer is not None:
            self._closer()
            self._closer, self._fd = None, -1

    def _load(self) -> tuple[int, int]:
        fd = self._open(os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            return self._parse(os.pread(fd, _FILE_SIZE + 1, 0))
        except OSError as e:
            raise StorageError(f"counter {self.path}: cannot read it ({e.strerror})") from None
        finally:
            os.close(fd)

    def _open(self, flags: int) -> int:
        try:
            return os.open(self.path, flags | os.O_CLOEXEC)
        except FileNotFoundError:
            raise StorageError(f"counter {self.path}: no such file") from None
        except OSError as e:
            raise StorageError(f"counter {self.path}: cannot open it ({e.strerror})") from None

    def _parse(self, data: bytes) -> tuple[int, int]:
        """(value, the slot to write next): the larger intact value, and the other slot."""
        if len(data) != _FILE_SIZE:
            raise StorageError(f"counter {self.path}: {len(data)} bytes, expected {_FILE_SIZE}")
        values = [CounterRecord.decode(data[slot * 64 : (slot + 1) * 64]) for slot in range(2)]
        intact = [(value, slot) for slot, value in enumerate(values) if value is not None]
        if not intact:
            raise StorageError(f"counter {self.path}: both records are damaged")
        value, slot = max(intact)
        return value, 1 - slot
