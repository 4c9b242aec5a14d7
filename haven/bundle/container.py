"""The bundle file: a signed enclave image, as the owner ships it and the host loads it.

Layout (all integers little-endian)::

    BundleHeader (64 bytes)    magic "HAVENBDL", version, run count, SECS.SIZE, SSAFRAMESIZE, file size
    SIGSTRUCT (1808 bytes)     as signed by the owner
    RunEntry × count (64 each) name, enclave offset, length, SECINFO.FLAGS, flags, file offset
    data                       each stored run's pages, back to back in run order, to the end of file

A run flagged ZERO_FILL stores no data: its pages are zeros. The file is untrusted input. The
parser refuses every structural lie (sizes, offsets, overlaps, truncation, trailing bytes, a
directory page that disagrees with the runs) but deliberately accepts changed *content*: whether
the measured bytes are the signed ones is for EINIT to decide, against SIGSTRUCT.ENCLAVEHASH.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

from haven.bundle import layout
from haven.bundle.enclave_code import decode_code_archive
from haven.bundle.manifest import Manifest
from haven.errors import BundleError, FormatError, ManifestError
from haven.structs import Struct, field_at
from haven.tee.sgx.image import EnclaveImage, PageRun
from haven.tee.sgx.structs import PAGE_SIZE, PageType, Secinfo, SecinfoFlags, Sigstruct

BUNDLE_MAGIC = b"HAVENBDL"
BUNDLE_VERSION = 1
MAX_RUNS = 64
MAX_BUNDLE_SIZE = 2 << 30
MAX_ENCLAVE_SIZE = 1 << 36  # SECS.SIZE; the zero-filled pages are bounded separately
MAX_ZERO_FILL = 256 << 20  # zero pages materialised on load
MAX_SSAFRAMESIZE = 255

MEASURED = 1  # RunEntry.flags: EEXTEND every page after EADD
ZERO_FILL = 2  # RunEntry.flags: no data in the file; the pages are zeros

# SECINFO.FLAGS a loader may EADD with (SDM Vol. 3D, "Layout of SECINFO Field"): R, W, X and a
# PAGE_TYPE of PT_TCS or PT_REG; PENDING, MODIFIED and PR are set only by EAUG/EMODT/EMODPR.
_PERMS = int(SecinfoFlags.R | SecinfoFlags.W | SecinfoFlags.X)
_PAGE_TYPES = (int(PageType.PT_TCS), int(PageType.PT_REG))


@dataclass
class BundleHeader(Struct):
    SIZE: ClassVar[int] = 64
    magic: bytes = field_at(0, "8s")
    version: int = field_at(8, "<I")
    run_count: int = field_at(12, "<I")
    secs_size: int = field_at(16, "<Q")
    ssaframesize: int = field_at(24, "<I")
    reserved1: bytes = field_at(28, "4s", reserved=True)
    file_size: int = field_at(32, "<Q")
    reserved2: bytes = field_at(40, "24s", reserved=True)


@dataclass
class RunEntry(Struct):
    SIZE: ClassVar[int] = 64
    name: bytes = field_at(0, "16s")
    offset: int = field_at(16, "<Q")
    length: int = field_at(24, "<Q")
    secinfo_flags: int = field_at(32, "<Q")
    flags: int = field_at(40, "<I")
    reserved1: bytes = field_at(44, "4s", reserved=True)
    file_offset: int = field_at(48, "<Q")
    reserved2: bytes = field_at(56, "8s", reserved=True)


TABLE_OFFSET = BundleHeader.SIZE + Sigstruct.SIZE
_S = TypeVar("_S", bound=Struct)


@dataclass(frozen=True)
class Bundle:
    """A signed enclave image. The accessors read through the measured segment directory, never
    through the container's run table, and check each segment against its measured SHA-256."""

    sigstruct: Sigstruct
    image: EnclaveImage

    def directory(self) -> tuple[layout.Segment, ...]:
        return layout.directory_of(self.image)

    def segment(self, name: str) -> bytes:
        """The exact (unpadded) bytes of a content segment, checked against the directory's hash."""
        for s in self.directory():
            if s.name == name:
                if s.zero_fill:
                    raise BundleError(f"segment {name!r} is zero-filled and has no content")
                data = self.image.run(name).data[: s.length]
                if not hmac.compare_digest(hashlib.sha256(data).digest(), s.sha256):
                    raise BundleError(f"segment {name!r} does not match its hash in the segment directory")
                return data
        raise BundleError(f"the bundle has no segment {name!r}")

    def manifest(self) -> Manifest:
        try:
            return Manifest.from_canonical(self.segment(layout.MANIFEST))
        except ManifestError as e:
            raise BundleError(f"bundle manifest: {e}") from None

    def module(self) -> bytes:
        """The application module, checked against the module hash and size the manifest names."""
        data = self.segment(layout.MODULE)
        ref = self.manifest().module
        if len(data) != ref.size or not hmac.compare_digest(hashlib.sha256(data).digest(), ref.sha256):
            raise BundleError("the module segment is not the module the manifest names")
        return data

    def enclave_code(self) -> dict[str, bytes]:
        return decode_code_archive(self.segment(layout.CODE))

    def mrenclave(self) -> bytes:
        """MRENCLAVE computed from the image (not read from SIGSTRUCT)."""
        return self.image.mrenclave()


def encode_bundle(bundle: Bundle) -> bytes:
    image = bundle.image
    table: list[bytes] = []
    data: list[bytes] = []
    cursor = TABLE_OFFSET + RunEntry.SIZE * len(image.runs)
    for run in image.runs:
        zero = run.data == bytes(len(run.data))
        table.append(
            RunEntry(
                name=layout.encode_name(run.name),
                offset=run.offset,
                length=len(run.data),
                secinfo_flags=run.secinfo.flags,
                flags=(MEASURED if run.measured else 0) | (ZERO_FILL if zero else 0),
                file_offset=cursor,
            ).to_bytes()
        )
        if not zero:
            data.append(run.data)
            cursor += len(run.data)
    header = BundleHeader(
        magic=BUNDLE_MAGIC,
        version=BUNDLE_VERSION,
        run_count=len(image.runs),
        secs_size=image.size,
        ssaframesize=image.ssaframesize,
        file_size=cursor,
    )
    return b"".join([header.to_bytes(), bundle.sigstruct.to_bytes(), *table, *data])


def parse_bundle(data: bytes) -> Bundle:
    """Parse bundle bytes (hostile input): every structural fault is a one-line BundleError."""
    view = memoryview(data)
    if len(view) < TABLE_OFFSET:
        raise BundleError(f"truncated: {len(view)} bytes is shorter than the header and SIGSTRUCT")
    if bytes(view[:8]) != BUNDLE_MAGIC:
        raise BundleError("not a Haven bundle (bad magic)")
    header = _parse(BundleHeader, view[: BundleHeader.SIZE], "header")
    if header.version != BUNDLE_VERSION:
        raise BundleError(
            f"bundle format version {header.version} is not supported (expected {BUNDLE_VERSION})"
        )
    if header.file_size != len(view):
        what = "truncated" if len(view) < header.file_size else "trailing bytes"
        raise BundleError(f"{what}: the file is {len(view)} bytes, its header says {header.file_size}")
    if not 0 < header.run_count <= MAX_RUNS:
        raise BundleError(f"run count {header.run_count} is out of range 1..{MAX_RUNS}")
    size = header.secs_size
    if size < PAGE_SIZE or size & (size - 1) or size > MAX_ENCLAVE_SIZE:
        raise BundleError(
            f"SECS.SIZE {size:#x} is not a power of two between one page and {MAX_ENCLAVE_SIZE:#x}"
        )
    if not 0 < header.ssaframesize <= MAX_SSAFRAMESIZE:
        raise BundleError(f"SSAFRAMESIZE {header.ssaframesize} is out of range 1..{MAX_SSAFRAMESIZE}")
    sigstruct = _parse(Sigstruct, view[BundleHeader.SIZE : TABLE_OFFSET], "SIGSTRUCT")

    cursor = TABLE_OFFSET + RunEntry.SIZE * header.run_count
    if cursor > len(view):
        raise BundleError("truncated: the run table runs past the end of the file")
    runs: list[PageRun] = []
    names: set[str] = set()
    enclave_at = 0
    zero_total = 0
    for i in range(header.run_count):
        at = TABLE_OFFSET + i * RunEntry.SIZE
        entry = _parse(RunEntry, view[at : at + RunEntry.SIZE], f"run {i}")
        name = layout.decode_name(entry.name, f"run {i}")
        what = f"run {i} ({name})"
        if name in names:
            raise BundleError(f"{what}: a run of this name comes earlier")
        names.add(name)
        if entry.offset % PAGE_SIZE or entry.length % PAGE_SIZE or not entry.length:
            raise BundleError(
                f"{what}: offset {entry.offset:#x} or length {entry.length:#x} is not whole pages"
            )
        if entry.offset < enclave_at:
            raise BundleError(f"{what}: overlaps or precedes the run before it")
        if entry.offset + entry.length > size:
            raise BundleError(f"{what}: ends beyond SECS.SIZE {size:#x}")
        enclave_at = entry.offset + entry.length
        page_type = (entry.secinfo_flags >> 8) & 0xFF
        if entry.secinfo_flags & ~(_PERMS | 0xFF00) or page_type not in _PAGE_TYPES:
            raise BundleError(
                f"{what}: SECINFO.FLAGS {entry.secinfo_flags:#x} is not one a loader may EADD with"
            )
        if entry.flags & ~(MEASURED | ZERO_FILL):
            raise BundleError(f"{what}: unknown flags {entry.flags:#x}")
        if entry.file_offset != cursor:
            raise BundleError(f"{what}: data at file offset {entry.file_offset:#x}, expected {cursor:#x}")
        if entry.flags & ZERO_FILL:
            zero_total += entry.length
            if zero_total > MAX_ZERO_FILL:
                raise BundleError(f"{what}: more than {MAX_ZERO_FILL} bytes of zero-filled pages")
            pages = bytes(entry.length)
        else:
            if cursor + entry.length > len(view):
                raise BundleError(f"truncated: {what} data runs past the end of the file")
            pages = bytes(view[cursor : cursor + entry.length])
            cursor += entry.length
        runs.append(
            PageRun(
                entry.offset, pages, Secinfo(flags=entry.secinfo_flags), bool(entry.flags & MEASURED), name
            )
        )
    if cursor != len(view):
        raise BundleError(f"{len(view) - cursor} bytes after the last run's data")
    try:
        image = EnclaveImage(size=size, ssaframesize=header.ssaframesize, runs=tuple(runs))
    except FormatError as e:
        raise BundleError(str(e)) from None
    layout.directory_of(image)
    return Bundle(sigstruct=sigstruct, image=image)


def _parse(cls: type[_S], raw: memoryview, what: str) -> _S:
    try:
        return cls.from_bytes(bytes(raw))
    except FormatError as e:
        raise BundleError(f"{what}: {e}") from None


def read_bundle(path: Path) -> Bundle:
    path = Path(path)
    try:
        # stat before open: opening a FIFO would block, and a directory has nothing to read.
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise BundleError(f"{path}: not a regular file")
        if st.st_size > MAX_BUNDLE_SIZE:
            raise BundleError(f"{path}: {st.st_size} bytes is larger than a bundle may be")
        with open(path, "rb") as f:
            data = f.read(MAX_BUNDLE_SIZE + 1)
    except OSError as e:
        raise BundleError(f"{path}: cannot read it ({e.strerror or type(e).__name__})") from None
    try:
        return parse_bundle(data)
    except BundleError as e:
        raise BundleError(f"{path}: {e}") from None


def write_bundle(bundle: Bundle, path: Path) -> None:
    """Write atomically: a temporary file in the same directory, flushed, then renamed into place."""
    path = Path(path)
    data = encode_bundle(bundle)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise BundleError(f"{path}: cannot write it ({e.strerror or type(e).__name__})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
