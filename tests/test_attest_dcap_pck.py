"""The SGX extension of PCK certificates, from hostile DER: each DER and schema rule broken on its own."""

from __future__ import annotations

from pathlib import Path

import dcap_qvl
import pytest
from cryptography import x509

from haven.attest.dcap import load_pck_chain, parse_pck_extension, parse_quote, pck_extension_of
from haven.attest.encoding import decode_evidence
from haven.attest.errors import AttestationError
from haven.tee.sim import asn1
from haven.tee.sim.pki import pck_extension_der
from tests.dcap_support import PARSE_ONLY, SETS

OID = "1.2.840.113741.1.13.1"
PPID, CPUSVN, PCE_ID, FMSPC = (
    bytes(range(16)),
    bytes(range(16, 32)),
    b"\x00\x01",
    bytes.fromhex("00A067110000"),
)
COMPONENTS = tuple(range(1, 17))


def _ext(**kw: object) -> bytes:
    args: dict[str, object] = dict(
        ppid=PPID, components=COMPONENTS, pcesvn=13, cpusvn=CPUSVN, pce_id=PCE_ID, fmspc=FMSPC
    )
    args.update(kw)
    return pck_extension_der(**args)  # type: ignore[arg-type]


def _pair(oid: str, value: bytes) -> bytes:
    return asn1.sequence(asn1.object_identifier(oid), value)


def _members(*extra: bytes, drop: str | None = None, tcb: bytes | None = None, **values: bytes) -> bytes:
    """The extension SEQUENCE built member by member (to break one at a time): ``values`` replaces
    the value of member ``m<n>`` (OID suffix .n) with the given DER."""
    tcb_items = [_pair(f"{OID}.2.{i + 1}", asn1.integer(svn)) for i, svn in enumerate(COMPONENTS)]
    tcb_items += [_pair(f"{OID}.2.17", asn1.integer(13)), _pair(f"{OID}.2.18", asn1.octet_string(CPUSVN))]
    members = {
        "m1": asn1.octet_string(PPID),
        "m2": tcb if tcb is not None else asn1.sequence(*tcb_items),
        "m3": asn1.octet_string(PCE_ID),
        "m4": asn1.octet_string(FMSPC),
        "m5": asn1.enumerated(1),
    }
    members.update(values)
    if drop:
        members.pop(drop)
    return asn1.sequence(*(_pair(f"{OID}.{name[1:]}", v) for name, v in members.items()), *extra)


def _malformed(der: bytes, match: str = "") -> None:
    with pytest.raises(AttestationError, match=match) as e:
        parse_pck_extension(der)
    assert e.value.kind == "malformed"


def test_simulated_extension_round_trips() -> None:
    ext = parse_pck_extension(_ext())
    assert (ext.ppid, ext.tcb_components, ext.pcesvn, ext.cpusvn) == (PPID, COMPONENTS, 13, CPUSVN)
    assert (ext.pce_id, ext.fmspc, ext.sgx_type, ext.platform_instance_id, ext.configuration) == (
        PCE_ID, FMSPC, 0, None, ()
    )  # fmt: skip


def test_scalable_platform_members() -> None:
    config = asn1.sequence(
        _pair(f"{OID}.7.1", bytes([0x01, 0x01, 0xFF])),
        _pair(f"{OID}.7.3", bytes([0x01, 0x01, 0x00])),
    )
    der = _members(_pair(f"{OID}.6", asn1.octet_string(bytes(16))), _pair(f"{OID}.7", config))
    ext = parse_pck_extension(der)
    assert ext.platform_instance_id == bytes(16) and ext.sgx_type == 1
    assert ext.configuration == (("dynamic_platform", True), ("smt_enabled", False))
    # Members Intel may add later are tolerated; known ones are checked.
    assert parse_pck_extension(_members(_pair(f"{OID}.99", asn1.integer(1)))).fmspc == FMSPC


@pytest.mark.parametrize(
    ("name", "tail"),
    [(s.quote, s.strip_tail) for s in SETS] + [(n, 0) for n in PARSE_ONLY],
    ids=[s.name for s in SETS] + list(PARSE_ONLY),
)
def test_real_pck_certificates_match_dcap_qvl(vectors: Path, name: str, tail: int) -> None:
    raw = decode_evidence((vectors / name).read_bytes())
    raw = raw[: len(raw) - tail]
    ours = pck_extension_of(load_pck_chain(parse_quote(raw).pck_chain_pem)[0])
    theirs = dcap_qvl.parse_quote(raw).pck_extension()
    assert (ours.cpusvn, ours.pcesvn, ours.fmspc, ours.pce_id, ours.ppid, ours.sgx_type) == (
        theirs.cpu_svn, theirs.pce_svn, theirs.fmspc, theirs.pce_id, theirs.ppid, theirs.sgx_type
    )  # fmt: skip
    assert ours.tcb_components == tuple(ours.cpusvn)  # Intel's components are CPUSVN's bytes


def test_der_framing_rules() -> None:
    good = _members()
    _malformed(good + b"\x00", "after")
    _malformed(good[:-1], "runs past|truncated")
    _malformed(b"\x30", "truncated")
    _malformed(b"\x30\x80" + good[2:] + b"\x00\x00", "indefinite")
    _malformed(b"\x30\x81\x05" + bytes(5), "minimal")
    _malformed(b"\x30\x83\x00\x00\x05" + bytes(5), "out of range")
    _malformed(b"\x1f\x01\x00", "high-numbered")
    _malformed(b"\x04\x00", "tag")
    _malformed(bytes(5000), "more than")


def test_schema_rules() -> None:
    _malformed(_members(drop="m4"), "FMSPC")
    _malformed(_members(drop="m1"), "PPID")
    _malformed(_members(drop="m5"), "SGX type")
    _malformed(_members(_pair(f"{OID}.4", asn1.octet_string(FMSPC))), "twice")
    _malformed(_members(m1=asn1.integer(5)), "PPID")
    _malformed(_members(m1=asn1.octet_string(bytes(15))), "PPID")
    _malformed(_members(m3=asn1.octet_string(bytes(3))), "PCE-ID")
    _malformed(_members(m4=asn1.octet_string(bytes(5))), "FMSPC")
    _malformed(_members(m5=asn1.integer(1)), "SGX type")
    _malformed(_members(m6=asn1.octet_string(bytes(8))), "platform instance ID")
    _malformed(_members(m7=asn1.octet_string(bytes(8))), "configuration")
    _malformed(_members(m2=asn1.sequence(), m3=asn1.octet_string(PCE_ID)), "missing")
    _malformed(
        asn1.sequence(
            asn1.sequence(asn1.object_identifier(f"{OID}.1"), asn1.octet_string(PPID), b"\x05\x00")
        ),
        "more than one value",
    )
    _malformed(asn1.sequence(asn1.integer(1)), "tag")


@pytest.mark.parametrize(
    ("tcb", "match"),
    [
        (asn1.sequence(), "missing"),
        (asn1.integer(1), "tag"),
        (asn1.sequence(*[_pair(f"{OID}.2.{i}", asn1.integer(1)) for i in range(1, 17)]), "PCESVN|members"),
    ],
)
def test_tcb_rules(tcb: bytes, match: str) -> None:
    _malformed(_members(tcb=tcb), match)


def _tcb_with(index: int, value: bytes) -> bytes:
    items = [_pair(f"{OID}.2.{i}", asn1.integer(1)) for i in range(1, 17)]
    items += [_pair(f"{OID}.2.17", asn1.integer(13)), _pair(f"{OID}.2.18", asn1.octet_string(CPUSVN))]
    items[index] = value
    return asn1.sequence(*items)


@pytest.mark.parametrize(
    ("index", "value", "match"),
    [
        (0, _pair(f"{OID}.2.1", b"\x02\x02\x00\x05"), "minimal"),
        (0, _pair(f"{OID}.2.1", b"\x02\x00"), "empty"),
        (0, _pair(f"{OID}.2.1", asn1.integer(-1)), "outside"),
        (0, _pair(f"{OID}.2.1", asn1.integer(256)), "outside"),
        (16, _pair(f"{OID}.2.17", asn1.integer(65536)), "outside"),
        (17, _pair(f"{OID}.2.18", asn1.octet_string(bytes(15))), "CPUSVN"),
        (0, _pair(f"{OID}.2.99", asn1.integer(1)), "missing"),
        (0, asn1.sequence(b"\x06\x02\x80\x01", asn1.integer(1)), "minimal"),
        (0, asn1.sequence(b"\x06\x01\x81", asn1.integer(1)), "truncated"),
        (0, asn1.sequence(b"\x06\x00", asn1.integer(1)), "truncated"),
    ],
)
def test_tcb_member_rules(index: int, value: bytes, match: str) -> None:
    _malformed(_members(tcb=_tcb_with(index, value)), match)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (asn1.sequence(_pair(f"{OID}.7.1", bytes([0x01, 0x01, 0x01]))), "0x00 or 0xFF"),
        (asn1.sequence(_pair(f"{OID}.7.9", bytes([0x01, 0x01, 0xFF]))), "known"),
        (asn1.sequence(_pair(f"{OID}.7.1", asn1.integer(1))), "known"),
    ],
)
def test_configuration_rules(config: bytes, match: str) -> None:
    _malformed(_members(_pair(f"{OID}.7", config)), match)


def test_certificate_without_the_extension(vectors: Path) -> None:
    root = x509.load_der_x509_certificate((vectors / "sgx/dcap-qvl/TrustedRootCA.der").read_bytes())
    with pytest.raises(AttestationError, match="has none") as e:
        pck_extension_of(root)
    assert e.value.kind == "malformed"
