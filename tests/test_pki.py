"""The simulated PKI: Intel's SGX extension byte for byte, certificate profiles, chaining, determinism."""

from __future__ import annotations

import datetime
from pathlib import Path

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID, SignatureAlgorithmOID

from haven.tee.sgx.quote import decode_quote_v3
from haven.tee.sim import asn1
from haven.tee.sim.pki import (
    CA_NOT_AFTER,
    LEAF_LIFETIME,
    SGX_EXTENSION_OID,
    SimPki,
    pce_id_bytes,
    pck_extension_der,
    platform_pki,
    root_ca_certificate,
)
from haven.tee.sim.platform import SimPlatform
from tests.sim_quote_support import make_platform

SGX_OID = x509.ObjectIdentifier(SGX_EXTENSION_OID)


@pytest.fixture
def platform(platform_path: Path) -> SimPlatform:
    return make_platform(platform_path)


@pytest.fixture
def pki(platform: SimPlatform) -> SimPki:
    return platform_pki(platform)


# -- DER building blocks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "der"),
    [
        (0, "020100"),
        (1, "020101"),
        (127, "02017f"),
        (128, "02020080"),
        (255, "020200ff"),
        (256, "02020100"),
        (-1, "0201ff"),
        (65535, "020300ffff"),
    ],
)
def test_integer(value: int, der: str) -> None:
    assert asn1.integer(value).hex() == der


def test_enumerated_octet_string_sequence_and_long_lengths() -> None:
    assert asn1.enumerated(0).hex() == "0a0100"
    assert asn1.octet_string(b"\x01\x02").hex() == "04020102"
    assert asn1.sequence().hex() == "3000"
    assert asn1.octet_string(bytes(200))[:3].hex() == "0481c8"
    assert asn1.octet_string(bytes(300))[:4].hex() == "0482012c"


@pytest.mark.parametrize(
    "oid", ["1.2.840.10045.4.3.2", "1.2.840.113741.1.13.1.2.18", "2.5.29.19", "2.999.3", "0.39"]
)
def test_object_identifier_decodes_back(oid: str) -> None:
    der = asn1.object_identifier(oid)
    assert der[0] == 0x06 and der[1] == len(der) - 2
    # Decode it back (X.690 8.19) to check the base-128 arcs.
    arcs, value = [], 0
    for byte in der[2:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    assert ".".join(map(str, [first, arcs[0] - 40 * first, *arcs[1:]])) == oid


def test_known_oid_encoding() -> None:
    # ecdsa-with-SHA256 as it appears in every certificate of the test vectors.
    assert asn1.object_identifier("1.2.840.10045.4.3.2").hex() == "06082a8648ce3d040302"
    with pytest.raises(ValueError):
        asn1.object_identifier("1")
    with pytest.raises(ValueError):
        asn1.object_identifier("1.40")


# -- Intel's SGX extension -------------------------------------------------------------------------


def test_sgx_extension_is_byte_identical_to_intels(vectors: Path) -> None:
    """Encoding the values of a real Intel PCK certificate reproduces its SGX extension exactly."""
    quote = decode_quote_v3((vectors / "sgx/dcap-qvl/sgx_quote.bin").read_bytes())
    leaf = x509.load_der_x509_certificate(quote.pck_chain_der()[0])
    ext = leaf.extensions.get_extension_for_oid(SGX_OID)
    assert not ext.critical
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    ours = pck_extension_der(
        ppid=bytes.fromhex("D04EC06D4E6D92DC90D0AD3CF5EE2DDF"),
        components=(11, 11, 2, 2, 255, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        pcesvn=13,
        cpusvn=bytes.fromhex("0B0B0202FF0100000000000000000000"),
        pce_id=pce_id_bytes(0),
        fmspc=bytes.fromhex("00A067110000"),
    )
    assert ours == ext.value.value


def test_sgx_extension_refuses_wrong_sizes() -> None:
    good = dict(
        ppid=bytes(16), components=(0,) * 16, pcesvn=0, cpusvn=bytes(16), pce_id=bytes(2), fmspc=bytes(6)
    )
    for name, bad in (
        ("ppid", bytes(15)),
        ("components", (0,) * 15),
        ("cpusvn", bytes(17)),
        ("pce_id", bytes(1)),
        ("fmspc", bytes(5)),
    ):
        with pytest.raises(ValueError):
            pck_extension_der(**{**good, name: bad})  # type: ignore[arg-type]


def test_pck_extension_carries_the_platform_config(platform: SimPlatform, pki: SimPki) -> None:
    ext = dcap_qvl.parse_pck_extension_from_pem(pki.pck_chain_pem())
    cfg = platform.config
    assert ext.ppid == pki.ppid and len(pki.ppid) == 16
    assert ext.cpu_svn == cfg.cpusvn
    assert ext.pce_svn == cfg.pcesvn
    assert ext.pce_id == pce_id_bytes(cfg.pce_id)
    assert ext.fmspc == cfg.fmspc
    assert ext.sgx_type == 0
    for i, svn in enumerate(cfg.tcb_components):
        assert ext.get_value(f"{SGX_EXTENSION_OID}.2.{i + 1}") == asn1.integer(svn)[2:]


# -- certificate profiles --------------------------------------------------------------------------


def _names(cert: x509.Certificate) -> tuple[str, str]:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    org = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    return str(cn), str(org)


def test_profiles(platform: SimPlatform, pki: SimPki) -> None:
    expect = [
        (pki.root_cert, "Haven Simulation Root CA", True, 1, pki.root_cert),
        (pki.platform_ca_cert, "Haven Simulation Platform CA", True, 0, pki.root_cert),
        (pki.tcb_signing_cert, "Haven Simulation TCB Signing", False, None, pki.root_cert),
        (pki.pck_cert, "Haven Simulation PCK Certificate", False, None, pki.platform_ca_cert),
    ]
    start = platform.created - datetime.timedelta(hours=1)
    for cert, name, is_ca, path_length, issuer in expect:
        assert cert.version == x509.Version.v3
        assert _names(cert) == (name, "Haven (simulated)")
        assert cert.issuer == issuer.subject
        assert cert.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert 0 < cert.serial_number < 2**159
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and bc.value.ca is is_ca and bc.value.path_length == path_length
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
        assert ku.critical
        if is_ca:
            assert ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
        else:
            assert ku.value.digital_signature and ku.value.content_commitment and not ku.value.key_cert_sign
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
        assert aki.key_identifier == issuer_ski.digest
        assert cert.not_valid_before_utc == start
        cert.verify_directly_issued_by(issuer)
        critical = {e.oid for e in cert.extensions if e.critical}
        assert critical == {ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE}
    assert pki.root_cert.not_valid_after_utc == pki.platform_ca_cert.not_valid_after_utc == CA_NOT_AFTER
    assert pki.pck_cert.not_valid_after_utc == start + LEAF_LIFETIME
    assert pki.pck_cert.extensions.get_extension_for_oid(SGX_OID).critical is False


def test_chains_in_pem(pki: SimPki) -> None:
    def subjects(pem: bytes) -> list[str]:
        return [_names(c)[0] for c in x509.load_pem_x509_certificates(pem)]

    assert subjects(pki.pck_chain_pem()) == [
        "Haven Simulation PCK Certificate",
        "Haven Simulation Platform CA",
        "Haven Simulation Root CA",
    ]
    assert subjects(pki.tcb_signing_chain_pem()) == [
        "Haven Simulation TCB Signing",
        "Haven Simulation Root CA",
    ]
    assert subjects(pki.platform_ca_chain_pem()) == [
        "Haven Simulation Platform CA",
        "Haven Simulation Root CA",
    ]


def test_keys_match_certificates(pki: SimPki) -> None:
    for key, cert in (
        (pki.root_key, pki.root_cert),
        (pki.platform_ca_key, pki.platform_ca_cert),
        (pki.tcb_signing_key, pki.tcb_signing_cert),
        (pki.pck_key, pki.pck_cert),
    ):
        assert key.public_key() == cert.public_key()


# -- determinism and separation --------------------------------------------------------------------


def _ders(pki: SimPki) -> list[bytes]:
    return [
        c.public_bytes(serialization.Encoding.DER)
        for c in (pki.root_cert, pki.platform_ca_cert, pki.tcb_signing_cert, pki.pck_cert)
    ]


def test_certificates_are_byte_identical_on_every_run(platform: SimPlatform, pki: SimPki) -> None:
    again = platform_pki(SimPlatform.open(platform.path))  # a fresh process would read the file like this
    assert _ders(again) == _ders(pki)
    assert root_ca_certificate(platform) == pki.root_cert
    assert pki.root_der() == _ders(pki)[0]


def test_another_platform_has_other_keys(pki: SimPki, tmp_path: Path) -> None:
    other = platform_pki(make_platform(tmp_path / "other.json"))
    assert all(a != b for a, b in zip(_ders(other), _ders(pki), strict=True))
    assert other.ppid != pki.ppid


def test_a_tcb_change_gives_a_new_pck_key_and_certificate(platform: SimPlatform, pki: SimPki) -> None:
    platform.config.cpusvn = bytes([13]) + platform.config.cpusvn[1:]
    platform.save()
    after = platform_pki(SimPlatform.open(platform.path))
    assert _ders(after)[:3] == _ders(pki)[:3]  # CAs and TCB signing are per platform
    assert after.pck_key.public_key() != pki.pck_key.public_key()
    assert after.pck_cert.serial_number != pki.pck_cert.serial_number
    assert dcap_qvl.parse_pck_extension_from_pem(after.pck_chain_pem()).cpu_svn[0] == 13
    assert after.ppid == pki.ppid  # the PPID names the platform, whatever its TCB
