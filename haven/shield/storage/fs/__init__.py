"""The file system inside an encrypted image: one B+tree over the :class:`SecureStore`'s logical blocks.

See :mod:`.filesystem` for the operations and ``docs/storage-filesystem.md`` for the format.
"""

from haven.shield.storage.fs.dirs import DirEntry
from haven.shield.storage.fs.errors import FsCorruptError, FsError
from haven.shield.storage.fs.filesystem import FileSystem
from haven.shield.storage.fs.paths import makedirs, resolve
from haven.shield.storage.fs.results import FsUsage, Stat

__all__ = ["DirEntry", "FileSystem", "FsCorruptError", "FsError", "FsUsage", "Stat", "makedirs", "resolve"]
