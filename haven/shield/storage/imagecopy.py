"""Listing an image's directories and copying files and trees between an image and the host.

The owner-side half of ``haven image ls``, ``get`` and ``put`` (re-exported by :mod:`.image`). Paths
inside the image are ``/``-separated text from the root; names are the file system's bytes, converted
with the host's file-system encoding (``os.fsencode``/``os.fsdecode``: UTF-8 with ``surrogateescape``),
so any name survives a round trip. Symbolic links are copied as links and never followed, inside the
image or on the host, below the path named; hard links within a copied tree stay hard links.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from haven.shield.storage.errors import StorageError
from haven.shield.storage.fs import FileSystem, FsError
from haven.shield.storage.fs.paths import components

CHUNK = 1 << 20  # copy granularity: large enough to amortise per-call costs, small enough for progress
_PERMS = 0o777  # only permission bits cross between host and image (no set-id or sticky bits)


class ImageError(StorageError):
    """An owner-side operation on an image cannot be done as asked (bad path, size or existing file)."""


class ProgressTask(Protocol):
    def update(self, n: int) -> object: ...

    def close(self) -> None: ...


class Progress(Protocol):
    """Makes one progress display for a step of ``total`` units of ``unit`` ("B" for bytes)."""

    def __call__(self, label: str, total: int, unit: str) -> ProgressTask: ...


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def start_task(progress: Progress | None, label: str, total: int, unit: str) -> ProgressTask:
    return _NoProgress() if progress is None else progress(label, total, unit)


@dataclass(frozen=True)
class Entry:
    """One line of ``ls``: ``target`` is a symbolic link's target, else None."""

    name: str
    ino: int
    kind: str  # 'file' | 'dir' | 'symlink'
    mode: int
    nlink: int
    size: int
    mtime_ns: int
    target: str | None = None

    def mtime_text(self) -> str:
        return datetime.fromtimestamp(self.mtime_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class CopyStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    hard_links: int = 0

    def summary(self) -> str:
        return (
            f"{self.files} files ({self.bytes} bytes), {self.dirs} directories, {self.symlinks} symbolic "
            f"links, {self.hard_links} further hard links"
        )


def _text(name: bytes) -> str:
    return os.fsdecode(name)


def _lookup(fs: FileSystem, path: str) -> tuple[int, bytes | None]:
    """The inode ``path`` names, its last symlink not followed, and its name (None for the root)."""
    parts = components(path)
    try:
        ino = fs.resolve(path, follow=False)
    except FsError as e:
        raise ImageError(f"{path} in the image: {e}") from None
    while parts and parts[-1] == b".":
        parts.pop()
    if ino == fs.root or not parts:
        return fs.root, None
    if parts[-1] == b"..":
        raise ImageError(f"{path}: name the directory itself, not a path ending in '..'")
    return ino, parts[-1]


def _entry(fs: FileSystem, name: bytes, ino: int) -> Entry:
    st = fs.stat(ino)
    target = _text(fs.readlink(ino)) if st.kind == "symlink" else None
    return Entry(_text(name), ino, st.kind, st.mode, st.nlink, st.size, st.mtime_ns, target)


def ls(fs: FileSystem, path: str = "/") -> list[Entry]:
    """A directory's entries sorted by name; for a file or symbolic link, that one entry."""
    ino, name = _lookup(fs, path)
    if fs.stat(ino).kind != "dir":
        assert name is not None  # the root is a directory
        return [_entry(fs, name, ino)]
    entries = [_entry(fs, e.name, e.ino) for e in fs.readdir(ino)]
    return sorted(entries, key=lambda e: os.fsencode(e.name))


# ---------------------------------------------------------------------------------------- image -> host


def _safe_name(name: bytes, where: str) -> bytes:
    # The file system refuses such names when they are made; a damaged image must still never steer a
    # copy outside DEST.
    if not name or b"/" in name or b"\0" in name or name in (b".", b".."):
        raise ImageError(f"{where}: the image holds an invalid name {name!r}")
    return name


def _image_tree(fs: FileSystem, ino: int, host: bytes) -> Iterator[tuple[int, bytes, str]]:
    """(inode, host path, kind) of a tree, parents before children (no recursion: trees may be deep)."""
    stack = [(ino, host)]
    while stack:
        ino, host = stack.pop()
        kind = fs.stat(ino).kind
        yield ino, host, kind
        if kind == "dir":
            where = os.fsdecode(host)
            children = [(e.ino, os.path.join(host, _safe_name(e.name, where))) for e in fs.readdir(ino)]
            stack.extend(reversed(children))


def get(fs: FileSystem, path: str, dest: Path, *, progress: Progress | None = None) -> CopyStats:
    """Copy ``path`` (file, symbolic link or tree) out to ``dest``; into it if ``dest`` is a directory.

    Existing host directories are merged into and existing regular files replaced; anything else in the
    way is refused. Permission bits and modification times are kept.
    """
    ino, name = _lookup(fs, path)
    target = os.fsencode(dest)
    if os.path.isdir(target):
        if name is not None:
            target = os.path.join(target, name)
        # else: the root's contents go straight into DEST
    elif not os.path.isdir(os.path.dirname(target) or b"."):
        raise ImageError(f"{dest}: its directory does not exist")
    items = list(_image_tree(fs, ino, target))
    total = sum(fs.stat(i).size for i, _, kind in items if kind == "file")
    stats = CopyStats()
    seen: dict[int, bytes] = {}
    dirs: list[tuple[bytes, int]] = []
    task = start_task(progress, "get", total, "B")
    try:
        for i, host, kind in items:
            st = fs.stat(i)
            if kind == "dir":
                if _host_mkdir(host):
                    dirs.append((host, i))
                stats.dirs += 1
            elif kind == "symlink":
                _host_clear(host)
                os.symlink(fs.readlink(i), host)
                stats.symlinks += 1
            elif st.nlink > 1 and i in seen:
                _host_clear(host)
                os.link(seen[i], host)
                stats.hard_links += 1
            else:
                stats.bytes += _copy_out(fs, i, st.size, host, task)
                os.chmod(host, st.mode & _PERMS)
                seen[i] = host
                stats.files += 1
            if kind != "dir":
                os.utime(host, ns=(st.atime_ns, st.mtime_ns), follow_symlinks=False)
    finally:
        task.close()
    # Directories this copy made get the image's mode and times, children first (filling a directory
    # changes its times); directories that were there already keep their own.
    for host, i in reversed(dirs):
        st = fs.stat(i)
        os.chmod(host, st.mode & _PERMS)
        os.utime(host, ns=(st.atime_ns, st.mtime_ns))
    return stats


def _host_mkdir(host: bytes) -> bool:
    """Make a directory (False if one is there already)."""
    try:
        os.mkdir(host, 0o700)  # opened up to the image's mode once filled
    except FileExistsError:
        if not stat_mod.S_ISDIR(os.lstat(host).st_mode):
            raise ImageError(f"{os.fsdecode(host)}: exists and is not a directory") from None
        return False
    return True


def _host_clear(host: bytes) -> None:
    """Make room for a file or link: only a regular file or a link may be replaced."""
    try:
        mode = os.lstat(host).st_mode
    except FileNotFoundError:
        return
    if not (stat_mod.S_ISREG(mode) or stat_mod.S_ISLNK(mode)):
        raise ImageError(f"{os.fsdecode(host)}: exists and is not a regular file")
    os.unlink(host)


def _copy_out(fs: FileSystem, ino: int, size: int, host: bytes, task: ProgressTask) -> int:
    _host_clear(host)
    fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    done = 0
    try:
        while done < size:
            chunk = fs.read(ino, done, min(CHUNK, size - done))
            if not chunk:
                raise ImageError(f"{os.fsdecode(host)}: the image file ended before its size")
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
            done += len(chunk)
            task.update(len(chunk))
    finally:
        os.close(fd)
    return done


# ---------------------------------------------------------------------------------------- host -> image


@dataclass
class _PutState:
    fs: FileSystem
    task: ProgressTask
    stats: CopyStats = field(default_factory=CopyStats)
    seen: dict[tuple[int, int], int] = field(default_factory=dict)


def _host_total(src: bytes) -> int:
    total = 0
    for root, _dirs, files in os.walk(src):
        for f in files:
            st = os.lstat(os.path.join(root, f))
            if stat_mod.S_ISREG(st.st_mode):
                total += st.st_size
    if stat_mod.S_ISREG(os.lstat(src).st_mode):
        total += os.lstat(src).st_size
    return total


def put(fs: FileSystem, src: Path, path: str, *, progress: Progress | None = None) -> CopyStats:
    """Copy the host's ``src`` (file, symbolic link or tree) into the image at ``path``; into it if
    ``path`` is a directory. Missing parents are made; an existing file is replaced; existing
    directories are merged into. Does not commit: the caller syncs."""
    host = os.fsencode(src)
    try:
        os.lstat(host)
    except OSError as e:
        raise ImageError(f"{src}: {e.strerror}") from None
    parent, name = _put_target(fs, path, os.path.basename(host.rstrip(b"/")))
    task = start_task(progress, "put", _host_total(host), "B")
    state = _PutState(fs, task)
    try:
        _put_item(state, host, parent, name)
    finally:
        task.close()
    return state.stats


def put_contents(fs: FileSystem, src_dir: Path, *, progress: Progress | None = None) -> CopyStats:
    """Copy everything inside the host directory ``src_dir`` into the image's root (``--from``)."""
    host = os.fsencode(src_dir)
    if not os.path.isdir(host):
        raise ImageError(f"{src_dir}: not a directory")
    task = start_task(progress, "copy", _host_total(host), "B")
    state = _PutState(fs, task)
    try:
        _put_children(state, host, fs.root)
    finally:
        task.close()
    st = os.stat(host)
    fs.set_times(fs.root, st.st_atime_ns, st.st_mtime_ns)
    return state.stats


def _put_target(fs: FileSystem, path: str, src_name: bytes) -> tuple[int, bytes]:
    """(directory inode, name) the copy gets."""
    parts = components(path)
    try:
        ino = fs.resolve(path)
    except FsError as e:
        if e.errno != errno.ENOENT or not parts:
            raise
    else:
        if fs.stat(ino).kind == "dir":
            if not src_name:
                raise ImageError("the source has no name to copy under")
            return ino, src_name
    if parts[-1] in (b".", b".."):
        raise ImageError(f"{path!r} does not name an entry in a directory")
    head = "/".join(os.fsdecode(p) for p in parts[:-1])
    return fs.makedirs(head), parts[-1]


def _put_item(state: _PutState, host: bytes, parent: int, name: bytes) -> None:
    """Copy one host item and, for a directory, everything under it (iteratively: trees may be deep)."""
    fs = state.fs
    finish: list[tuple[int, os.stat_result]] = []  # directories whose times are set once they are filled
    stack = [(host, parent, name)]
    while stack:
        host, parent, name = stack.pop()
        st = os.lstat(host)
        ino = _put_one(state, host, st, parent, name)
        if ino is None:
            continue
        if stat_mod.S_ISDIR(st.st_mode):
            finish.append((ino, st))
            stack.extend((os.path.join(host, c), ino, c) for c in sorted(os.listdir(host), reverse=True))
        else:
            fs.set_times(ino, st.st_atime_ns, st.st_mtime_ns)
    for ino, st in reversed(finish):
        fs.set_times(ino, st.st_atime_ns, st.st_mtime_ns)


def _put_one(state: _PutState, host: bytes, st: os.stat_result, parent: int, name: bytes) -> int | None:
    """The inode made (or reused) for one host item; None when it became a further hard link."""
    fs = state.fs
    existing = _find(fs, parent, name)
    kind = fs.stat(existing).kind if existing is not None else None
    if stat_mod.S_ISDIR(st.st_mode):
        if kind not in (None, "dir"):
            raise ImageError(f"{_text(name)}: exists in the image and is not a directory")
        state.stats.dirs += 1
        return existing if existing is not None else fs.mkdir(parent, name, st.st_mode & _PERMS)
    if not (stat_mod.S_ISLNK(st.st_mode) or stat_mod.S_ISREG(st.st_mode)):
        raise ImageError(f"{os.fsdecode(host)}: not a regular file, directory or symbolic link")
    if kind == "dir":
        raise ImageError(f"{_text(name)}: exists in the image and is a directory")
    key = (st.st_dev, st.st_ino)
    if existing is not None and (kind == "symlink" or stat_mod.S_ISLNK(st.st_mode) or key in state.seen):
        fs.unlink(parent, name)
        existing = None
    if stat_mod.S_ISLNK(st.st_mode):
        state.stats.symlinks += 1
        return fs.symlink(parent, name, os.readlink(host))
    if st.st_nlink > 1 and key in state.seen:
        fs.link(state.seen[key], parent, name)
        state.stats.hard_links += 1
        return None
    # An existing regular file is rewritten in place, as `cp` does (its other names see the new data).
    ino = existing if existing is not None else fs.create(parent, name, st.st_mode & _PERMS)
    _copy_in(state, host, ino, st.st_size)
    state.seen[key] = ino
    state.stats.files += 1
    return ino


def _put_children(state: _PutState, host: bytes, ino: int) -> None:
    for child in sorted(os.listdir(host)):
        _put_item(state, os.path.join(host, child), ino, child)


def _find(fs: FileSystem, parent: int, name: bytes) -> int | None:
    try:
        return fs.lookup(parent, name)
    except FsError as e:
        if e.errno == errno.ENOENT:
            return None
        raise


def _copy_in(state: _PutState, host: bytes, ino: int, expected: int) -> None:
    fs = state.fs
    try:
        fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ImageError(f"{os.fsdecode(host)}: {e.strerror}") from None
    offset = 0
    try:
        if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
            raise ImageError(f"{os.fsdecode(host)}: changed into something other than a regular file")
        fs.truncate(ino, 0)
        while chunk := os.read(fd, CHUNK):
            fs.write(ino, offset, chunk)
            offset += len(chunk)
            state.task.update(len(chunk))
    finally:
        os.close(fd)
    state.stats.bytes += offset
    if offset < expected:  # the file shrank while copied; the bar still ends at its total
        state.task.update(expected - offset)
