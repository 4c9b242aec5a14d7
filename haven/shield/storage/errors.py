"""Errors of the private storage layers.

Messages name what failed (a block number, a logical index, a superblock slot) and never carry key
material or plaintext.
"""

from __future__ import annotations

from haven.errors import HavenError


class StorageError(HavenError):
    """A storage image or its device cannot be used as asked."""


class IntegrityError(StorageError):
    """A block, tree node or superblock failed authentication, or the image's shape was changed."""


class RollbackError(IntegrityError):
    """The image is older than its freshness counter allows (a replayed or restored image)."""


class NoSpaceError(StorageError):
    """The image has no free block left for the write or commit. Raised by a write of a run of blocks,
    ``written`` says how many of its first blocks were written before the image filled up."""

    written: int = 0


class CounterConflict(StorageError):
    """A compare-and-set on a freshness counter found a value other than the one expected."""
