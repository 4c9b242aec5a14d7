"""Block devices: the untrusted store of ciphertext blocks under an image.

:class:`BlockDevice` is what the host serves across the enclave boundary (``blk_size``, ``blk_read``,
``blk_write``, ``blk_flush`` in DESIGN.md's host interface); :class:`FileBlockDevice` implements it
over a local image file. Nothing here is trusted: the store above checks the shape of every answer
and authenticates every byte.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from haven.shield.storage.errors import IntegrityError, StorageError
from haven.shield.storage.layout import MAX_BLOCK_SIZE, MIN_BLOCK_SIZE

Buffer = bytes | bytearray | memoryview

# Writes are split so one call never hands the kernel more than this (and a huge run never needs one
# huge contiguous buffer).
_MAX_IO = 64 << 20
_ZERO_CHUNK = 4 << 20


class BlockDevice(Protocol):
    """Fixed-size blocks addressed by number; all sizes in blocks."""

    block_size: int

    def size(self) -> int:
        """Number of blocks (fixed while the device is open)."""
        ...

    def read(self, lba: int, n: int = 1) -> bytes:
        """Blocks ``lba`` to ``lba + n - 1``: exactly ``n * block_size`` bytes."""
        ...

    def write(self, lba: int, data: Buffer) -> None:
        """Store whole blocks starting at ``lba``."""
        ...

    def flush(self) -> None:
        """Durability barrier: every write issued before it is on stable storage when it returns."""
        ...


def check_block_size(block_size: int) -> None:
    if not (MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE) or block_size & (block_size - 1):
        raise StorageError(
            f"block size {block_size}: must be a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}"
        )


class FileBlockDevice:
    """A local image file as a block device. The file is locked while open (exclusively when writable),
    so two processes never mount one image at once."""

    # pread/pwrite on one descriptor may come from two threads at once (writeback.WriteBehind).
    concurrent = True

    def __init__(self, fd: int, path: Path, block_size: int, n_blocks: int, writable: bool) -> None:
        self._fd = fd
        self.path = path
        self.block_size = block_size
        self._n_blocks = n_blocks
        self.writable = writable

    @classmethod
    def create(
        cls,
        path: Path,
        n_blocks: int,
        block_size: int = 4096,
        *,
        preallocate: bool = False,
        progress: Callable[[int], object] | None = None,
    ) -> FileBlockDevice:
        """A new image file of ``n_blocks`` zero blocks: sparse where the file system allows, or, with
        ``preallocate``, every block written (zeros) so the host file system never allocates a block
        under a commit (an fsync then costs one device flush, not a journal commit too).
        ``progress(bytes)`` is called as the zeros are written."""
        check_block_size(block_size)
        if n_blocks < 1:
            raise StorageError(f"image {path}: needs at least one block, not {n_blocks}")
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise StorageError(f"image {path}: already exists") from None
        except OSError as e:
            raise StorageError(f"image {path}: cannot create it ({e.strerror})") from None
        try:
            _lock(fd, path, exclusive=True)
            os.ftruncate(fd, n_blocks * block_size)
            if preallocate:
                _write_zeros(fd, n_blocks * block_size, progress)
            os.fsync(fd)
            _sync_directory(path)
        except BaseException as e:
            os.close(fd)
            path.unlink(missing_ok=True)
            if isinstance(e, OSError):  # no room on the host, a quota: said as the image's failure
                raise StorageError(f"image {path}: cannot create it ({e.strerror or e})") from None
            raise
        return cls(fd, path, block_size, n_blocks, writable=True)

    @classmethod
    def open(cls, path: Path, block_size: int = 4096, *, writable: bool = True) -> FileBlockDevice:
        """An existing image file; its length must be a whole number of blocks."""
        check_block_size(block_size)
        path = Path(path)
        # O_NONBLOCK: opening a FIFO someone put in the image's place must not hang; the type is
        # checked on the descriptor below (the file checked is the file used).
        flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise StorageError(f"image {path}: no such file") from None
        except IsADirectoryError:
            raise StorageError(f"image {path}: is a directory") from None
        except OSError as e:
            raise StorageError(f"image {path}: cannot open it ({e.strerror})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise StorageError(f"image {path}: is not a regular file")
            _lock(fd, path, exclusive=writable)
            length = st.st_size
            if length == 0 or length % block_size:
                raise IntegrityError(
                    f"image {path}: {length} bytes is not a whole number of {block_size}-byte blocks"
                    " (truncated, extended, or not an image)"
                )
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, path, block_size, length // block_size, writable)

    def size(self) -> int:
        return self._n_blocks

    def read(self, lba: int, n: int = 1) -> bytes:
        self._check_range(lba, n)
        want = n * self.block_size
        try:
            data = os.pread(self._fd, want, lba * self.block_size)
            while len(data) < want:  # pread may return short for large requests
                more = os.pread(self._fd, want - len(data), lba * self.block_size + len(data))
                if not more:
                    raise IntegrityError(
                        f"image {self.path}: block {lba + len(data) // self.block_size} is past the"
                        " end of the file (the file shrank while open)"
                    )
                data += more
        except OSError as e:
            raise StorageError(f"image {self.path}: read failed ({e.strerror})") from None
        return data

    def read_into(self, lba: int, parts: list[memoryview]) -> None:
        """Blocks from ``lba`` on, scattered into ``parts`` in order (whole blocks each)."""
        total = sum(len(p) for p in parts)
        if total % self.block_size:
            raise StorageError(f"image {self.path}: a read must be whole blocks, not {total} bytes")
        self._check_range(lba, total // self.block_size)
        try:
            got = os.preadv(self._fd, parts, lba * self.block_size)
        except OSError as e:
            raise StorageError(f"image {self.path}: read failed ({e.strerror})") from None
        if got != total:  # short (a huge request, or the file shrank): the plain path copes or says so
            data = self.read(lba, total // self.block_size)
            at = 0
            for part in parts:
                part[:] = data[at : at + len(part)]
                at += len(part)

    def write(self, lba: int, data: Buffer) -> None:
        if not self.writable:
            raise StorageError(f"image {self.path}: opened read-only")
        view = memoryview(data).cast("B")
        if len(view) == 0 or len(view) % self.block_size:
            raise StorageError(f"image {self.path}: a write must be whole blocks, not {len(view)} bytes")
        self._check_range(lba, len(view) // self.block_size)
        offset = lba * self.block_size
        try:
            while view:
                done = os.pwrite(self._fd, view[:_MAX_IO], offset)
                view = view[done:]
                offset += done
        except OSError as e:
            raise StorageError(f"image {self.path}: write failed ({e.strerror})") from None

    def flush(self) -> None:
        try:
            os.fdatasync(self._fd)
        except OSError as e:
            raise StorageError(f"image {self.path}: flush failed ({e.strerror})") from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _check_range(self, lba: int, n: int) -> None:
        if self._fd < 0:
            raise StorageError(f"image {self.path}: device is closed")
        if n < 1 or lba < 0 or lba + n > self._n_blocks:
            raise StorageError(
                f"image {self.path}: blocks {lba}..{lba + n - 1} are outside 0..{self._n_blocks - 1}"
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _write_zeros(fd: int, length: int, progress: Callable[[int], object] | None) -> None:
    zeros = memoryview(bytes(_ZERO_CHUNK))
    at = 0
    while at < length:
        at += os.pwrite(fd, zeros[: min(_ZERO_CHUNK, length - at)], at)
        if progress is not None:
            progress(at)


def _lock(fd: int, path: Path, *, exclusive: bool) -> None:
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        raise StorageError(f"image {path}: in use by another process") from None


def _sync_directory(path: Path) -> None:
    """Make a new file's directory entry durable (a created file survives a crash only then)."""
    fd = os.open(path.parent if str(path.parent) else ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
