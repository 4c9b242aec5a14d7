"""Path helpers for the owner's tools: ``/a/b/c`` to an inode, and ``mkdir -p``.

The owner works on their own image, so there is no confinement here (the LibOS walks the
application's paths itself, one component at a time, inside its preopened directories). Paths are
text; each component is encoded as UTF-8 (with ``surrogateescape``, so names read back from a host
directory round-trip) and is a file-system name: ``.`` is skipped, ``..`` goes to the parent.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from haven.shield.storage.fs.errors import FsError

if TYPE_CHECKING:
    from haven.shield.storage.fs.filesystem import FileSystem

SYMLOOP_MAX = 40  # Linux's limit on symlinks followed in one path walk (ELOOP past it)


def components(path: str) -> list[bytes]:
    """The non-empty components of ``path`` (a leading '/' means the root; so does none)."""
    return [c for c in path.encode("utf-8", "surrogateescape").split(b"/") if c]


def resolve(fs: FileSystem, path: str, *, follow: bool = True) -> int:
    """The inode ``path`` names, from the root; symlinks are followed (the last one only if ``follow``)."""
    pending = components(path)
    pending.reverse()
    at = fs.root
    hops = 0
    while pending:
        name = pending.pop()
        if name == b".":
            continue
        if name == b"..":
            at = fs.parent(at)
            continue
        child = fs.lookup(at, name)
        if fs.stat(child).kind == "symlink" and (pending or follow):
            hops += 1
            if hops > SYMLOOP_MAX:
                raise FsError(errno.ELOOP, f"{path!r}: too many levels of symbolic links")
            target = fs.readlink(child).decode("utf-8", "surrogateescape")
            if target.startswith("/"):
                at = fs.root
            more = components(target)
            more.reverse()
            pending.extend(more)
            continue
        at = child
    return at


def split_parent(fs: FileSystem, path: str) -> tuple[int, bytes]:
    """``(directory inode, last name)`` of ``path``; the directory must exist (EINVAL for the root)."""
    parts = components(path)
    if not parts or parts[-1] in (b".", b".."):
        raise FsError(errno.EINVAL, f"{path!r} does not name an entry in a directory")
    head = "/".join(p.decode("utf-8", "surrogateescape") for p in parts[:-1])
    parent = resolve(fs, head)
    if fs.stat(parent).kind != "dir":
        raise FsError(errno.ENOTDIR, f"{head!r} is not a directory")
    return parent, parts[-1]


def makedirs(fs: FileSystem, path: str, mode: int = 0o755) -> int:
    """``mkdir -p``: every missing directory of ``path``; returns the last one's inode."""
    parts = components(path)
    at = fs.root
    for i, name in enumerate(parts):
        prefix = "/" + "/".join(p.decode("utf-8", "surrogateescape") for p in parts[: i + 1])
        try:
            at = resolve(fs, prefix)
        except FsError as e:
            if e.errno != errno.ENOENT or name in (b".", b".."):
                raise
            at = fs.mkdir(at, name, mode)  # ``at`` is still the directory the previous prefix named
            continue
        if fs.stat(at).kind != "dir":
            raise FsError.of(errno.ENOTDIR, "makedirs", name)
    return at
