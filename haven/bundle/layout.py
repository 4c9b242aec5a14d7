"""Where each part of a Haven enclave goes: the pages, their SECINFO, and the measured segment directory.

Enclave layout (offsets within ELRANGE)::

    0x0000  TCS                 PT_TCS            measured
    0x1000  SSA, 2 frames       PT_REG  R|W       measured (zeros)
    0x3000  segment directory   PT_REG  R         measured
    0x4000  haven               PT_REG  R|X       measured   the enclave-side code archive
    ...     wasmtime            PT_REG  R|X       measured   the wasmtime native library
    ...     manifest            PT_REG  R         measured   the canonical manifest
    ...     module              PT_REG  R         measured   the application module
    ...     heap                PT_REG  R|W       EADDed, not EEXTENDed (zero-filled by the enclave)

The enclave finds its parts through the segment directory, which is itself measured, so nothing it
learns about its own layout comes from the host's container file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from haven.errors import BundleError, FormatError
from haven.structs import Struct, field_at
from haven.tee.sgx.image import EnclaveImage, PageRun, enclave_size_for, pad_to_pages
from haven.tee.sgx.structs import PAGE_SIZE, PageType, Secinfo, SecinfoFlags, Tcs

# SDM Vol. 3D, "Layout of SECS": SSAFRAMESIZE counts pages; one page holds the GPRSGX area and a
# legacy (x87/SSE, XFRM = 3) XSAVE area. Two frames allow one nested exception.
SSAFRAMESIZE = 1
NSSA = 2
TCS_OFFSET = 0
SSA_OFFSET = TCS_OFFSET + PAGE_SIZE
DIRECTORY_OFFSET = SSA_OFFSET + NSSA * SSAFRAMESIZE * PAGE_SIZE
SEGMENTS_OFFSET = DIRECTORY_OFFSET + PAGE_SIZE
HEAP_SIZE = 16 * PAGE_SIZE

# The names of the page runs, in build order; the last four are listed in the directory with the heap.
TCS, SSA, DIRECTORY, HEAP = "tcs", "ssa", "directory", "heap"
CODE, WASMTIME, MANIFEST, MODULE = "haven", "wasmtime", "manifest", "module"
CONTENT_SEGMENTS = (CODE, WASMTIME, MANIFEST, MODULE)

_R, _W, _X = SecinfoFlags.R, SecinfoFlags.W, SecinfoFlags.X
SEGMENT_PERMS = {CODE: _R | _X, WASMTIME: _R | _X, MANIFEST: _R, MODULE: _R}

DIRECTORY_MAGIC = b"HAVENDIR"
DIRECTORY_VERSION = 1
ZERO_FILL = 1  # DirectoryEntry.flags: not measured; the enclave zeroes it before use


@dataclass
class DirectoryHeader(Struct):
    """First 64 bytes of the segment directory page."""

    SIZE: ClassVar[int] = 64
    magic: bytes = field_at(0, "8s")
    version: int = field_at(8, "<I")
    count: int = field_at(12, "<I")
    reserved: bytes = field_at(16, "48s", reserved=True)


@dataclass
class DirectoryEntry(Struct):
    """One segment: NUL-padded name, enclave offset, exact (unpadded) length, SHA-256 of those bytes."""

    SIZE: ClassVar[int] = 80
    name: bytes = field_at(0, "16s")
    offset: int = field_at(16, "<Q")
    length: int = field_at(24, "<Q")
    flags: int = field_at(32, "<I")
    reserved: bytes = field_at(36, "12s", reserved=True)
    sha256: bytes = field_at(48, "32s")


MAX_DIRECTORY_ENTRIES = (PAGE_SIZE - DirectoryHeader.SIZE) // DirectoryEntry.SIZE


@dataclass(frozen=True)
class Segment:
    name: str
    offset: int
    length: int
    sha256: bytes
    zero_fill: bool


def encode_name(name: str) -> bytes:
    raw = name.encode("ascii")
    if not raw or len(raw) > 16:
        raise FormatError(f"segment name {name!r} must be 1-16 ASCII characters")
    return raw.ljust(16, b"\0")


def decode_name(raw: bytes, what: str) -> str:
    name = raw.rstrip(b"\0")
    if not name or b"\0" in name or not all(0x21 <= ch < 0x7F for ch in name):
        raise BundleError(f"{what}: invalid name {raw!r}")
    return name.decode("ascii")


def encode_directory(segments: Sequence[Segment]) -> bytes:
    if len(segments) > MAX_DIRECTORY_ENTRIES:
        raise FormatError(f"{len(segments)} segments do not fit in one directory page")
    out = [DirectoryHeader(magic=DIRECTORY_MAGIC, version=DIRECTORY_VERSION, count=len(segments)).to_bytes()]
    for s in segments:
        out.append(
            DirectoryEntry(
                name=encode_name(s.name),
                offset=s.offset,
                length=s.length,
                flags=ZERO_FILL if s.zero_fill else 0,
                sha256=s.sha256,
            ).to_bytes()
        )
    return pad_to_pages(b"".join(out))


def decode_directory(page: bytes) -> tuple[Segment, ...]:
    """Parse the directory page strictly: every byte is either a declared field or zero."""
    if len(page) != PAGE_SIZE:
        raise BundleError(f"segment directory is {len(page)} bytes, not one page")
    try:
        header = DirectoryHeader.from_bytes(page[: DirectoryHeader.SIZE])
    except FormatError as e:
        raise BundleError(f"segment directory: {e}") from None
    if header.magic != DIRECTORY_MAGIC or header.version != DIRECTORY_VERSION:
        raise BundleError("segment directory: bad magic or version")
    if not 0 < header.count <= MAX_DIRECTORY_ENTRIES:
        raise BundleError(f"segment directory: {header.count} entries")
    end = DirectoryHeader.SIZE + header.count * DirectoryEntry.SIZE
    if any(page[end:]):
        raise BundleError("segment directory: bytes after the last entry are not zero")
    segments = []
    names: set[str] = set()
    for i in range(header.count):
        at = DirectoryHeader.SIZE + i * DirectoryEntry.SIZE
        try:
            entry = DirectoryEntry.from_bytes(page[at : at + DirectoryEntry.SIZE])
        except FormatError as e:
            raise BundleError(f"segment directory entry {i}: {e}") from None
        name = decode_name(entry.name, f"segment directory entry {i}")
        if name in names:
            raise BundleError(f"segment directory: segment {name!r} listed twice")
        if entry.flags & ~ZERO_FILL:
            raise BundleError(f"segment directory: {name!r} has unknown flags {entry.flags:#x}")
        zero = bool(entry.flags & ZERO_FILL)
        if zero and any(entry.sha256):
            raise BundleError(f"segment directory: zero-filled {name!r} carries a hash")
        names.add(name)
        segments.append(Segment(name, entry.offset, entry.length, entry.sha256, zero))
    return tuple(segments)


def tcs_page(entry: int) -> bytes:
    """The TCS (SDM Vol. 3D, "Layout of Thread Control Structure"): OSSA points at the SSA frames and
    OENTRY at the code segment. FSLIMIT/GSLIMIT only matter in 32-bit mode; one page, as loaders set."""
    return Tcs(ossa=SSA_OFFSET, nssa=NSSA, cssa=0, oentry=entry, fslimit=0xFFF, gslimit=0xFFF).to_bytes()


def build_image(contents: dict[str, bytes]) -> EnclaveImage:
    """Lay out the four content segments (``CONTENT_SEGMENTS``, all required) and the fixed pages."""
    if sorted(contents) != sorted(CONTENT_SEGMENTS):
        raise FormatError(f"an enclave needs exactly the segments {', '.join(CONTENT_SEGMENTS)}")
    at = SEGMENTS_OFFSET
    segment_runs: list[PageRun] = []
    directory: list[Segment] = []
    for name in CONTENT_SEGMENTS:
        data = contents[name]
        if not data:
            raise FormatError(f"segment {name!r} is empty")
        padded = pad_to_pages(data)
        secinfo = Secinfo.for_page(PageType.PT_REG, SEGMENT_PERMS[name])
        segment_runs.append(PageRun(at, padded, secinfo, measured=True, name=name))
        directory.append(Segment(name, at, len(data), hashlib.sha256(data).digest(), zero_fill=False))
        at += len(padded)
    heap_run = PageRun(
        at, bytes(HEAP_SIZE), Secinfo.for_page(PageType.PT_REG, _R | _W), measured=False, name=HEAP
    )
    directory.append(Segment(HEAP, at, HEAP_SIZE, bytes(32), zero_fill=True))
    runs = (
        PageRun(TCS_OFFSET, tcs_page(SEGMENTS_OFFSET), Secinfo.for_page(PageType.PT_TCS), name=TCS),
        PageRun(
            SSA_OFFSET,
            bytes(NSSA * SSAFRAMESIZE * PAGE_SIZE),
            Secinfo.for_page(PageType.PT_REG, _R | _W),
            name=SSA,
        ),
        PageRun(
            DIRECTORY_OFFSET,
            encode_directory(directory),
            Secinfo.for_page(PageType.PT_REG, _R),
            name=DIRECTORY,
        ),
        *segment_runs,
        heap_run,
    )
    return EnclaveImage(size=enclave_size_for(heap_run.end), ssaframesize=SSAFRAMESIZE, runs=runs)


def directory_of(image: EnclaveImage) -> tuple[Segment, ...]:
    """The directory of an image, checked against its page runs: each segment is the run of the same
    name, starts where it starts, and its exact length pads to the run's length."""
    try:
        page = image.run(DIRECTORY).data
    except KeyError:
        raise BundleError("the enclave has no segment directory") from None
    if image.run(DIRECTORY).offset != DIRECTORY_OFFSET:
        raise BundleError(f"the segment directory is not at {DIRECTORY_OFFSET:#x}")
    segments = decode_directory(page)
    listed = {s.name for s in segments}
    for name in (*CONTENT_SEGMENTS, HEAP):
        if name not in listed:
            raise BundleError(f"segment directory: no {name!r} segment")
    for s in segments:
        try:
            run = image.run(s.name)
        except KeyError:
            raise BundleError(f"segment directory: {s.name!r} has no page run") from None
        if run.offset != s.offset or not len(run.data) - PAGE_SIZE < s.length <= len(run.data):
            raise BundleError(f"segment directory: {s.name!r} does not match its page run")
        if s.zero_fill == run.measured:
            raise BundleError(f"segment directory: {s.name!r} is zero-filled if and only if it is unmeasured")
    return segments
