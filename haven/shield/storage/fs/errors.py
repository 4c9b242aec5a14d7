"""Errors of the file system inside an image."""

from __future__ import annotations

import os

from haven.shield.storage.errors import IntegrityError, StorageError


class FsError(StorageError):
    """A file-system operation refused, with the POSIX ``errno`` it stands for (the LibOS maps it to WASI's).

    ``errno`` is one of the :mod:`errno` module's values; the message names the operation and, where
    it helps, the name involved (names are the application's own data, never key material).
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{message}: {os.strerror(code)}")
        self.errno = code

    @classmethod
    def of(cls, code: int, what: str, name: bytes | None = None) -> FsError:
        shown = f"{what} {name.decode('utf-8', 'backslashreplace')!r}" if name is not None else what
        return cls(code, shown)


class FsCorruptError(IntegrityError):
    """An authenticated block holds something the file system never writes: a damaged file system.

    The store has verified the block's MAC, so only a holder of the image key (or a bug) made it; it is
    still refused with a message naming the block, never acted on.
    """

