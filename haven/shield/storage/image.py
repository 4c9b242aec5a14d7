"""The owner's operations on a local image file: make, open, list, copy out, copy in, check, describe.

These are the functions behind ``haven image``. They run on the owner's machine over the same layers the
enclave mounts (:class:`SecureStore` under :class:`FileSystem`), with a :class:`FileBlockDevice` and a
:class:`FileCounter` standing in for the host's block device and the key broker's counter. The counter
file defaults to ``IMG.counter`` beside the image (:func:`counter_path_for`): an image and its counter go
together until the key broker takes the counter over. See ``docs/images.md``.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path

from haven.errors import KeyFileError
from haven.shield.storage.counter import FileCounter
from haven.shield.storage.device import FileBlockDevice
from haven.shield.storage.fs import FileSystem
from haven.shield.storage.fs.fsck import check as fsck
from haven.shield.storage.imagecopy import (
    CopyStats,
    Entry,
    ImageError,
    Progress,
    ProgressTask,
    get,
    ls,
    put,
    put_contents,
    start_task,
)
from haven.shield.storage.keys import KEY_SIZE
from haven.shield.storage.layout import SUPERBLOCK_SLOTS, SuperblockHeader
from haven.shield.storage.store import SecureStore, StoreInfo
from haven.shield.storage.superblock import SLOT_NAMES, SlotState, parse_header

__all__ = [
    "BLOCK_SIZE",
    "CheckReport",
    "CopyStats",
    "Entry",
    "ImageError",
    "ImageFacts",
    "Progress",
    "ProgressTask",
    "check",
    "counter_path_for",
    "create_image",
    "get",
    "info",
    "ls",
    "open_image",
    "parse_size",
    "put",
    "write_key_file",
]

BLOCK_SIZE = 4096  # the block size images are made with (docs/storage-format.md, "Blocks")
# Two superblocks and a few tree and file-system blocks fit in far less, but an image this small
# would hold almost nothing: refuse sizes below it as a likely slip (a missing "M").
MIN_IMAGE_SIZE = 64 << 10

_SIZE_RE = re.compile(r"^\s*(\d+)\s*(?:([KMGTP])(i?B)?|(B))?\s*$", re.IGNORECASE)
_POWERS = {"K": 1, "M": 2, "G": 3, "T": 4, "P": 5}


def parse_size(text: str) -> int:
    """Bytes in ``64M``, ``4G``, ``512MiB``, ``1GB`` or ``1048576``.

    ``K``, ``M``, ``G``, ``T``, ``P`` and ``KiB``, ``MiB``... are powers of 1024, as disk tools use
    them; ``KB``, ``MB``... are powers of 1000. A bare number is bytes.
    """
    m = _SIZE_RE.match(text)
    if m is None:
        raise ImageError(f"size {text!r}: expected a number of bytes or a size like 64M, 4G, 512MiB")
    number, prefix, suffix = int(m.group(1)), m.group(2), m.group(3)
    if prefix is None:
        return number
    base = 1000 if suffix is not None and suffix.upper() == "B" else 1024
    multiplier: int = base ** _POWERS[prefix.upper()]
    return number * multiplier


def counter_path_for(image: Path) -> Path:
    """Where an image's freshness counter lives unless the owner says otherwise: ``IMG.counter``."""
    return image.with_name(image.name + ".counter")


def write_key_file(path: Path, *, overwrite: bool = False) -> None:
    """A fresh random 32-byte image key, written as 64 hex digits and a newline, mode 0600."""
    directory = path.parent
    if not directory.is_dir():
        raise KeyFileError(f"image key {path}: directory {directory} does not exist")
    if path.is_dir():
        raise KeyFileError(f"image key {path}: is a directory")
    if path.exists() and not overwrite:
        raise KeyFileError(f"image key {path}: already exists; not overwriting it")
    tmp = directory / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise KeyFileError(f"image key {path}: cannot write it ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)  # exactly 0600, whatever the umask
            f.write(os.urandom(KEY_SIZE).hex().encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if the name appeared meanwhile: never replaces another file
    except FileExistsError:
        raise KeyFileError(f"image key {path}: already exists; not overwriting it") from None
    except OSError as e:
        raise KeyFileError(f"image key {path}: cannot write it ({e.strerror})") from None
    finally:
        with suppress(FileNotFoundError):
            tmp.unlink()


# --------------------------------------------------------------------------------------- facts


def _mib(blocks: int, block_size: int) -> str:
    return f"{blocks} blocks ({blocks * block_size / (1 << 20):.1f} MiB)"


@dataclass(frozen=True)
class ImageFacts:
    """What ``info`` shows: the public part always; ``store`` and ``files`` only with the key."""

    path: Path
    file_bytes: int
    block_size: int
    blocks: int
    format_version: int | None
    image_id: bytes | None
    slots: tuple[str, ...]  # each slot as seen without the key: "A: superblock", "B: empty"...
    counter_path: Path
    counter: int | None  # None: no counter file
    store: StoreInfo | None = None
    files: int | None = None  # inodes in use

    def rows(self) -> list[tuple[str, str]]:
        rows = [
            ("image", str(self.path)),
            ("file size", f"{self.file_bytes} bytes"),
            ("blocks", f"{self.blocks} of {self.block_size} bytes"),
            (
                "format",
                "not a Haven image" if self.format_version is None else f"version {self.format_version}",
            ),
            ("image id", self.image_id.hex() if self.image_id is not None else "-"),
            ("superblocks", ", ".join(self.slots)),
            (
                "counter",
                f"{self.counter} ({self.counter_path})"
                if self.counter is not None
                else f"absent ({self.counter_path})",
            ),
        ]
        s = self.store
        if s is None:
            rows.append(("contents", "need the key (--key)"))
            return rows
        u = s.usage
        rows += [
            ("version", str(s.version)),
            ("mounted slot", f"{s.slot} (other: {s.other_slot})"),
            ("capacity", _mib(s.capacity, s.block_size)),
            ("used", _mib(u.logical_used, s.block_size) + f", {self.files} inodes"),
            ("physical", f"{u.physical_used} used, {u.physical_free} free, {u.reserve} kept in reserve"),
            ("tree", f"height {s.height}, segments of up to {s.max_span} blocks"),
            ("commit log", f"{s.log_records} records in {s.log_blocks} blocks" if s.log_records else "empty"),
        ]
        return rows


@dataclass(frozen=True)
class CheckReport:
    version: int
    blocks_verified: int
    inodes: int
    files: int
    directories: int
    symlinks: int
    orphans: int

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("version", str(self.version)),
            ("blocks", f"{self.blocks_verified} verified (MACs, the Merkle tree and the commit log)"),
            (
                "file system",
                f"{self.inodes} inodes: {self.files} files, {self.directories} directories, "
                f"{self.symlinks} symlinks, {self.orphans} orphans",
            ),
        ]


# --------------------------------------------------------------------------------------- operations


def _counter(image: Path, counter_path: Path | None) -> Path:
    return counter_path if counter_path is not None else counter_path_for(image)


def _open_device(path: Path, *, writable: bool) -> FileBlockDevice:
    """The image file as a device; anything but a regular file is refused before it is opened (opening
    a FIFO would block, and a directory opens read-only as a one-block "image")."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ImageError(f"image {path}: no such file") from None
    except OSError as e:
        raise ImageError(f"image {path}: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise ImageError(f"image {path}: {'is a directory' if stat.S_ISDIR(mode) else 'not a regular file'}")
    return FileBlockDevice.open(path, BLOCK_SIZE, writable=writable)


def create_image(
    path: Path,
    size: int,
    key: bytes,
    *,
    from_dir: Path | None = None,
    counter_path: Path | None = None,
    progress: Progress | None = None,
    preallocate: bool = False,
) -> ImageFacts:
    """Make a new image file of ``size`` bytes and its counter, optionally holding a copy of ``from_dir``.
    With ``preallocate`` the whole file is written now (zeros), so no commit ever waits for the host
    file system to allocate blocks.

    Refuses to replace an existing image or counter file. On any failure, removes what it made.
    """
    if size % BLOCK_SIZE or size < MIN_IMAGE_SIZE:
        raise ImageError(
            f"image size {size}: must be a multiple of {BLOCK_SIZE} bytes and at least"
            f" {MIN_IMAGE_SIZE >> 10} KiB"
        )
    cpath = _counter(path, counter_path)
    if from_dir is not None:
        if not from_dir.is_dir():
            raise ImageError(f"{from_dir}: not a directory")
        for made_here in (path, cpath):
            if made_here.absolute().parent.resolve().is_relative_to(from_dir.resolve()):
                raise ImageError(f"{made_here}: would be inside {from_dir}, the directory copied into it")
    if cpath.exists():
        raise ImageError(
            f"counter {cpath}: already exists (another image's counter?);"
            " remove it or name another with --counter"
        )
    made: list[Path] = []
    try:
        with ExitStack() as stack:
            if preallocate:
                task = start_task(progress, "preallocating", size, "B")
                stack.callback(task.close)
                done = [0]

                def advance(at: int) -> None:
                    task.update(at - done[0])
                    done[0] = at

                dev = FileBlockDevice.create(path, size // BLOCK_SIZE, BLOCK_SIZE, preallocate=True,
                                             progress=advance)  # fmt: skip
            else:
                dev = FileBlockDevice.create(path, size // BLOCK_SIZE, BLOCK_SIZE)
            made.append(path)
            stack.callback(dev.close)
            counter = FileCounter.create(cpath)
            made.append(cpath)
            store = SecureStore.format(dev, key, counter)
            stack.callback(store.close)
            fs = FileSystem.format(store)
            if from_dir is not None:
                put_contents(fs, from_dir, progress=progress)
            fs.sync()
    except BaseException:
        for p in reversed(made):
            with suppress(OSError):
                p.unlink()
        raise
    return info(path, key, counter_path)


@contextmanager
def open_image(
    path: Path, key: bytes, counter_path: Path | None = None, *, commit: bool = True, writable: bool = True
) -> Iterator[FileSystem]:
    """Mount an image's file system; when the block ends normally and ``commit``, sync it.

    An exception leaves the image as the last sync made it; ``commit=False`` never commits, so the
    image file is left as it was. A writable mount locks the image file exclusively. With
    ``writable=False`` (listing, copying out, checking) the file is opened read-only under a shared
    lock, so several readers can inspect one image at once, and an image file the user may only read
    can be inspected; the file system then refuses every change (EROFS) and nothing is committed.
    """
    with ExitStack() as stack:
        dev = _open_device(path, writable=writable)
        stack.callback(dev.close)
        counter = FileCounter(_counter(path, counter_path))
        store = SecureStore.mount(dev, key, counter)
        stack.callback(store.close)
        fs = FileSystem.mount(store, writable=writable)
        yield fs
        if commit and writable:
            fs.sync()


def check(
    path: Path, key: bytes, counter_path: Path | None = None, *, progress: Progress | None = None
) -> CheckReport:
    """Verify an image completely: superblocks against the counter, every block's MAC and the Merkle
    tree (read back from the file), then the file system's structure. Raises at the first fault
    (:class:`IntegrityError` or, for a damaged file system, its subclass ``FsCorruptError``)."""
    with ExitStack() as stack:
        dev = _open_device(path, writable=False)
        stack.callback(dev.close)
        store = SecureStore.mount(dev, key, FileCounter(_counter(path, counter_path)))
        stack.callback(store.close)
        task = start_task(progress, "check", store.usage().physical_used, "block")
        stack.callback(task.close)
        seen = [0]

        def advance(done: int, total: int) -> None:
            task.update(done - seen[0])
            seen[0] = done

        store.check(advance)
        report = fsck(FileSystem.mount(store, writable=False))
        return CheckReport(
            version=store.version,
            blocks_verified=seen[0],
            inodes=report.inodes,
            files=report.files,
            directories=report.directories,
            symlinks=report.symlinks,
            orphans=report.orphans,
        )


def info(path: Path, key: bytes | None = None, counter_path: Path | None = None) -> ImageFacts:
    """Describe an image: what anyone can read from the file, and with ``key`` what is inside it."""
    cpath = _counter(path, counter_path)
    with _open_device(path, writable=False) as dev:
        raw = dev.read(0, SUPERBLOCK_SLOTS)
        headers = [parse_header(raw[i * BLOCK_SIZE : (i + 1) * BLOCK_SIZE], i, BLOCK_SIZE) for i in range(2)]
        found = [h for h in headers if isinstance(h, SuperblockHeader)]
        counter = FileCounter(cpath).read() if cpath.exists() else None
        facts = ImageFacts(
            path=path,
            file_bytes=dev.size() * BLOCK_SIZE,
            block_size=BLOCK_SIZE,
            blocks=dev.size(),
            format_version=found[0].format_version if found else None,
            image_id=found[0].image_id if found else None,
            slots=tuple(_slot_text(i, h) for i, h in enumerate(headers)),
            counter_path=cpath,
            counter=counter,
        )
        if key is None:
            return facts
        if counter is None:
            raise ImageError(f"counter {cpath}: no such file (name the image's counter with --counter)")
        with SecureStore.mount(dev, key, FileCounter(cpath)) as store:
            files = FileSystem.mount(store, writable=False).statfs().files
            return replace(facts, store=store.info(), files=files)


def _slot_text(slot: int, parsed: SlotState | SuperblockHeader) -> str:
    name = SLOT_NAMES[slot]
    if isinstance(parsed, SuperblockHeader):
        return f"{name}: sealed superblock"
    return f"{name}: {parsed.status}" + (f" ({parsed.reason})" if parsed.reason else "")
