"""The DCAP quote parser: v3/v4/v5 layouts, and each structural check broken on its own."""

from __future__ import annotations

import struct
from pathlib import Path

import dcap_qvl
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from haven.attest.dcap import (
    DcapQuote,
    TdReport10,
    TdReport15,
    parse_collateral_json,
    parse_quote,
    verify_dcap,
)
from haven.attest.dcap.quote import (
    BODY_SGX,
    BODY_TD10,
    BODY_TD15,
    CERT_TYPE_QE_REPORT,
    BodyDescriptor,
    EcdsaSigDataV4,
    QeReportCertificationData,
    SignatureDataLength,
)
from haven.attest.errors import AttestationError
from haven.tee.sgx.quote import MAX_QUOTE_SIZE, AuthDataHeader, CertificationDataHeader, ecdsa_der_to_raw
from haven.tee.sim.pki import derive_ec_key
from haven.tee.sim.qe import LABEL_ATTESTATION_KEY
from tests.dcap_support import SETS, SimEvidence, sim_evidence


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimEvidence:
    return sim_evidence(tmp_path_factory.mktemp("quote") / "platform.json")


def _malformed(data: bytes, match: str = "") -> None:
    with pytest.raises(AttestationError, match=match) as e:
        parse_quote(data)
    assert e.value.kind == "malformed"


def _set(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def _v4_layout(q: DcapQuote, *, version: int = 4, body_type: int | None = None) -> tuple[bytes, bytes]:
    """Re-lay a parsed quote as v4 (or v5 with ``body_type``): (signed part, signature-data tail)."""
    header = q.header.replace(version=version)
    body = q.signed_bytes[len(q.signed_bytes) - q.body.SIZE :]
    if body_type is not None:
        body = BodyDescriptor(body_type=body_type, size=len(body)).to_bytes() + body
    inner = (
        QeReportCertificationData(qe_report=q.qe_report, qe_report_sig=q.qe_report_signature).to_bytes()
        + AuthDataHeader(size=len(q.qe_auth_data)).to_bytes()
        + q.qe_auth_data
        + CertificationDataHeader(cert_key_type=5, size=len(q.pck_chain_pem)).to_bytes()
        + q.pck_chain_pem
    )
    cert = CertificationDataHeader(cert_key_type=CERT_TYPE_QE_REPORT, size=len(inner)).to_bytes() + inner
    return header.to_bytes() + body, cert


def _assemble(signed: bytes, signature: bytes, key: bytes, cert: bytes) -> bytes:
    sig = EcdsaSigDataV4(sig=signature, attest_pub_key=key).to_bytes() + cert
    return signed + SignatureDataLength(length=len(sig)).to_bytes() + sig


def test_v3_v4_v5_bodies(vectors: Path) -> None:
    sgx = parse_quote(SETS[0].quote_bytes(vectors))
    assert (sgx.version, sgx.tee, sgx.body_type, len(sgx.signed_bytes)) == (3, "sgx", BODY_SGX, 432)
    tdx = parse_quote(SETS[1].quote_bytes(vectors))
    assert (tdx.version, tdx.tee, tdx.body_type, len(tdx.signed_bytes), tdx.padding) == (
        4,
        "tdx",
        BODY_TD10,
        632,
        70,
    )
    assert isinstance(tdx.body, TdReport10) and tdx.report_data == tdx.body.report_data
    v5 = parse_quote(SETS[2].quote_bytes(vectors))
    assert (v5.version, v5.body_type, len(v5.signed_bytes)) == (5, BODY_TD15, 702)
    assert isinstance(v5.body, TdReport15) and v5.td_report is v5.body.base
    assert v5.pck_chain_pem.endswith(b"-----\n\0")
    with pytest.raises(AttestationError):
        _ = sgx.td_report
    with pytest.raises(AttestationError):
        _ = tdx.sgx_body


def test_v5_with_a_td10_body_parses(vectors: Path) -> None:
    q = parse_quote(SETS[1].quote_bytes(vectors))
    signed, cert = _v4_layout(q, version=5, body_type=BODY_TD10)
    v5 = parse_quote(_assemble(signed, q.signature, q.attest_pub_key, cert))
    assert (v5.version, v5.body_type, v5.body) == (5, BODY_TD10, q.body)
    assert v5.qe_report_bytes == q.qe_report_bytes and v5.pck_chain_pem == q.pck_chain_pem


def test_sgx_quote_v4_verifies(sim: SimEvidence) -> None:
    # Intel's Quote Library also writes SGX quotes as version 4 (cert type 6 around type 5).
    q = parse_quote(sim.quote)
    signed, cert = _v4_layout(q)
    key = derive_ec_key(sim.platform, LABEL_ATTESTATION_KEY)
    signature = ecdsa_der_to_raw(key.sign(signed, ec.ECDSA(hashes.SHA256())))
    v4 = _assemble(signed, signature, q.attest_pub_key, cert)
    assert parse_quote(v4).version == 4
    ev = verify_dcap(v4, parse_collateral_json(sim.collateral), roots=sim.roots, now=sim.now)
    assert (ev.tee, ev.tcb_status, ev.claims["quote_version"]) == ("sgx", "UpToDate", 4)
    # A difference by design: dcap-qvl takes SGX quotes as version 3 only.
    collateral = dcap_qvl.QuoteCollateralV3.from_json(sim.collateral)
    with pytest.raises(ValueError, match="version 3"):
        dcap_qvl.verify_with_root_ca(v4, collateral, sim.qe.pki.root_der(), int(sim.now.timestamp()))


def test_header_checks(sim: SimEvidence) -> None:
    q = sim.quote
    _malformed(_set(q, 0, "<H", 2), "version")
    _malformed(_set(q, 0, "<H", 6), "version")
    _malformed(_set(q, 2, "<H", 3), "attestation key type")
    _malformed(_set(q, 4, "<I", 0x81), "TEE type")  # v3 is SGX only
    _malformed(_set(_set(q, 0, "<H", 4), 4, "<I", 0x80), "TEE type")
    _malformed(q[:12] + bytes(16) + q[28:], "vendor")


def test_v5_body_descriptor_checks(vectors: Path) -> None:
    q = SETS[2].quote_bytes(vectors)
    _malformed(_set(q, 48, "<H", 4), "body type 4")
    _malformed(_set(q, 48, "<H", BODY_SGX), "does not fit")
    _malformed(_set(q, 48, "<H", BODY_TD10), "size")
    _malformed(_set(q, 50, "<I", 584), "size")


def test_length_checks(sim: SimEvidence, vectors: Path) -> None:
    q = sim.quote
    sig_len = struct.unpack_from("<I", q, 432)[0]
    _malformed(_set(q, 432, "<I", sig_len + 1), "exceeds")
    _malformed(_set(q, 432, "<I", sig_len - 1), "left over|not zero")
    _malformed(_set(q, 436 + 576, "<H", 0xFFFF), "needs")  # QE auth data size
    _malformed(q + b"\x01", "not zero padding")
    _malformed(b"", "needs")
    _malformed(bytes(MAX_QUOTE_SIZE + 1), "exceeds")
    with pytest.raises(TypeError):
        parse_quote("quote")  # type: ignore[arg-type]


def test_certification_data_type_checks(sim: SimEvidence, vectors: Path) -> None:
    q = sim.quote
    pq = parse_quote(q)
    type_at = 436 + 576 + 2 + len(pq.qe_auth_data)
    _malformed(_set(q, type_at, "<H", 3), "type 3")
    _malformed(_set(q, type_at, "<H", CERT_TYPE_QE_REPORT), "type 6")
    t = SETS[1].quote_bytes(vectors)
    _malformed(_set(t, 636 + 128, "<H", 5), "is not 6")
    inner_at = 636 + 134 + 448 + 2 + 32
    _malformed(_set(t, inner_at, "<H", 1), "type 1")
    outer_size = struct.unpack_from("<I", t, 636 + 130)[0]
    _malformed(_set(t, 636 + 130, "<I", outer_size - 1), "left over")


def test_quote_regions_cover_reserved_bytes_without_judging_them(sim: SimEvidence) -> None:
    # Report bodies are signed: their reserved bytes are left to the signature check, not the parser.
    b = bytearray(sim.quote)
    b[48 + 20] = 0xFF  # reserved1 of the ISV report body
    assert parse_quote(bytes(b)).sgx_body.reserved1[0] == 0xFF
    with pytest.raises(AttestationError) as e:
        verify_dcap(bytes(b), parse_collateral_json(sim.collateral), roots=sim.roots, now=sim.now)
    assert e.value.kind == "signature"
