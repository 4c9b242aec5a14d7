"""The bundle file and the code archive as hostile input: every structural lie is one clear BundleError."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from haven.bundle import layout
from haven.bundle.build import build_bundle
from haven.bundle.container import (
    MEASURED,
    TABLE_OFFSET,
    ZERO_FILL,
    Bundle,
    BundleHeader,
    RunEntry,
    encode_bundle,
    parse_bundle,
    read_bundle,
    write_bundle,
)
from haven.bundle.enclave_code import ArchiveEntry, ArchiveHeader, decode_code_archive, encode_code_archive
from haven.errors import BundleError, FormatError
from haven.tee.sgx.sigstruct import generate_signing_key
from haven.tee.sgx.structs import PAGE_SIZE, PageType, SecinfoFlags, Sigstruct
from tests.bundle_helpers import make_app


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return build_bundle(make_app(tmp_path_factory.mktemp("app")), generate_signing_key())


@pytest.fixture(scope="module")
def encoded(bundle: Bundle) -> bytes:
    return encode_bundle(bundle)


# --- the container parser: every structural lie is a BundleError ------------------------------------


def _header(data: bytes, **changes: int | bytes) -> bytes:
    h = BundleHeader.from_bytes(data[: BundleHeader.SIZE]).replace(**changes)
    return h.to_bytes() + data[BundleHeader.SIZE :]


def _entry(data: bytes, i: int) -> RunEntry:
    at = TABLE_OFFSET + i * RunEntry.SIZE
    return RunEntry.from_bytes(data[at : at + RunEntry.SIZE])


def _run(data: bytes, i: int, **changes: int | bytes) -> bytes:
    at = TABLE_OFFSET + i * RunEntry.SIZE
    return data[:at] + _entry(data, i).replace(**changes).to_bytes() + data[at + RunEntry.SIZE :]


def _index(data: bytes, name: str) -> int:
    for i in range(BundleHeader.from_bytes(data[: BundleHeader.SIZE]).run_count):
        if _entry(data, i).name.rstrip(b"\0") == name.encode():
            return i
    raise KeyError(name)


def _directory(data: bytes, change: Callable[[bytearray], None]) -> bytes:
    """Edit the directory page where the file stores it."""
    at = _entry(data, _index(data, "directory")).file_offset
    page = bytearray(data[at : at + PAGE_SIZE])
    change(page)
    return data[:at] + bytes(page) + data[at + PAGE_SIZE :]


def _dir_entry(page: bytearray, i: int, **changes: int | bytes) -> None:
    at = layout.DirectoryHeader.SIZE + i * layout.DirectoryEntry.SIZE
    entry = layout.DirectoryEntry.from_bytes(bytes(page[at : at + layout.DirectoryEntry.SIZE]))
    page[at : at + layout.DirectoryEntry.SIZE] = entry.replace(**changes).to_bytes()


def _dir_header(page: bytearray, **changes: int | bytes) -> None:
    h = layout.DirectoryHeader.from_bytes(bytes(page[: layout.DirectoryHeader.SIZE]))
    page[: layout.DirectoryHeader.SIZE] = h.replace(**changes).to_bytes()


def _module_entry(page: bytearray) -> int:
    return [s.name for s in layout.decode_directory(bytes(page))].index("module")


def _sig_reserved(d: bytes) -> bytes:
    at = BundleHeader.SIZE + Sigstruct.offset_of("reserved1")
    return d[:at] + b"\x01" + d[at + 1 :]


def _grow_heap(d: bytes) -> bytes:
    i = _index(d, "heap")
    return _header(_run(d, i, length=512 << 20), secs_size=1 << 30)


def _extra_dir_entry(page: bytearray) -> None:
    _dir_header(page, count=6)
    at = layout.DirectoryHeader.SIZE + 5 * layout.DirectoryEntry.SIZE
    page[at : at + layout.DirectoryEntry.SIZE] = layout.DirectoryEntry(
        name=layout.encode_name("extra"), offset=1 << 20, length=1, sha256=bytes(32)
    ).to_bytes()


def _drop_heap_entry(page: bytearray) -> None:
    _dir_header(page, count=4)
    at = layout.DirectoryHeader.SIZE + 4 * layout.DirectoryEntry.SIZE
    page[at : at + layout.DirectoryEntry.SIZE] = bytes(layout.DirectoryEntry.SIZE)


PT_REG_R = (int(PageType.PT_REG) << 8) | int(SecinfoFlags.R)

LIES: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "empty": (lambda d: b"", "truncated"),
    "bad-magic": (lambda d: b"NOTHAVEN" + d[8:], "not a Haven bundle"),
    "version": (lambda d: _header(d, version=2), "format version 2 is not supported"),
    "header-reserved": (
        lambda d: _header(d, reserved2=b"\x01" + bytes(23)),
        "header: BundleHeader.reserved2: reserved",
    ),
    "truncated-in-header": (lambda d: d[:40], "truncated"),
    "truncated": (lambda d: d[:-1], "truncated: the file is"),
    "trailing-bytes": (lambda d: d + b"\0", "trailing bytes"),
    "run-count-zero": (lambda d: _header(d, run_count=0), "run count 0 is out of range"),
    "run-count-huge": (lambda d: _header(d, run_count=1 << 30), "is out of range 1..64"),
    "secs-size-not-power-of-two": (
        lambda d: _header(d, secs_size=(1 << 26) + PAGE_SIZE),
        "is not a power of two",
    ),
    "secs-size-huge": (lambda d: _header(d, secs_size=1 << 40), "is not a power of two between"),
    "secs-size-too-small": (lambda d: _header(d, secs_size=4 * PAGE_SIZE), "ends beyond SECS.SIZE"),
    "ssaframesize-zero": (lambda d: _header(d, ssaframesize=0), "SSAFRAMESIZE 0 is out of range"),
    "sigstruct-reserved": (_sig_reserved, "SIGSTRUCT: Sigstruct.reserved1: reserved bytes"),
    "run-name-empty": (lambda d: _run(d, 0, name=bytes(16)), "run 0: invalid name"),
    "run-name-control": (lambda d: _run(d, 0, name=b"t\x01s".ljust(16, b"\0")), "run 0: invalid name"),
    "run-name-inner-nul": (lambda d: _run(d, 0, name=b"t\0s".ljust(16, b"\0")), "run 0: invalid name"),
    "run-name-duplicate": (
        lambda d: _run(d, 1, name=layout.encode_name("tcs")),
        "run 1 (tcs): a run of this name",
    ),
    "run-misaligned": (lambda d: _run(d, 1, offset=PAGE_SIZE + 8), "is not whole pages"),
    "run-length-odd": (lambda d: _run(d, 1, length=PAGE_SIZE + 1), "is not whole pages"),
    "run-length-zero": (lambda d: _run(d, 1, length=0), "is not whole pages"),
    "runs-overlap": (lambda d: _run(d, 1, offset=0), "overlaps or precedes"),
    "secinfo-secs-type": (
        lambda d: _run(d, 2, secinfo_flags=int(SecinfoFlags.R)),
        "SECINFO.FLAGS 0x1 is not one",
    ),
    "secinfo-pending": (
        lambda d: _run(d, 2, secinfo_flags=PT_REG_R | int(SecinfoFlags.PENDING)),
        "SECINFO.FLAGS",
    ),
    "secinfo-high-bits": (lambda d: _run(d, 2, secinfo_flags=PT_REG_R | 1 << 40), "SECINFO.FLAGS"),
    "run-unknown-flags": (lambda d: _run(d, 2, flags=MEASURED | 4), "unknown flags 0x5"),
    "run-reserved": (lambda d: _run(d, 2, reserved2=b"\x01" + bytes(7)), "RunEntry.reserved2: reserved"),
    "file-offset-lie": (
        lambda d: _run(d, 3, file_offset=_entry(d, 3).file_offset + 1),
        "data at file offset",
    ),
    "zero-fill-lie": (lambda d: _run(d, 3, flags=MEASURED | ZERO_FILL), "data at file offset"),
    "zero-fill-too-large": (_grow_heap, "zero-filled pages"),
    "no-directory": (lambda d: _run(d, 2, name=layout.encode_name("dir")), "no segment directory"),
    "directory-bad-magic": (
        lambda d: _directory(d, lambda p: p.__setitem__(0, 0x41)),
        "segment directory: bad magic",
    ),
    "directory-bad-count": (
        lambda d: _directory(d, lambda p: _dir_header(p, count=0)),
        "segment directory: 0 entries",
    ),
    "directory-reserved": (
        lambda d: _directory(d, lambda p: _dir_header(p, reserved=b"\x01" + bytes(47))),
        "reserved",
    ),
    "directory-trailing": (
        lambda d: _directory(d, lambda p: p.__setitem__(PAGE_SIZE - 1, 1)),
        "after the last entry",
    ),
    "directory-length-lie": (
        lambda d: _directory(d, lambda p: _dir_entry(p, _module_entry(p), length=1 << 20)),
        "'module' does not match its page run",
    ),
    "directory-offset-lie": (
        lambda d: _directory(d, lambda p: _dir_entry(p, _module_entry(p), offset=0)),
        "'module' does not match its page run",
    ),
    "directory-zero-fill-lie": (
        lambda d: _directory(d, lambda p: _dir_entry(p, _module_entry(p), flags=1)),
        "carries a hash",
    ),
    "directory-unknown-flags": (
        lambda d: _directory(d, lambda p: _dir_entry(p, 0, flags=2)),
        "unknown flags",
    ),
    "directory-duplicate": (
        lambda d: _directory(d, lambda p: _dir_entry(p, 1, name=layout.encode_name("haven"))),
        "listed twice",
    ),
    "directory-bad-name": (
        lambda d: _directory(d, lambda p: _dir_entry(p, 1, name=bytes(16))),
        "invalid name",
    ),
    "directory-missing-segment": (lambda d: _directory(d, _drop_heap_entry), "no 'heap' segment"),
    "directory-extra-segment": (lambda d: _directory(d, _extra_dir_entry), "'extra' has no page run"),
    "heap-measured": (
        lambda d: _run(d, _index(d, "heap"), flags=MEASURED | ZERO_FILL),
        "if and only if it is unmeasured",
    ),
}


@pytest.mark.parametrize("case", sorted(LIES))
def test_each_structural_lie_is_caught(encoded: bytes, case: str) -> None:
    lie, expected = LIES[case]
    data = lie(encoded)
    assert data != encoded
    with pytest.raises(BundleError) as e:
        parse_bundle(data)
    assert expected in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def _boundaries(data: bytes) -> list[int]:
    cuts = {BundleHeader.SIZE, TABLE_OFFSET, TABLE_OFFSET + RunEntry.SIZE}
    for i in range(BundleHeader.from_bytes(data[: BundleHeader.SIZE]).run_count):
        e = _entry(data, i)
        cuts |= {e.file_offset, e.file_offset + PAGE_SIZE // 2}
        if not e.flags & ZERO_FILL:
            cuts.add(e.file_offset + e.length - 1)
    return sorted(c for c in cuts if c < len(data))


def test_truncation_at_every_run_boundary(encoded: bytes) -> None:
    cuts = _boundaries(encoded)
    assert len(cuts) > 15
    for cut in cuts:
        with pytest.raises(BundleError, match="truncated"):
            parse_bundle(encoded[:cut])
        if cut >= BundleHeader.SIZE:
            # A header that agrees with the short file: the run table or the runs must still catch it.
            with pytest.raises(BundleError, match=r"truncated|past the end"):
                parse_bundle(_header(encoded[:cut], file_size=cut))


def test_parse_accepts_the_encoding(encoded: bytes, bundle: Bundle) -> None:
    assert parse_bundle(encoded) == bundle
    assert encode_bundle(parse_bundle(encoded)) == encoded
    zero_filled = [e.name for e in (_entry(encoded, i) for i in range(8)) if e.flags & ZERO_FILL]
    assert [n.rstrip(b"\0") for n in zero_filled] == [b"ssa", b"heap"]


def test_read_bundle_errors(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot read"):
        read_bundle(tmp_path / "missing.bundle")
    with pytest.raises(BundleError, match="not a regular file"):
        read_bundle(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(BundleError, match="not a regular file"):
        read_bundle(fifo)  # refused without opening it (which would block)
    huge = tmp_path / "huge.bundle"
    with open(huge, "wb") as f:
        f.truncate(3 << 30)  # sparse: refused by size before anything is read
    with pytest.raises(BundleError, match="larger than a bundle may be"):
        read_bundle(huge)
    (tmp_path / "text.bundle").write_text("hello")
    with pytest.raises(BundleError, match=r"text\.bundle: truncated"):
        read_bundle(tmp_path / "text.bundle")


def test_write_bundle_error(bundle: Bundle, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot write"):
        write_bundle(bundle, tmp_path / "no" / "such" / "dir.bundle")


# --- the code archive ------------------------------------------------------------------------------


def test_archive_round_trip_and_determinism() -> None:
    files = {"b/x.py": b"x", "a.py": b"", "b/a.py": b"\0" * 5}
    data = encode_code_archive(files)
    assert data == encode_code_archive(dict(reversed(list(files.items()))))
    assert decode_code_archive(data) == files
    assert list(decode_code_archive(data)) == ["a.py", "b/a.py", "b/x.py"]


def _archive_entry_at(data: bytes, n: int) -> int:
    at = ArchiveHeader.SIZE
    for _ in range(n):
        e = ArchiveEntry.from_bytes(data[at : at + ArchiveEntry.SIZE])
        at += ArchiveEntry.SIZE + e.path_length + e.data_length
    return at


def _patch_entry(data: bytes, n: int, **changes: int) -> bytes:
    at = _archive_entry_at(data, n)
    e = ArchiveEntry.from_bytes(data[at : at + ArchiveEntry.SIZE]).replace(**changes)
    return data[:at] + e.to_bytes() + data[at + ArchiveEntry.SIZE :]


ARCHIVE = encode_code_archive({"a.py": b"aa", "b.py": b"bb"})
ARCHIVE_LIES: dict[str, tuple[bytes, str]] = {
    "short": (ARCHIVE[:10], "ArchiveHeader"),
    "magic": (b"X" + ARCHIVE[1:], "bad magic"),
    "count": (ArchiveHeader(magic=b"HAVENPYA", version=1, count=1 << 20).to_bytes(), "more than"),
    "trailing": (ARCHIVE + b"\0", "bytes after the last file"),
    "truncated": (ARCHIVE[:-1], "runs past the end"),
    "data-length-lie": (_patch_entry(ARCHIVE, 1, data_length=1 << 40), "runs past the end"),
    "empty-path": (_patch_entry(ARCHIVE, 0, path_length=0), "runs past the end"),
    "order": (ARCHIVE.replace(b"b.py", b"a.py"), "out of order or repeated"),
    "dotdot": (ARCHIVE.replace(b"b.py", b"../b"), "not a relative path|not normalised"),
    "absolute": (ARCHIVE.replace(b"b.py", b"/b.p"), "not a relative path"),
    "not-utf8": (ARCHIVE.replace(b"b.py", b"\xff.py"), "invalid start byte"),
    "reserved": (ARCHIVE[:16] + b"\x01" + ARCHIVE[17:], "reserved"),
}


@pytest.mark.parametrize("case", sorted(ARCHIVE_LIES))
def test_archive_lies(case: str) -> None:
    data, expected = ARCHIVE_LIES[case]
    with pytest.raises(BundleError, match=expected):
        decode_code_archive(data)


def test_archive_refuses_bad_paths_when_writing() -> None:
    for bad in ("", "/abs.py", "a/../b.py", "a//b.py", "./a.py"):
        with pytest.raises(FormatError):
            encode_code_archive({bad: b""})


def test_layout_needs_every_segment() -> None:
    with pytest.raises(FormatError, match="exactly the segments"):
        layout.build_image({"haven": b"x"})
    with pytest.raises(FormatError, match="is empty"):
        layout.build_image({"haven": b"x", "wasmtime": b"y", "manifest": b"", "module": b"m"})
