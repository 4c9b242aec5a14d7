"""The simulated quoting enclave: local attestation in, a DCAP v3 quote out, with every binding checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from haven.errors import EnclaveInitError, QuoteError
from haven.tee.sgx.quote import (
    CERT_TYPE_PCK_CERT_CHAIN,
    INTEL_QE_VENDOR_ID,
    attest_public_key,
    decode_quote_v3,
    ecdsa_raw_to_der,
    encode_quote_v3,
    qe_report_data,
)
from haven.tee.sgx.structs import AttributeFlags, Attributes, Report
from haven.tee.sim.collateral import platform_collateral
from haven.tee.sim.cpu import SimEnclave
from haven.tee.sim.platform import SimPlatform
from haven.tee.sim.qe import QE_AUTH_DATA, QE_ISVPRODID, QuotingEnclave, qe_image, qe_sigstruct
from tests.sim_quote_support import launch_app, make_platform

REPORT_DATA = b"challenge".ljust(64, b"\0")


@pytest.fixture
def platform(platform_path: Path) -> SimPlatform:
    return make_platform(platform_path, qe_isvsvn=6, pcesvn=12)


@pytest.fixture
def qe(platform: SimPlatform) -> QuotingEnclave:
    return QuotingEnclave(platform)


@pytest.fixture
def app(platform: SimPlatform) -> SimEnclave:
    return launch_app(platform)


def _quote(qe: QuotingEnclave, app: SimEnclave, data: bytes = REPORT_DATA) -> bytes:
    return qe.quote(app.ereport(qe.target_info(), data))


def test_target_info_names_the_quoting_enclave(qe: QuotingEnclave) -> None:
    ti = qe.target_info()
    assert ti.measurement == qe_image().mrenclave() == qe.enclave.secs.mrenclave
    assert ti.attributes.flags & AttributeFlags.PROVISIONKEY


def test_header(qe: QuotingEnclave, app: SimEnclave, platform: SimPlatform) -> None:
    h = decode_quote_v3(_quote(qe, app)).header
    assert (h.version, h.att_key_type, h.att_key_data_0) == (3, 2, 0)
    assert (h.qe_svn, h.pce_svn) == (6, 12)
    assert h.qe_vendor_id == INTEL_QE_VENDOR_ID
    assert h.user_data[16:] == bytes(4) and any(h.user_data[:16])
    assert QuotingEnclave(platform).header == h  # the QE ID is the platform's, stable


def test_report_body_is_quoted_verbatim_and_signed(qe: QuotingEnclave, app: SimEnclave) -> None:
    report = app.ereport(qe.target_info(), REPORT_DATA)
    raw = qe.quote(report)
    q = decode_quote_v3(raw)
    assert q.report_body == report.body and raw[48:432] == report.body.to_bytes()
    assert encode_quote_v3(q) == raw  # the spliced quote is exactly the table layout
    key = attest_public_key(q.attest_pub_key)
    key.verify(ecdsa_raw_to_der(q.signature), raw[:432], ec.ECDSA(hashes.SHA256()))
    assert q.attest_pub_key == qe.attestation_public_key


def test_qe_report_binds_the_attestation_key_and_is_signed_by_the_pck(
    qe: QuotingEnclave, app: SimEnclave
) -> None:
    q = decode_quote_v3(_quote(qe, app))
    assert q.qe_auth_data == QE_AUTH_DATA == bytes(range(32))
    assert q.qe_report_body.reportdata == qe_report_data(q.attest_pub_key, q.qe_auth_data)
    pck = qe.pki.pck_cert.public_key()
    assert isinstance(pck, ec.EllipticCurvePublicKey)
    pck.verify(
        ecdsa_raw_to_der(q.qe_report_signature), q.qe_report_body.to_bytes(), ec.ECDSA(hashes.SHA256())
    )
    assert q.certification_data_type == CERT_TYPE_PCK_CERT_CHAIN
    assert q.certification_data == qe.pki.pck_chain_pem()


def test_qe_report_matches_the_qe_identity(
    qe: QuotingEnclave, app: SimEnclave, platform: SimPlatform
) -> None:
    body = decode_quote_v3(_quote(qe, app)).qe_report_body
    ident = json.loads(platform_collateral(platform, pki=qe.pki).qe_identity)
    assert body.mrsigner == platform.qe_mrsigner() == bytes.fromhex(ident["mrsigner"])
    assert body.isvprodid == QE_ISVPRODID == ident["isvprodid"]
    assert body.isvsvn == 6 == ident["tcbLevels"][0]["tcb"]["isvsvn"]
    attrs, mask = bytes.fromhex(ident["attributes"]), bytes.fromhex(ident["attributesMask"])
    mine = body.attributes.to_bytes()
    assert all(a & m == b & m for a, b, m in zip(attrs, mine, mask, strict=True))
    misc, misc_mask = (
        int.from_bytes(bytes.fromhex(ident[k]), "little") for k in ("miscselect", "miscselectMask")
    )
    assert body.miscselect & misc_mask == misc & misc_mask
    assert not body.attributes.debug
    assert body.attributes.flags & AttributeFlags.INIT


def test_the_qe_report_is_made_once(qe: QuotingEnclave, app: SimEnclave) -> None:
    a, b = decode_quote_v3(_quote(qe, app)), decode_quote_v3(_quote(qe, app, bytes(64)))
    # ECDSA signatures are randomised: equal QE report signatures mean the same cached signature.
    assert (a.qe_report_body, a.qe_report_signature) == (b.qe_report_body, b.qe_report_signature)
    assert a.signature != b.signature


def test_attestation_key_is_derived_from_the_platform(
    qe: QuotingEnclave, platform: SimPlatform, tmp_path: Path
) -> None:
    assert QuotingEnclave(SimPlatform.open(platform.path)).attestation_public_key == qe.attestation_public_key
    other = QuotingEnclave(make_platform(tmp_path / "other.json"))
    assert other.attestation_public_key != qe.attestation_public_key
    assert other.header.user_data != qe.header.user_data


# -- refusals --------------------------------------------------------------------------------------


def test_a_changed_mac_is_refused(qe: QuotingEnclave, app: SimEnclave) -> None:
    report = app.ereport(qe.target_info(), REPORT_DATA)
    bad = Report.from_bytes(report.to_bytes()[:-1] + bytes([report.mac[-1] ^ 1]))
    with pytest.raises(QuoteError, match="local attestation"):
        qe.quote(bad)


def test_a_changed_body_is_refused(qe: QuotingEnclave, app: SimEnclave) -> None:
    report = app.ereport(qe.target_info(), REPORT_DATA)
    for change in (
        {"reportdata": bytes(64)},
        {"isvsvn": 9},
        {"mrenclave": bytes(32)},
        {"attributes": Attributes(flags=report.body.attributes.flags | AttributeFlags.DEBUG, xfrm=3)},
    ):
        with pytest.raises(QuoteError):
            qe.quote(report.replace(body=report.body.replace(**change)))


def test_a_report_for_another_target_is_refused(qe: QuotingEnclave, app: SimEnclave) -> None:
    with pytest.raises(QuoteError):
        qe.quote(app.ereport(app.target_info(), REPORT_DATA))


def test_a_report_from_another_platform_is_refused(qe: QuotingEnclave, tmp_path: Path) -> None:
    other = make_platform(tmp_path / "other.json")
    stranger = launch_app(other)
    with pytest.raises(QuoteError):
        qe.quote(stranger.ereport(qe.target_info(), REPORT_DATA))  # same QE image, other platform's keys


def test_only_reports_are_quoted(qe: QuotingEnclave) -> None:
    with pytest.raises(QuoteError, match="REPORT"):
        qe.quote(b"\0" * 432)  # type: ignore[arg-type]


def test_the_qe_cannot_be_loaded_as_a_debug_enclave(platform: SimPlatform) -> None:
    sig = qe_sigstruct(platform)
    debug = Attributes(flags=sig.attributes.flags | AttributeFlags.DEBUG, xfrm=sig.attributes.xfrm)
    with pytest.raises(EnclaveInitError):
        platform.load_enclave(qe_image(), sig, attributes=debug)
