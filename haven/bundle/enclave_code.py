"""The enclave-side code archive: the Python sources that run inside the enclave, as one measured blob.

Format (all integers little-endian)::

    ArchiveHeader (32 bytes)   magic "HAVENPYA", version 1, file count
    then, per file, in strictly ascending order of path:
    ArchiveEntry (16 bytes)    path length, data length
    path                       UTF-8, relative, '/'-separated, no '.', '..' or empty components
    data                       the file's bytes

The same set of files always gives the same bytes: no times, owners or modes are recorded, and the
order is fixed, so the archive (and so MRENCLAVE) depends on the code alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from haven.errors import BundleError, FormatError
from haven.structs import Struct, field_at

ARCHIVE_MAGIC = b"HAVENPYA"
ARCHIVE_VERSION = 1
MAX_FILES = 4096
MAX_PATH = 1024


@dataclass
class ArchiveHeader(Struct):
    SIZE: ClassVar[int] = 32
    magic: bytes = field_at(0, "8s")
    version: int = field_at(8, "<I")
    count: int = field_at(12, "<I")
    reserved: bytes = field_at(16, "16s", reserved=True)


@dataclass
class ArchiveEntry(Struct):
    SIZE: ClassVar[int] = 16
    path_length: int = field_at(0, "<H")
    reserved: bytes = field_at(2, "6s", reserved=True)
    data_length: int = field_at(8, "<Q")


def check_archive_path(path: str) -> str:
    parts = path.split("/")
    if not path or len(path.encode("utf-8")) > MAX_PATH or path.startswith("/") or "\0" in path:
        raise FormatError(f"archive path {path!r} is not a relative path")
    if any(p in ("", ".", "..") for p in parts):
        raise FormatError(f"archive path {path!r} is not normalised")
    return path


def encode_code_archive(files: Mapping[str, bytes]) -> bytes:
    """The archive of ``files`` (archive path -> bytes), in sorted path order."""
    if len(files) > MAX_FILES:
        raise FormatError(f"{len(files)} files are more than an archive holds ({MAX_FILES})")
    out = [ArchiveHeader(magic=ARCHIVE_MAGIC, version=ARCHIVE_VERSION, count=len(files)).to_bytes()]
    for path in sorted(files):
        raw = check_archive_path(path).encode("utf-8")
        data = bytes(files[path])
        out += [ArchiveEntry(path_length=len(raw), data_length=len(data)).to_bytes(), raw, data]
    return b"".join(out)


def decode_code_archive(data: bytes) -> dict[str, bytes]:
    """Parse an archive strictly: every length in range, paths sorted and unique, nothing left over."""
    view = memoryview(data)
    try:
        header = ArchiveHeader.from_bytes(bytes(view[: ArchiveHeader.SIZE]))
    except FormatError as e:
        raise BundleError(f"code archive: {e}") from None
    if header.magic != ARCHIVE_MAGIC or header.version != ARCHIVE_VERSION:
        raise BundleError("code archive: bad magic or version")
    if header.count > MAX_FILES:
        raise BundleError(f"code archive: {header.count} files, more than {MAX_FILES}")
    at = ArchiveHeader.SIZE
    files: dict[str, bytes] = {}
    previous = ""
    for i in range(header.count):
        try:
            entry = ArchiveEntry.from_bytes(bytes(view[at : at + ArchiveEntry.SIZE]))
        except FormatError as e:
            raise BundleError(f"code archive entry {i}: {e}") from None
        at += ArchiveEntry.SIZE
        end = at + entry.path_length + entry.data_length
        if entry.path_length == 0 or end > len(view):
            raise BundleError(f"code archive entry {i}: runs past the end of the archive")
        try:
            path = check_archive_path(bytes(view[at : at + entry.path_length]).decode("utf-8"))
        except (UnicodeDecodeError, FormatError) as e:
            raise BundleError(f"code archive entry {i}: {e}") from None
        if i and path <= previous:
            raise BundleError(f"code archive entry {i}: {path!r} is out of order or repeated")
        files[path] = bytes(view[at + entry.path_length : end])
        previous = path
        at = end
    if at != len(view):
        raise BundleError(f"code archive: {len(view) - at} bytes after the last file")
    return files
