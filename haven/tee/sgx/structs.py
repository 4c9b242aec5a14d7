"""Intel SGX architectural structures, as laid out in the Intel SDM Vol. 3D.

Each structure is one table; offsets and sizes come from the SDM's layout tables (chapter "Enclave
Access Control and Data Structures"): SECS, TCS, SECINFO, SIGSTRUCT, REPORT, TARGETINFO,
KEYREQUEST, ATTRIBUTES and MISCSELECT. Field names follow the SDM in lower case.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from haven.structs import Struct, field_at

PAGE_SIZE = 4096


class AttributeFlags(enum.IntFlag):
    """ATTRIBUTES.FLAGS bits (SDM Vol. 3D, "Layout of ATTRIBUTES Structure")."""

    INIT = 1 << 0
    DEBUG = 1 << 1
    MODE64BIT = 1 << 2
    PROVISIONKEY = 1 << 4
    EINITTOKEN_KEY = 1 << 5
    CET = 1 << 6
    KSS = 1 << 7
    AEXNOTIFY = 1 << 10


# XFRM for x87 and SSE state: the minimum every enclave enables (SDM: XFRM[1:0] must be 11b).
XFRM_LEGACY = 0x3


class MiscSelect(enum.IntFlag):
    """MISCSELECT bits (SDM Vol. 3D, "Bit Vector Layout of MISCSELECT Field")."""

    EXINFO = 1 << 0
    CPINFO = 1 << 1


class PageType(enum.IntEnum):
    """SECINFO.FLAGS.PAGE_TYPE (SDM Vol. 3D, "Supported PAGE_TYPE")."""

    PT_SECS = 0
    PT_TCS = 1
    PT_REG = 2
    PT_VA = 3
    PT_TRIM = 4
    PT_SS_FIRST = 5
    PT_SS_REST = 6


class SecinfoFlags(enum.IntFlag):
    """SECINFO.FLAGS permission bits (SDM Vol. 3D, "Layout of SECINFO Field"); PAGE_TYPE is bits 15:8."""

    R = 1 << 0
    W = 1 << 1
    X = 1 << 2
    PENDING = 1 << 3
    MODIFIED = 1 << 4
    PR = 1 << 5


class KeyName(enum.IntEnum):
    """KEYREQUEST.KEYNAME (SDM Vol. 3D, "Supported KEYName Values")."""

    EINITTOKEN_KEY = 0
    PROVISION_KEY = 1
    PROVISION_SEAL_KEY = 2
    REPORT_KEY = 3
    SEAL_KEY = 4


class KeyPolicy(enum.IntFlag):
    """KEYREQUEST.KEYPOLICY (SDM Vol. 3D, "Layout of KEYPOLICY Field")."""

    MRENCLAVE = 1 << 0
    MRSIGNER = 1 << 1
    NOISVPRODID = 1 << 2
    CONFIGID = 1 << 3
    ISVFAMILYID = 1 << 4
    ISVEXTPRODID = 1 << 5


@dataclass
class Attributes(Struct):
    """ATTRIBUTES (16 bytes): FLAGS and XFRM."""

    SIZE: ClassVar[int] = 16
    flags: int = field_at(0, "<Q")
    xfrm: int = field_at(8, "<Q")

    @property
    def debug(self) -> bool:
        return bool(self.flags & AttributeFlags.DEBUG)

    def masked(self, mask: Attributes) -> Attributes:
        return Attributes(flags=self.flags & mask.flags, xfrm=self.xfrm & mask.xfrm)


@dataclass
class Secs(Struct):
    """SGX Enclave Control Structure (4096 bytes)."""

    SIZE: ClassVar[int] = 4096
    size: int = field_at(0, "<Q")
    baseaddr: int = field_at(8, "<Q")
    ssaframesize: int = field_at(16, "<I")
    miscselect: int = field_at(20, "<I")
    reserved1: bytes = field_at(24, "24s", reserved=True)  # CET_LEG_BITMAP_OFFSET, CET_ATTRIBUTES
    attributes: Attributes = field_at(48, Attributes)
    mrenclave: bytes = field_at(64, "32s")
    reserved2: bytes = field_at(96, "32s", reserved=True)
    mrsigner: bytes = field_at(128, "32s")
    reserved3: bytes = field_at(160, "32s", reserved=True)
    configid: bytes = field_at(192, "64s")
    isvprodid: int = field_at(256, "<H")
    isvsvn: int = field_at(258, "<H")
    configsvn: int = field_at(260, "<H")
    reserved4: bytes = field_at(262, "3834s", reserved=True)


@dataclass
class Tcs(Struct):
    """Thread Control Structure (4096 bytes)."""

    SIZE: ClassVar[int] = 4096
    reserved0: bytes = field_at(0, "8s", reserved=True)  # STATE, owned by the processor
    flags: int = field_at(8, "<Q")
    ossa: int = field_at(16, "<Q")
    cssa: int = field_at(24, "<I")
    nssa: int = field_at(28, "<I")
    oentry: int = field_at(32, "<Q")
    aep: int = field_at(40, "<Q")
    ofsbase: int = field_at(48, "<Q")
    ogsbase: int = field_at(56, "<Q")
    fslimit: int = field_at(64, "<I")
    gslimit: int = field_at(68, "<I")
    reserved1: bytes = field_at(72, "4024s", reserved=True)


@dataclass
class Secinfo(Struct):
    """SECINFO (64 bytes): page permissions and type, given with EADD."""

    SIZE: ClassVar[int] = 64
    flags: int = field_at(0, "<Q")
    reserved: bytes = field_at(8, "56s", reserved=True)

    @classmethod
    def for_page(cls, page_type: PageType, perms: int = 0) -> Secinfo:
        return cls(flags=int(perms) | (int(page_type) << 8))

    @property
    def page_type(self) -> int:
        return (self.flags >> 8) & 0xFF


# SIGSTRUCT.HEADER and HEADER2 constants (SDM Vol. 3D, "Layout of Enclave Signature Structure").
SIGSTRUCT_HEADER = bytes.fromhex("06000000E10000000000010000000000")
SIGSTRUCT_HEADER2 = bytes.fromhex("01010000600000006000000001000000")
SIGSTRUCT_VENDOR_INTEL = 0x8086


@dataclass
class Sigstruct(Struct):
    """Enclave Signature Structure (1808 bytes). MODULUS, SIGNATURE, Q1 and Q2 are little-endian."""

    SIZE: ClassVar[int] = 1808
    header: bytes = field_at(0, "16s")
    vendor: int = field_at(16, "<I")
    date: int = field_at(20, "<I")  # BCD yyyymmdd
    header2: bytes = field_at(24, "16s")
    swdefined: int = field_at(40, "<I")
    reserved1: bytes = field_at(44, "84s", reserved=True)
    modulus: bytes = field_at(128, "384s")
    exponent: int = field_at(512, "<I")
    signature: bytes = field_at(516, "384s")
    miscselect: int = field_at(900, "<I")
    miscmask: int = field_at(904, "<I")
    reserved2: bytes = field_at(908, "4s", reserved=True)  # CET_ATTRIBUTES and its mask
    isvfamilyid: bytes = field_at(912, "16s")
    attributes: Attributes = field_at(928, Attributes)
    attributemask: Attributes = field_at(944, Attributes)
    enclavehash: bytes = field_at(960, "32s")
    reserved3: bytes = field_at(992, "16s", reserved=True)
    isvextprodid: bytes = field_at(1008, "16s")
    isvprodid: int = field_at(1024, "<H")
    isvsvn: int = field_at(1026, "<H")
    reserved4: bytes = field_at(1028, "12s", reserved=True)
    q1: bytes = field_at(1040, "384s")
    q2: bytes = field_at(1424, "384s")

    # The signature covers bytes 0..127 (HEADER to RESERVED) and 900..1027 (MISCSELECT to ISVSVN).
    SIGNED_RANGES: ClassVar[tuple[tuple[int, int], ...]] = ((0, 128), (900, 1028))

    def signed_bytes(self) -> bytes:
        raw = self.to_bytes()
        return b"".join(raw[a:b] for a, b in self.SIGNED_RANGES)


@dataclass
class ReportBody(Struct):
    """REPORT body (384 bytes): what EREPORT says about an enclave, also quoted verbatim in DCAP quotes."""

    SIZE: ClassVar[int] = 384
    cpusvn: bytes = field_at(0, "16s")
    miscselect: int = field_at(16, "<I")
    reserved1: bytes = field_at(20, "12s", reserved=True)
    isvextprodid: bytes = field_at(32, "16s")
    attributes: Attributes = field_at(48, Attributes)
    mrenclave: bytes = field_at(64, "32s")
    reserved2: bytes = field_at(96, "32s", reserved=True)
    mrsigner: bytes = field_at(128, "32s")
    reserved3: bytes = field_at(160, "32s", reserved=True)
    configid: bytes = field_at(192, "64s")
    isvprodid: int = field_at(256, "<H")
    isvsvn: int = field_at(258, "<H")
    configsvn: int = field_at(260, "<H")
    reserved4: bytes = field_at(262, "42s", reserved=True)
    isvfamilyid: bytes = field_at(304, "16s")
    reportdata: bytes = field_at(320, "64s")


@dataclass
class Report(Struct):
    """REPORT (432 bytes): the body, the KEYID of the report key, and an AES-128-CMAC over the body."""

    SIZE: ClassVar[int] = 432
    body: ReportBody = field_at(0, ReportBody)
    keyid: bytes = field_at(384, "32s")
    mac: bytes = field_at(416, "16s")


@dataclass
class TargetInfo(Struct):
    """TARGETINFO (512 bytes): names the enclave a REPORT is MACed for."""

    SIZE: ClassVar[int] = 512
    measurement: bytes = field_at(0, "32s")
    attributes: Attributes = field_at(32, Attributes)
    reserved1: bytes = field_at(48, "2s", reserved=True)  # CET_ATTRIBUTES, reserved
    configsvn: int = field_at(50, "<H")
    miscselect: int = field_at(52, "<I")
    reserved2: bytes = field_at(56, "8s", reserved=True)
    configid: bytes = field_at(64, "64s")
    reserved3: bytes = field_at(128, "384s", reserved=True)


@dataclass
class KeyRequest(Struct):
    """KEYREQUEST (512 bytes): the input of EGETKEY."""

    SIZE: ClassVar[int] = 512
    keyname: int = field_at(0, "<H")
    keypolicy: int = field_at(2, "<H")
    isvsvn: int = field_at(4, "<H")
    reserved1: bytes = field_at(6, "2s", reserved=True)  # CET_ATTRIBUTES_MASK, reserved
    cpusvn: bytes = field_at(8, "16s")
    attributemask: Attributes = field_at(24, Attributes)
    keyid: bytes = field_at(40, "32s")
    miscmask: int = field_at(72, "<I")
    configsvn: int = field_at(76, "<H")
    reserved2: bytes = field_at(78, "434s", reserved=True)
