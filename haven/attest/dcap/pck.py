"""The SGX extension of PCK certificates, read from hostile DER with a small strict reader.

Intel's *SGX PCK Certificate and CRL Profile Specification*, section "SGX Extensions": a PCK
certificate carries the non-critical extension OID 1.2.840.113741.1.13.1 whose value is::

    SEQUENCE OF SEQUENCE { OBJECT IDENTIFIER, value }
      .1 PPID                 OCTET STRING (16)
      .2 TCB                  SEQUENCE OF SEQUENCE { OID .2.1 … .2.16 INTEGER (component SVNs),
                                                     OID .2.17 INTEGER (PCESVN),
                                                     OID .2.18 OCTET STRING (16) (CPUSVN) }
      .3 PCE-ID               OCTET STRING (2)
      .4 FMSPC                OCTET STRING (6)
      .5 SGX Type             ENUMERATED (0 Standard, 1 Scalable, 2 Scalable with Integrity)
      .6 Platform Instance ID OCTET STRING (16)         (Scalable platforms only)
      .7 Configuration        SEQUENCE OF SEQUENCE { OID .7.1/.7.2/.7.3, BOOLEAN } (idem)

The reader accepts DER only (X.690 section 10: definite, minimal lengths; minimal INTEGERs; BOOLEAN as
0x00/0xFF; low tag numbers), refuses duplicate or missing members and trailing bytes, and turns every
failure into ``AttestationError("malformed")``. No third-party ASN.1 library is needed for this much.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from haven.attest.errors import AttestationError

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
_PPID = SGX_EXTENSION_OID + ".1"
_TCB = SGX_EXTENSION_OID + ".2"
_PCESVN = _TCB + ".17"
_CPUSVN = _TCB + ".18"
_PCE_ID = SGX_EXTENSION_OID + ".3"
_FMSPC = SGX_EXTENSION_OID + ".4"
_SGX_TYPE = SGX_EXTENSION_OID + ".5"
_PLATFORM_INSTANCE_ID = SGX_EXTENSION_OID + ".6"
_CONFIGURATION = SGX_EXTENSION_OID + ".7"
_CONFIG_NAMES = {
    _CONFIGURATION + ".1": "dynamic_platform",
    _CONFIGURATION + ".2": "cached_keys",
    _CONFIGURATION + ".3": "smt_enabled",
}
TCB_COMPONENTS = 16

# X.690 8.1.2: universal tags used here.
_BOOLEAN = 0x01
_INTEGER = 0x02
_OCTET_STRING = 0x04
_OID = 0x06
_ENUMERATED = 0x0A
_SEQUENCE = 0x30
# Far above a real extension (~0.5 KiB); bounds the work a hostile one can cause.
_MAX_EXTENSION = 4096


def _bad(message: str) -> AttestationError:
    return AttestationError("malformed", f"PCK certificate SGX extension: {message}")


class _Der:
    """Sequential reader of DER TLVs inside one buffer."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def done(self) -> bool:
        return self.at == len(self.data)

    def read(self) -> tuple[int, bytes]:
        d, at = self.data, self.at
        if at + 2 > len(d):
            raise _bad("truncated element")
        tag, first = d[at], d[at + 1]
        at += 2
        if tag & 0x1F == 0x1F:
            raise _bad("high-numbered tags are not used here")
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if count == 0:
                raise _bad("indefinite length is not DER")
            if count > 2 or at + count > len(d):
                raise _bad("length field out of range")
            length = int.from_bytes(d[at : at + count], "big")
            at += count
            if length < 0x80 or d[at - count] == 0:
                raise _bad("length is not in its minimal form")
        if at + length > len(d):
            raise _bad("element runs past its container")
        self.at = at + length
        return tag, d[at : at + length]

    def expect(self, tag: int, what: str) -> bytes:
        got, value = self.read()
        if got != tag:
            raise _bad(f"{what}: tag {got:#04x}, expected {tag:#04x}")
        return value


def _integer(value: bytes, what: str, maximum: int) -> int:
    if not value:
        raise _bad(f"{what}: empty INTEGER")
    if len(value) > 1 and ((value[0] == 0 and value[1] < 0x80) or (value[0] == 0xFF and value[1] >= 0x80)):
        raise _bad(f"{what}: INTEGER is not in its minimal form")
    n = int.from_bytes(value, "big", signed=True)
    if not 0 <= n <= maximum:
        raise _bad(f"{what}: {n} is outside 0..{maximum}")
    return n


def _oid(value: bytes) -> str:
    if not value or value[-1] & 0x80:
        raise _bad("truncated OBJECT IDENTIFIER")
    subs: list[int] = []
    n = 0
    fresh = True
    for b in value:
        if fresh and b == 0x80:
            raise _bad("OBJECT IDENTIFIER subidentifier is not minimal")
        n = (n << 7) | (b & 0x7F)
        fresh = not b & 0x80
        if fresh:
            subs.append(n)
            n = 0
    first = subs[0]
    arcs = [min(first // 40, 2), first - 40 * min(first // 40, 2), *subs[1:]]
    return ".".join(str(a) for a in arcs)


def _octets(value: bytes, what: str, size: int) -> bytes:
    if len(value) != size:
        raise _bad(f"{what}: {len(value)} bytes, expected {size}")
    return value


def _members(data: bytes, what: str) -> dict[str, tuple[int, bytes]]:
    """SEQUENCE OF SEQUENCE { OID, value } → {oid: (tag, value)}, each OID at most once."""
    outer = _Der(data)
    out: dict[str, tuple[int, bytes]] = {}
    while not outer.done():
        pair = _Der(outer.expect(_SEQUENCE, what))
        oid = _oid(pair.expect(_OID, what))
        member = pair.read()
        if not pair.done():
            raise _bad(f"{what}: {oid} has more than one value")
        if oid in out:
            raise _bad(f"{what}: {oid} appears twice")
        out[oid] = member
    return out


def _required(members: dict[str, tuple[int, bytes]], oid: str, tag: int, what: str) -> bytes:
    if oid not in members:
        raise _bad(f"{what} ({oid}) is missing")
    got, value = members[oid]
    if got != tag:
        raise _bad(f"{what}: tag {got:#04x}, expected {tag:#04x}")
    return value


@dataclass(frozen=True)
class PckExtension:
    """What a PCK certificate says about its platform."""

    ppid: bytes
    tcb_components: tuple[int, ...]  # the 16 SGX TCB component SVNs
    pcesvn: int
    cpusvn: bytes
    pce_id: bytes  # 2 bytes, as TCB Info's "pceId" hex
    fmspc: bytes  # 6 bytes
    sgx_type: int
    platform_instance_id: bytes | None = None
    configuration: tuple[tuple[str, bool], ...] = ()


def parse_pck_extension(der: bytes) -> PckExtension:
    """Parse the value (the inner DER) of the SGX extension."""
    if len(der) > _MAX_EXTENSION:
        raise _bad(f"{len(der)} bytes is more than {_MAX_EXTENSION}")
    top = _Der(der)
    members = _members(top.expect(_SEQUENCE, "extension"), "extension")
    if not top.done():
        raise _bad("bytes after the extension's SEQUENCE")
    tcb = _members(_required(members, _TCB, _SEQUENCE, "TCB"), "TCB")
    components = tuple(
        _integer(_required(tcb, f"{_TCB}.{i}", _INTEGER, f"TCB component {i}"), f"TCB component {i}", 255)
        for i in range(1, TCB_COMPONENTS + 1)
    )
    if len(tcb) != TCB_COMPONENTS + 2:
        raise _bad(f"TCB has {len(tcb)} members, expected {TCB_COMPONENTS + 2}")
    pcesvn = _integer(_required(tcb, _PCESVN, _INTEGER, "PCESVN"), "PCESVN", 0xFFFF)
    cpusvn = _octets(_required(tcb, _CPUSVN, _OCTET_STRING, "CPUSVN"), "CPUSVN", 16)
    instance: bytes | None = None
    if _PLATFORM_INSTANCE_ID in members:
        instance = _octets(
            _required(members, _PLATFORM_INSTANCE_ID, _OCTET_STRING, "platform instance ID"),
            "platform instance ID",
            16,
        )
    configuration: list[tuple[str, bool]] = []
    if _CONFIGURATION in members:
        config = _members(_required(members, _CONFIGURATION, _SEQUENCE, "configuration"), "configuration")
        for oid, (tag, value) in config.items():
            if oid not in _CONFIG_NAMES or tag != _BOOLEAN:
                raise _bad(f"configuration member {oid} is not a known BOOLEAN")
            if value not in (b"\x00", b"\xff"):
                raise _bad(f"configuration member {oid}: BOOLEAN is not 0x00 or 0xFF")
            configuration.append((_CONFIG_NAMES[oid], value == b"\xff"))
    return PckExtension(
        ppid=_octets(_required(members, _PPID, _OCTET_STRING, "PPID"), "PPID", 16),
        tcb_components=components,
        pcesvn=pcesvn,
        cpusvn=cpusvn,
        pce_id=_octets(_required(members, _PCE_ID, _OCTET_STRING, "PCE-ID"), "PCE-ID", 2),
        fmspc=_octets(_required(members, _FMSPC, _OCTET_STRING, "FMSPC"), "FMSPC", 6),
        sgx_type=_integer(_required(members, _SGX_TYPE, _ENUMERATED, "SGX type"), "SGX type", 0xFF),
        platform_instance_id=instance,
        configuration=tuple(configuration),
    )


def pck_extension_of(cert: x509.Certificate) -> PckExtension:
    """The SGX extension of a PCK certificate (``malformed`` if absent or not well formed)."""
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    except x509.ExtensionNotFound:
        raise _bad("the PCK certificate has none") from None
    except ValueError as e:  # cryptography refuses duplicate or malformed extensions
        raise AttestationError("malformed", f"PCK certificate extensions do not parse ({e})") from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover - cryptography knows no such OID
        raise _bad("unexpected decoded form")
    return parse_pck_extension(value.value)
