"""The structure tables: sizes and offsets from the Intel SDM, and strict parsing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from haven.errors import FormatError
from haven.structs import Struct, field_at
from haven.tee.sgx.structs import (
    AttributeFlags,
    Attributes,
    KeyRequest,
    PageType,
    Report,
    ReportBody,
    Secinfo,
    SecinfoFlags,
    Secs,
    Sigstruct,
    TargetInfo,
    Tcs,
)

# (structure, size, {field: offset}) — the SDM Vol. 3D layout tables, and Intel's sgx_report.h /
# sgx_css.h, which give the same offsets.
LAYOUTS: list[tuple[type[Struct], int, dict[str, int]]] = [
    (Attributes, 16, {"flags": 0, "xfrm": 8}),
    (Secs, 4096, {"size": 0, "baseaddr": 8, "ssaframesize": 16, "miscselect": 20, "attributes": 48,
                  "mrenclave": 64, "mrsigner": 128, "configid": 192, "isvprodid": 256, "isvsvn": 258,
                  "configsvn": 260}),
    (Tcs, 4096, {"flags": 8, "ossa": 16, "cssa": 24, "nssa": 28, "oentry": 32, "ofsbase": 48,
                 "ogsbase": 56, "fslimit": 64, "gslimit": 68}),
    (Secinfo, 64, {"flags": 0}),
    (Sigstruct, 1808, {"header": 0, "vendor": 16, "date": 20, "header2": 24, "swdefined": 40,
                       "modulus": 128, "exponent": 512, "signature": 516, "miscselect": 900,
                       "miscmask": 904, "isvfamilyid": 912, "attributes": 928, "attributemask": 944,
                       "enclavehash": 960, "isvextprodid": 1008, "isvprodid": 1024, "isvsvn": 1026,
                       "q1": 1040, "q2": 1424}),
    (ReportBody, 384, {"cpusvn": 0, "miscselect": 16, "isvextprodid": 32, "attributes": 48,
                       "mrenclave": 64, "mrsigner": 128, "configid": 192, "isvprodid": 256,
                       "isvsvn": 258, "configsvn": 260, "isvfamilyid": 304, "reportdata": 320}),
    (Report, 432, {"body": 0, "keyid": 384, "mac": 416}),
    (TargetInfo, 512, {"measurement": 0, "attributes": 32, "configsvn": 50, "miscselect": 52,
                       "configid": 64}),
    (KeyRequest, 512, {"keyname": 0, "keypolicy": 2, "isvsvn": 4, "cpusvn": 8, "attributemask": 24,
                       "keyid": 40, "miscmask": 72, "configsvn": 76}),
]


@pytest.mark.parametrize(("cls", "size", "offsets"), LAYOUTS, ids=[c.__name__ for c, _, _ in LAYOUTS])
def test_layout_matches_the_sdm(cls: type[Struct], size: int, offsets: dict[str, int]) -> None:
    assert cls.SIZE == size
    assert len(cls().to_bytes()) == size
    for name, offset in offsets.items():
        assert cls.offset_of(name) == offset, name


def test_round_trip_places_each_field_at_its_offset() -> None:
    body = ReportBody(
        cpusvn=bytes(range(16)),
        miscselect=0x01020304,
        attributes=Attributes(flags=AttributeFlags.INIT | AttributeFlags.MODE64BIT, xfrm=3),
        mrenclave=b"\xaa" * 32,
        mrsigner=b"\xbb" * 32,
        isvprodid=0x1234,
        isvsvn=0x5678,
        reportdata=b"\xcc" * 64,
    )
    raw = body.to_bytes()
    assert raw[0:16] == bytes(range(16))
    assert raw[16:20] == bytes([4, 3, 2, 1])
    assert raw[48] == 0x05 and raw[56] == 3
    assert raw[64:96] == b"\xaa" * 32 and raw[128:160] == b"\xbb" * 32
    assert raw[256:260] == bytes([0x34, 0x12, 0x78, 0x56])
    assert raw[320:384] == b"\xcc" * 64
    assert ReportBody.from_bytes(raw) == body


@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_length_is_refused(delta: int) -> None:
    with pytest.raises(FormatError, match=r"ReportBody: .* expected 384"):
        ReportBody.from_bytes(bytes(384 + delta))


def test_reserved_bytes_must_be_zero_when_strict() -> None:
    raw = bytearray(ReportBody().to_bytes())
    raw[20] = 1  # inside RESERVED1
    with pytest.raises(FormatError, match="reserved1"):
        ReportBody.from_bytes(bytes(raw))
    assert ReportBody.from_bytes(bytes(raw), strict=False).miscselect == 0


def test_nested_reserved_checked_too() -> None:
    raw = bytearray(Report().to_bytes())
    raw[300] = 1  # body.reserved4
    with pytest.raises(FormatError, match="reserved4"):
        Report.from_bytes(bytes(raw))


def test_values_that_do_not_fit_are_refused() -> None:
    with pytest.raises(FormatError, match="isvprodid"):
        ReportBody(isvprodid=70000).to_bytes()
    with pytest.raises(FormatError, match="mrenclave"):
        ReportBody(mrenclave=b"short").to_bytes()
    with pytest.raises(FormatError, match="attributes"):
        ReportBody(attributes=b"\x00" * 16).to_bytes()  # type: ignore[arg-type]


def test_not_bytes_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        ReportBody.from_bytes("x" * 384)  # type: ignore[arg-type]


def test_secinfo_page_type() -> None:
    s = Secinfo.for_page(PageType.PT_TCS)
    assert s.page_type == PageType.PT_TCS and s.to_bytes()[1] == 1
    r = Secinfo.for_page(PageType.PT_REG, SecinfoFlags.R | SecinfoFlags.X)
    assert r.flags == 0x205


def test_table_with_a_gap_is_refused_at_definition() -> None:
    @dataclass
    class Gappy(Struct):
        SIZE: ClassVar[int] = 8
        a: int = field_at(0, "<I")
        b: int = field_at(6, "<H")

    with pytest.raises(TypeError, match="offset 0x6, expected 0x4"):
        Gappy().to_bytes()


def test_table_that_does_not_fill_size_is_refused() -> None:
    @dataclass
    class Short(Struct):
        SIZE: ClassVar[int] = 8
        a: int = field_at(0, "<I")

    with pytest.raises(TypeError, match="cover 4 bytes"):
        Short().to_bytes()


def test_sigstruct_signed_bytes_are_the_two_ranges() -> None:
    s = Sigstruct(vendor=0x8086, isvsvn=7)
    raw = s.to_bytes()
    assert s.signed_bytes() == raw[0:128] + raw[900:1028]
    assert len(s.signed_bytes()) == 256
