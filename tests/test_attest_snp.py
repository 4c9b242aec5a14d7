"""SEV-SNP reports: real Milan evidence, an AMD-shaped test PKI for Genoa/Turin/VLEK, mutations, fuzzing."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import warnings
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from haven.attest.errors import AttestationError
from haven.attest.snp import (
    REPORT_SIZE,
    SIGNED_SIZE,
    AttestationReport,
    certificate_product,
    certificate_tcb,
    decode_tcb,
    parse_snp_report,
    verify_snp,
)
from tests.snp_support import (
    CHIP,
    GENOA_SPL,
    NOW,
    PSS,
    T0,
    TURIN_SPL,
    TURIN_TCB,
    AmdPki,
    make_report,
)

pytestmark = pytest.mark.filterwarnings("ignore:Parsed a serial number")  # AMD VCEKs have serial 0

GO_TIME = dt.datetime(2022, 9, 24, 1, 0, 0, tzinfo=dt.UTC)
VIRTEE_TIME = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Vector:
    report: bytes
    vcek: bytes
    chain: bytes
    now: dt.datetime


@pytest.fixture(scope="module")
def go_sev(vectors_dir) -> Vector:
    d = vectors_dir / "snp" / "go-sev-guest"
    return Vector(
        (d / "attestation.bin").read_bytes(),
        (d / "vcek.testcer").read_bytes(),
        (d / "ask_ark_milan.pem").read_bytes(),
        GO_TIME,
    )


@pytest.fixture(scope="module")
def virtee(vectors_dir) -> Vector:
    d = vectors_dir / "snp" / "virtee-sev"
    return Vector(
        (d / "report_milan.bin").read_bytes(),
        (d / "vcek_milan.der").read_bytes(),
        (d / "cert_chain_milan").read_bytes(),
        VIRTEE_TIME,
    )


@pytest.fixture(scope="module")
def vectors_dir():
    from tests.conftest import VECTORS

    if not VECTORS.is_dir():
        pytest.skip(f"attestation vectors not found at {VECTORS}")
    return VECTORS


def refused(report: bytes, **kw) -> AttestationError:
    with pytest.raises(AttestationError) as e:
        verify_snp(report, **kw)
    return e.value


# ---- the README's sets -------------------------------------------------------------------------------


def test_go_sev_guest_milan(go_sev):
    ev = verify_snp(go_sev.report, vcek=go_sev.vcek, chain=go_sev.chain, now=GO_TIME)
    assert ev.tee == "snp" and ev.tcb_status == "UpToDate" and ev.advisory_ids == ()
    assert ev.root.startswith("CN=ARK-Milan,")
    assert ev.measurements == {"measurement": go_sev.report[0x90:0xC0].hex()}
    assert ev.report_data == go_sev.report[0x50:0x90]
    assert ev.report_data[:5] == b"\x01\x02\x03\x04\x05"
    assert ev.valid_from == dt.datetime(2022, 9, 24, 0, 55, 28, tzinfo=dt.UTC)  # the VCEK's notBefore
    assert ev.valid_until == dt.datetime(2029, 9, 24, 0, 55, 28, tzinfo=dt.UTC)
    c = ev.claims
    assert (c["product"], c["signing_key"], c["version"], c["vmpl"]) == ("Milan", "vcek", 2, 0)
    assert c["reported_tcb"] == {"bootloader": 2, "tee": 0, "snp": 5, "microcode": 0x44}
    # policy 0xB0000: SMT allowed, bit 17 (must be one), DEBUG
    assert c["policy"]["value"] == 0xB0000
    assert (c["policy"]["debug"], c["policy"]["smt"], c["policy"]["migrate_ma"]) == (True, True, False)
    assert ev.debug is True  # reported, not refused: the appraisal policy decides
    assert c["current_firmware"] == "1.49.3"
    assert c["chip_id"] == go_sev.report[0x1A0:0x1E0].hex()


def test_virtee_milan_over_its_window(virtee):
    for now in (
        dt.datetime(2023, 4, 3, 19, 23, 43, tzinfo=dt.UTC),  # the VCEK's notBefore
        VIRTEE_TIME,
        dt.datetime(2030, 4, 3, 19, 23, 43, tzinfo=dt.UTC),  # its notAfter
    ):
        ev = verify_snp(virtee.report, vcek=virtee.vcek, chain=virtee.chain, now=now)
        assert ev.debug is False
        assert ev.claims["policy"]["value"] == 0x30000
        assert ev.claims["reported_tcb"] == {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 0x73}


def test_readme_negatives(virtee):
    flipped = bytearray(virtee.report)
    flipped[21] ^= 0x80
    e = refused(bytes(flipped), vcek=virtee.vcek, chain=virtee.chain, now=VIRTEE_TIME)
    assert (e.kind, "SEV-SNP report: the signature does not verify") == ("signature", str(e))
    bad_vcek = bytearray(virtee.vcek)
    bad_vcek[40] ^= 0xFF  # inside the VCEK's TBS signature algorithm: the ASK's signature no longer covers it
    e = refused(virtee.report, vcek=bytes(bad_vcek), chain=virtee.chain, now=VIRTEE_TIME)
    assert e.kind in ("signature", "chain")
    assert "CN=SEV-VCEK" in str(e) and "CN=SEV-Milan" in str(e)  # the chain check, not the report's


def test_time_outside_the_vcek(virtee):
    early = dt.datetime(2023, 4, 3, 19, 23, 42, tzinfo=dt.UTC)
    e = refused(virtee.report, vcek=virtee.vcek, chain=virtee.chain, now=early)
    assert (e.kind, "SEV-VCEK" in str(e)) == ("not-yet-valid", True)
    late = dt.datetime(2030, 4, 3, 19, 23, 44, tzinfo=dt.UTC)
    e = refused(virtee.report, vcek=virtee.vcek, chain=virtee.chain, now=late)
    assert (e.kind, "SEV-VCEK" in str(e)) == ("expired", True)


def test_default_now_is_the_current_time(go_sev):
    # go-sev-guest's VCEK is valid until 2029: today it verifies without a `now`.
    if dt.datetime.now(dt.UTC) < dt.datetime(2029, 9, 24, tzinfo=dt.UTC):
        assert verify_snp(go_sev.report, vcek=go_sev.vcek, chain=go_sev.chain).claims["product"] == "Milan"


def test_chain_of_another_product(vectors_dir, virtee):
    genoa = (vectors_dir / "snp" / "go-sev-guest" / "ask_ark_genoa.pem").read_bytes()
    assert refused(virtee.report, vcek=virtee.vcek, chain=genoa, now=VIRTEE_TIME).kind == "chain"
    e = refused(virtee.report, vcek=virtee.vcek, chain=virtee.chain, product="Genoa", now=VIRTEE_TIME)
    assert (e.kind, "Milan" in str(e)) == ("chain", True)
    # The ASK under the VLEK's issuer name does not exist: a VCEK with the ASVK chain fails too.
    vlek_chain = (vectors_dir / "snp" / "go-sev-guest" / "ask_ark_milan_vlek.pem").read_bytes()
    assert refused(virtee.report, vcek=virtee.vcek, chain=vlek_chain, now=VIRTEE_TIME).kind == "chain"


def test_vcek_of_another_chip(vectors_dir, virtee):
    # A genuine Turin VCEK with its genuine chain: the chain verifies, the report's signature does not.
    d = vectors_dir / "snp" / "virtee-sev"
    turin = d / "vcek_turin.der"
    e = refused(
        virtee.report, vcek=turin.read_bytes(), chain=(d / "cert_chain_turin").read_bytes(), now=VIRTEE_TIME
    )
    assert e.kind == "signature"
    go = vectors_dir / "snp" / "go-sev-guest" / "vcek.testcer"  # another Milan chip
    assert (
        refused(virtee.report, vcek=go.read_bytes(), chain=virtee.chain, now=VIRTEE_TIME).kind == "signature"
    )


def test_crl_not_signed_by_the_ark(virtee):
    throwaway = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ark = x509.load_pem_x509_certificates(virtee.chain)[1]
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ark.subject)
        .last_update(VIRTEE_TIME - dt.timedelta(days=1))
        .next_update(VIRTEE_TIME + dt.timedelta(days=1))
        .sign(throwaway, hashes.SHA384(), rsa_padding=padding.PSS(padding.MGF1(hashes.SHA384()), 48))
    )
    for form in (Encoding.DER, Encoding.PEM):
        e = refused(
            virtee.report,
            vcek=virtee.vcek,
            chain=virtee.chain,
            crls=[crl.public_bytes(form)],
            now=VIRTEE_TIME,
        )
        assert (e.kind, "CRL" in str(e) and "ARK-Milan" in str(e)) == ("signature", True)
    assert refused(
        virtee.report, vcek=virtee.vcek, chain=virtee.chain, crls=[b"junk"], now=VIRTEE_TIME
    ).kind == ("malformed")


def test_evidence_encodings_and_chain_sources(vectors_dir, virtee):
    hex_text = (vectors_dir / "snp" / "virtee-sev" / "report_milan.hex").read_bytes()
    b64 = base64.b64encode(virtee.report)
    for form in (hex_text, b"0x" + virtee.report.hex().encode(), b64):
        assert verify_snp(form, vcek=virtee.vcek, chain=virtee.chain, now=VIRTEE_TIME).claims["version"] == 2
    # No chain: the shipped ASK is used, still checked up to the pinned ARK.
    assert verify_snp(virtee.report, vcek=virtee.vcek, now=VIRTEE_TIME).root.startswith("CN=ARK-Milan")
    # The chain in either order, or appended to a PEM VCEK.
    ask, ark = x509.load_pem_x509_certificates(virtee.chain)
    reversed_chain = ark.public_bytes(Encoding.PEM) + ask.public_bytes(Encoding.PEM)
    assert verify_snp(virtee.report, vcek=virtee.vcek, chain=reversed_chain, now=VIRTEE_TIME)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vcek_pem = x509.load_der_x509_certificate(virtee.vcek).public_bytes(Encoding.PEM)
    assert verify_snp(virtee.report, vcek=vcek_pem + virtee.chain, now=VIRTEE_TIME)
    assert verify_snp(
        virtee.report, vcek=virtee.vcek, chain=virtee.chain, product="milan-B0", now=VIRTEE_TIME
    )


def test_caller_roots_replace_the_pinned_ones(virtee):
    ark = x509.load_pem_x509_certificates(virtee.chain)[1]
    ev = verify_snp(virtee.report, vcek=virtee.vcek, chain=virtee.chain, roots=[ark], now=VIRTEE_TIME)
    assert ev.root.startswith("CN=ARK-Milan")
    unrelated = AmdPki("Genoa").ark
    assert refused(
        virtee.report, vcek=virtee.vcek, chain=virtee.chain, roots=[unrelated], now=VIRTEE_TIME
    ).kind == ("chain")


def test_vcek_of_an_unknown_version(virtee):
    at = virtee.vcek.index(b"\xa0\x03\x02\x01\x02") + 4  # [0] EXPLICIT version INTEGER 2 (v3)
    v9 = virtee.vcek[:at] + b"\x08" + virtee.vcek[at + 1 :]
    assert refused(virtee.report, vcek=v9, now=VIRTEE_TIME).kind == "malformed"


def test_unknown_product_and_bad_certificates(virtee):
    e = refused(virtee.report, vcek=virtee.vcek, product="Naples", now=VIRTEE_TIME)
    assert (e.kind, "Naples" in str(e)) == ("malformed", True)
    assert refused(virtee.report, vcek=b"not a certificate", now=VIRTEE_TIME).kind == "malformed"
    ask = x509.load_pem_x509_certificates(virtee.chain)[0].public_bytes(Encoding.PEM)
    e = refused(virtee.report, vcek=ask, now=VIRTEE_TIME)  # an ASK is not a VCEK
    assert (e.kind, "SEV-Milan" in str(e)) == ("chain", True)


# ---- the parser --------------------------------------------------------------------------------------


def test_struct_offsets_against_the_real_report(virtee):
    r = parse_snp_report(virtee.report)
    assert AttestationReport.SIZE == REPORT_SIZE == 1184
    assert AttestationReport.offset_of("signature") == SIGNED_SIZE == 0x2A0
    assert r.measurement == virtee.report[0x90:0xC0]
    assert r.reported_tcb == bytes.fromhex("0300000000000873")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vcek = x509.load_der_x509_certificate(virtee.vcek)
    ext = vcek.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.4")).value
    assert isinstance(ext, x509.UnrecognizedExtension)
    hwid = ext.value
    assert r.chip_id == hwid
    assert certificate_product(vcek) == "Milan"
    assert certificate_tcb(vcek, "Milan") == r.reported_tcb
    assert r.to_bytes() == virtee.report


def _mutated(report: bytes, offset: int, value: int) -> bytes:
    b = bytearray(report)
    b[offset] = value
    return bytes(b)


def _malformed_message(data: bytes) -> str:
    with pytest.raises(AttestationError) as e:
        parse_snp_report(data)
    assert e.value.kind == "malformed"
    return str(e.value)


def test_parser_refusals(virtee):
    r = virtee.report
    assert "1183 bytes" in _malformed_message(r[:-1])
    assert "1185 bytes" in _malformed_message(r + b"\0")
    for version in (0, 1, 6, 0xFF):
        assert "version" in _malformed_message(_mutated(r, 0, version))
    assert "signature_algo" in _malformed_message(_mutated(r, 0x34, 2))
    assert "bit 17" in _malformed_message(_mutated(r, 0x0A, 0x01))  # SMT without the must-be-one bit
    assert "26-63" in _malformed_message(_mutated(r, 0x0B, 0x04))  # policy bit 26
    assert "vmpl" in _malformed_message(_mutated(r, 0x30, 4))
    assert "signer_info" in _malformed_message(_mutated(r, 0x48, 0x20))  # bit 5
    assert "signing key 2" in _malformed_message(_mutated(r, 0x48, 2 << 2))
    assert "reserved0" in _malformed_message(_mutated(r, 0x4C, 1))
    assert "cpuid" in _malformed_message(_mutated(r, 0x188, 0x19))  # version 2 has no CPUID fields
    assert "reserved1" in _malformed_message(_mutated(r, 0x18B, 1))
    assert "reserved2" in _malformed_message(_mutated(r, 0x1EB, 1))
    assert "reserved3" in _malformed_message(_mutated(r, 0x1EF, 1))
    assert "mit_vector" in _malformed_message(_mutated(r, 0x1F8, 1))  # only version 5 has them
    assert "reserved4" in _malformed_message(_mutated(r, 0x208, 1))
    assert "reserved" in _malformed_message(_mutated(r, 0x2A0 + 0x90, 1))  # signature area after R and S
    # a hypervisor-requested report has VMPL all ones
    assert parse_snp_report(r[:0x30] + b"\xff" * 4 + r[0x34:]).vmpl == 0xFFFFFFFF


# Parser-checked ranges of report[0:0x2A0] (for a version 2 report), with the word the refusal names.
_CHECKED = [
    (0x000, 0x004, "version"),
    (0x00A, 0x010, "policy"),  # bit 17 (byte 0x0A) and bits 26-63
    (0x030, 0x034, "vmpl"),
    (0x034, 0x038, "signature_algo"),
    (0x048, 0x04C, "signer_info"),
    (0x04C, 0x050, "reserved0"),
    (0x188, 0x18B, "cpuid"),
    (0x18B, 0x1A0, "reserved1"),
    (0x1EB, 0x1EC, "reserved2"),
    (0x1EF, 0x1F0, "reserved3"),
    (0x1F8, 0x208, "mit_vector"),
    (0x208, 0x2A0, "reserved4"),
]


def _expected(offset: int) -> tuple[str, str]:
    for lo, hi, word in _CHECKED:
        if lo <= offset < hi:
            return "malformed", word
    return "signature", "signature does not verify"


@pytest.mark.parametrize("name", ["go_sev", "virtee"])
def test_every_signed_byte_flipped(name, request):
    v: Vector = request.getfixturevalue(name)
    for offset in range(SIGNED_SIZE):
        kind, word = _expected(offset)
        with pytest.raises(AttestationError) as e:
            verify_snp(
                _mutated(v.report, offset, v.report[offset] ^ 0xFF), vcek=v.vcek, chain=v.chain, now=v.now
            )
        assert (offset, e.value.kind) == (offset, kind)
        assert word in str(e.value), (offset, str(e.value))


@pytest.mark.parametrize("name", ["go_sev", "virtee"])
def test_signature_bytes_flipped(name, request):
    v: Vector = request.getfixturevalue(name)
    for offset in range(SIGNED_SIZE, SIGNED_SIZE + 144, 3):  # R and S
        e = refused(
            _mutated(v.report, offset, v.report[offset] ^ 0x01), vcek=v.vcek, chain=v.chain, now=v.now
        )
        assert e.kind == "signature"


# ---- an AMD-shaped PKI: Genoa and Turin TCB layouts, report versions 3-5, VLEKs, CRLs ------------------


@pytest.fixture(scope="module")
def genoa():
    pki = AmdPki("Genoa")
    vcek, key = pki.leaf(GENOA_SPL, hwid=CHIP)
    return pki, vcek, key


def test_genoa_v3(genoa):
    pki, vcek, key = genoa
    report = make_report(key)
    ev = verify_snp(report, vcek=vcek, chain=pki.chain(), roots=[pki.ark], now=NOW)
    assert ev.claims["product"] == "Genoa"
    assert ev.claims["reported_tcb"] == {"bootloader": 7, "tee": 0, "snp": 14, "microcode": 72}
    assert ev.claims["cpuid"] == {"family": 0x19, "model": 0x11, "stepping": 0}
    assert ev.measurements["measurement"] == report[0x90:0xC0].hex()
    assert ev.root == pki.ark.subject.rfc4514_string()
    # Without the caller's roots, the pinned AMD root is required: this test ARK is not it.
    assert refused(report, vcek=vcek, chain=pki.chain(), now=NOW).kind == "chain"


def test_turin_v4_layout_and_short_hwid():
    pki = AmdPki("Turin")
    vcek, key = pki.leaf(TURIN_SPL, hwid=CHIP[:8])  # Turin VCEKs name the first 8 bytes of CHIP_ID
    report = make_report(key, version=4, tcb=TURIN_TCB, cpuid_fam_id=0x1A, cpuid_mod_id=0x02)
    ev = verify_snp(report, vcek=vcek, chain=pki.chain(), roots=[pki.ark], now=NOW)
    assert ev.claims["reported_tcb"] == {"fmc": 1, "bootloader": 2, "tee": 3, "snp": 4, "microcode": 0xD1}
    # The same bytes in the Milan/Genoa order would be another TCB entirely.
    assert decode_tcb(TURIN_TCB, "Genoa") == {"bootloader": 1, "tee": 2, "snp": 0, "microcode": 0xD1}
    # A Turin VCEK without its FMC SPL cannot be matched.
    partial, key2 = pki.leaf({k: v for k, v in TURIN_SPL.items() if k != "fmc"}, hwid=CHIP[:8])
    report2 = make_report(key2, version=4, tcb=TURIN_TCB, cpuid_fam_id=0x1A, cpuid_mod_id=0x02)
    e = refused(report2, vcek=partial, chain=pki.chain(), roots=[pki.ark], now=NOW)
    assert (e.kind, "fmc" in str(e)) == ("malformed", True)


def test_v5_mitigation_vectors(genoa):
    pki, vcek, key = genoa
    report = make_report(key, version=5, launch_mit_vector=3, current_mit_vector=7)
    ev = verify_snp(report, vcek=vcek, chain=pki.chain(), roots=[pki.ark], now=NOW)
    assert (ev.claims["launch_mit_vector"], ev.claims["current_mit_vector"]) == (3, 7)


def test_vlek():
    pki = AmdPki("Genoa")
    vlek, key = pki.leaf(GENOA_SPL, vlek=True)  # no hwID: a VLEK belongs to a cloud provider
    report = make_report(key, signer_info=1 << 2)
    ev = verify_snp(report, vcek=vlek, chain=pki.chain(vlek=True), roots=[pki.ark], now=NOW)
    assert ev.claims["signing_key"] == "vlek"
    # The report says VCEK, the certificate is a VLEK.
    e = refused(make_report(key), vcek=vlek, chain=pki.chain(vlek=True), roots=[pki.ark], now=NOW)
    assert e.kind == "collateral-mismatch"
    # A VLEK issued by the ASK, or a VCEK issued by the ASVK, is not AMD's PKI.
    wrong, key3 = pki.leaf(GENOA_SPL, vlek=True, issuer_vlek=False)
    e = refused(
        make_report(key3, signer_info=1 << 2), vcek=wrong, chain=pki.chain(), roots=[pki.ark], now=NOW
    )
    assert e.kind == "chain"
    wrong, key4 = pki.leaf(GENOA_SPL, hwid=CHIP, issuer_vlek=True)
    e = refused(make_report(key4), vcek=wrong, chain=pki.chain(vlek=True), roots=[pki.ark], now=NOW)
    assert e.kind == "chain"


def test_report_checks_against_the_vcek(genoa):
    pki, vcek, key = genoa
    kw: dict[str, Any] = {"vcek": vcek, "chain": pki.chain(), "roots": [pki.ark], "now": NOW}
    older = bytes([6, 0, 0, 0, 0, 0, 14, 72])
    e = refused(make_report(key, tcb=older), **kw)
    assert (e.kind, "bootloader" in str(e)) == ("tcb-no-match", True)
    assert refused(make_report(key, chip_id=bytes(range(2, 66))), **kw).kind == "collateral-mismatch"
    # MASK_CHIP_KEY, or a chip ID the firmware zeroed (MASK_CHIP_ID): nothing to compare.
    assert verify_snp(make_report(key, chip_id=bytes(range(2, 66)), signer_info=2), **kw).claims[
        "mask_chip_key"
    ]
    assert verify_snp(make_report(key, chip_id=bytes(64)), **kw)
    # The signed CPUID says Milan while the VCEK is Genoa's.
    assert refused(make_report(key, cpuid_mod_id=0x01), **kw).kind == "collateral-mismatch"
    # Signing key "none": the firmware did not sign this report.
    e = refused(make_report(key, signer_info=7 << 2), **kw)
    assert (e.kind, "not signed" in str(e)) == ("signature", True)
    # A genuine report the hypervisor requested: REPORT_DATA is the host's, not the guest's.
    e = refused(make_report(key, vmpl=0xFFFFFFFF), **kw)
    assert (e.kind, "hypervisor" in str(e)) == ("policy", True)
    assert verify_snp(make_report(key, vmpl=3), **kw).claims["vmpl"] == 3
    # The report is signed by another key than the VCEK's.
    assert refused(make_report(ec.generate_private_key(ec.SECP384R1())), **kw).kind == "signature"


def test_vcek_shape_checks():
    pki = AmdPki("Genoa")
    kw: dict[str, Any] = {"chain": pki.chain(), "roots": [pki.ark], "now": NOW}
    p256 = ec.generate_private_key(ec.SECP256R1())
    vcek, _ = pki.leaf(GENOA_SPL, hwid=CHIP, key=p256)
    e = refused(make_report(ec.generate_private_key(ec.SECP384R1())), vcek=vcek, **kw)
    assert (e.kind, "P-384" in str(e)) == ("signature", True)
    no_hwid, key = pki.leaf(GENOA_SPL)
    assert refused(make_report(key), vcek=no_hwid, **kw).kind == "malformed"
    bad_name, key = pki.leaf(GENOA_SPL, hwid=CHIP, product_name="Naples-B0")
    assert refused(make_report(key), vcek=bad_name, **kw).kind == "malformed"
    # Without a productName, the product comes from the caller, or from the root that anchors the chain.
    unnamed, key = pki.leaf(GENOA_SPL, hwid=CHIP, product_name=None)
    assert verify_snp(make_report(key), vcek=unnamed, **kw).claims["product"] == "Genoa"
    assert verify_snp(make_report(key), vcek=unnamed, product="Genoa", **kw).claims["product"] == "Genoa"
    odd_root = AmdPki("Odd")
    unnamed, key = odd_root.leaf(GENOA_SPL, hwid=CHIP, product_name=None)
    e = refused(make_report(key), vcek=unnamed, chain=odd_root.chain(), roots=[odd_root.ark], now=NOW)
    assert (e.kind, "product=" in str(e)) == ("malformed", True)


def test_crls_from_the_ark(genoa):
    pki, vcek, key = genoa
    report = make_report(key)

    def crl(revoked=(), last=T0, next_=T0 + dt.timedelta(days=60)) -> bytes:
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(pki.ark.subject)
            .last_update(last)
            .next_update(next_)
        )
        for serial in revoked:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(last).build()
            )
        return b.sign(pki.ark_key, hashes.SHA384(), rsa_padding=PSS).public_bytes(Encoding.DER)

    kw: dict[str, Any] = {"vcek": vcek, "chain": pki.chain(), "roots": [pki.ark], "now": NOW}
    ev = verify_snp(report, crls=[crl()], **kw)
    assert ev.valid_from == T0 and ev.valid_until == T0 + dt.timedelta(days=60)  # bounded by the CRL
    assert refused(report, crls=[crl((pki.ask.serial_number,))], **kw).kind == "revoked"
    assert refused(report, crls=[crl(next_=NOW - dt.timedelta(days=1))], **kw).kind == "expired"
    assert refused(report, crls=[crl(last=NOW + dt.timedelta(days=1))], **kw).kind == "not-yet-valid"


# ---- fuzzing -----------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2 * REPORT_SIZE))
def test_fuzz_parse_arbitrary_bytes(data):
    with pytest.raises(AttestationError) as e:
        parse_snp_report(data)
    assert e.value.kind == "malformed"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, REPORT_SIZE - 1), st.integers(1, 255)), min_size=1, max_size=6))
def test_fuzz_mutated_report(virtee, flips):
    report = bytearray(virtee.report)
    for offset, xor in flips:
        report[offset] ^= xor
    if bytes(report) == virtee.report:
        return
    with pytest.raises(AttestationError):
        verify_snp(bytes(report), vcek=virtee.vcek, chain=virtee.chain, now=VIRTEE_TIME)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_certificates(virtee, data):
    target = data.draw(st.sampled_from(["vcek", "chain"]))
    blob = bytearray(getattr(virtee, target))
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    args = {"vcek": virtee.vcek, "chain": virtee.chain} | {target: bytes(blob)}
    with contextlib.suppress(AttestationError):  # any verdict, as long as it is a clean one
        verify_snp(virtee.report, now=VIRTEE_TIME, **args)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1500) | st.data())
def test_fuzz_crl_bytes(genoa, crl):
    pki, vcek, key = genoa
    if not isinstance(crl, bytes):  # a genuine CRL of the ARK with a few bytes changed
        genuine = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(pki.ark.subject)
            .last_update(T0)
            .next_update(T0 + dt.timedelta(days=60))
            .add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(5).revocation_date(T0).build()
            )
            .sign(pki.ark_key, hashes.SHA384(), rsa_padding=PSS)
            .public_bytes(Encoding.DER)
        )
        blob = bytearray(genuine)
        for _ in range(crl.draw(st.integers(1, 3))):
            blob[crl.draw(st.integers(0, len(blob) - 1))] ^= crl.draw(st.integers(1, 255))
        crl = bytes(blob)
    report = _genoa_report(key)
    with contextlib.suppress(AttestationError):
        verify_snp(report, vcek=vcek, chain=pki.chain(), roots=[pki.ark], crls=[crl], now=NOW)


_REPORTS: dict[int, bytes] = {}


def _genoa_report(key) -> bytes:
    if id(key) not in _REPORTS:
        _REPORTS[id(key)] = make_report(key)
    return _REPORTS[id(key)]


def test_naive_time_is_a_programming_error(virtee):
    with pytest.raises(ValueError, match="timezone"):
        verify_snp(virtee.report, vcek=virtee.vcek, now=dt.datetime(2025, 1, 1))
