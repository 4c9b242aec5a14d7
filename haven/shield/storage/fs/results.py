"""What file-system calls return: attributes of an inode, and usage of the whole file system."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Stat:
    """An inode's attributes; ``size`` of a directory is its number of entries."""

    ino: int
    kind: str  # 'file' | 'dir' | 'symlink'
    mode: int
    nlink: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int


@dataclass(frozen=True, slots=True)
class FsUsage:
    """statfs: sizes in blocks of ``block_size`` bytes, and inodes in use."""

    block_size: int
    blocks: int
    blocks_free: int
    files: int
    name_max: int
