"""Certificate chains and CRLs (haven.attest.chain), against small PKIs built here with `cryptography`."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from haven.attest.chain import (
    MAX_CHAIN,
    check_validity,
    load_certificates,
    load_crl,
    verify_chain,
)
from haven.attest.errors import AttestationError

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
NOW = T0 + dt.timedelta(days=100)
YEAR = dt.timedelta(days=365)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Node:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def issue(
    cn: str,
    issuer: Node | None = None,
    *,
    ca: bool = True,
    path_length: int | None = None,
    basic_constraints: bool = True,
    key_cert_sign: bool = True,
    not_before: dt.datetime = T0,
    not_after: dt.datetime = T0 + 10 * YEAR,
    serial: int | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
    issuer_name: x509.Name | None = None,
) -> Node:
    key = key or ec.generate_private_key(ec.SECP384R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name or (issuer.cert.subject if issuer else _name(cn)))
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if basic_constraints:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), True
        )
    if ca:
        usage = x509.KeyUsage(
            digital_signature=False,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=key_cert_sign,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )
        builder = builder.add_extension(usage, True)
    signer = issuer.key if issuer else key
    return Node(builder.sign(signer, hashes.SHA384()), key)


def make_crl(
    issuer: Node,
    revoked: tuple[int, ...] = (),
    *,
    last: dt.datetime = T0,
    next_: dt.datetime = T0 + YEAR,
    signer: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
) -> x509.CertificateRevocationList:
    builder = x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
    builder = builder.last_update(last).next_update(next_)
    for serial in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(last).build()
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(signer or issuer.key, hashes.SHA384())


@pytest.fixture(scope="module")
def pki():
    root = issue("Test Root")
    inter = issue("Test Intermediate", root)
    leaf = issue("Test Leaf", inter, ca=False)
    return root, inter, leaf


def kind_of(chain, roots, **kw) -> str:
    with pytest.raises(AttestationError) as e:
        verify_chain(chain, roots, **kw)
    return e.value.kind


# ---- good chains -------------------------------------------------------------------------------------


def test_chain_to_root(pki):
    root, inter, leaf = pki
    v = verify_chain([leaf.cert, inter.cert, root.cert], [root.cert], now=NOW)
    assert v.leaf == leaf.cert and v.root == root.cert
    assert v.not_before == T0 and v.not_after == T0 + 10 * YEAR
    # The chain may stop below the root: the pinned root is appended.
    v = verify_chain([leaf.cert, inter.cert], [root.cert], now=NOW)
    assert v.certificates == (leaf.cert, inter.cert, root.cert)


def test_window_is_the_intersection(pki):
    root, inter, _ = pki
    short = issue("Short Leaf", inter, ca=False, not_before=T0 + YEAR, not_after=T0 + 2 * YEAR)
    v = verify_chain([short.cert, inter.cert], [root.cert], now=T0 + YEAR + dt.timedelta(days=1))
    assert (v.not_before, v.not_after) == (T0 + YEAR, T0 + 2 * YEAR)


def test_pinned_copy_of_a_reissued_root_anchors(pki):
    root, inter, leaf = pki
    reissued = issue("Test Root", key=root.key, not_before=T0 - YEAR, not_after=T0 + 30 * YEAR)
    v = verify_chain([leaf.cert, inter.cert, root.cert], [reissued.cert], now=NOW)
    assert v.root == reissued.cert  # the pinned copy, not the one the evidence carried
    assert v.not_after == T0 + 10 * YEAR


def test_rsa_pss_chain_like_amd(vectors):
    ask, ark = load_certificates((vectors / "snp" / "virtee-sev" / "cert_chain_milan").read_bytes(), "chain")
    v = verify_chain([ask, ark], [ark], now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    assert v.root.subject.rfc4514_string().startswith("CN=ARK-Milan")


def test_rsa_pss_signed_leaf():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("PSS Root"))
        .issuer_name(_name("PSS Root"))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(T0)
        .not_valid_after(T0 + YEAR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA384(), rsa_padding=padding.PSS(padding.MGF1(hashes.SHA384()), 48))
    )
    leaf_key = ec.generate_private_key(ec.SECP384R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("PSS Leaf"))
        .issuer_name(root_cert.subject)
        .public_key(leaf_key.public_key())
        .serial_number(1)
        .not_valid_before(T0)
        .not_valid_after(T0 + YEAR)
        .sign(key, hashes.SHA384(), rsa_padding=padding.PSS(padding.MGF1(hashes.SHA384()), 48))
    )
    assert verify_chain([leaf], [root_cert], now=NOW).root == root_cert


# ---- broken chains -----------------------------------------------------------------------------------


def test_empty_and_overlong_chains_are_malformed(pki):
    root, inter, leaf = pki
    assert kind_of([], [root.cert], now=NOW) == "malformed"
    assert kind_of([leaf.cert] + [inter.cert] * MAX_CHAIN, [root.cert], now=NOW) == "malformed"


def test_no_roots(pki):
    _, inter, leaf = pki
    assert kind_of([leaf.cert, inter.cert], [], now=NOW) == "chain"


def test_untrusted_root(pki):
    _, inter, leaf = pki
    other = issue("Other Root")
    assert kind_of([leaf.cert, inter.cert], [other.cert], now=NOW) == "chain"


def test_fake_root_with_the_pinned_name(pki):
    root, _, _ = pki
    fake_root = issue("Test Root")  # same name, other key
    fake_inter = issue("Test Intermediate", fake_root)
    fake_leaf = issue("Test Leaf", fake_inter, ca=False)
    assert kind_of([fake_leaf.cert, fake_inter.cert, fake_root.cert], [root.cert], now=NOW) == "signature"


def test_wrong_issuer(pki):
    root, inter, _ = pki
    stranger = issue("Stranger CA", root)
    leaf = issue("Leaf", stranger, ca=False)
    with pytest.raises(AttestationError) as e:
        verify_chain([leaf.cert, inter.cert], [root.cert], now=NOW)
    assert e.value.kind == "chain"
    assert "not issued by" in str(e.value)


def test_forged_signature(pki):
    root, inter, _ = pki
    impostor = Node(inter.cert, ec.generate_private_key(ec.SECP384R1()))  # right name, wrong key
    leaf = issue("Leaf", impostor, ca=False)
    assert kind_of([leaf.cert, inter.cert], [root.cert], now=NOW) == "signature"


def test_non_ca_issuer(pki):
    root, _, _ = pki
    not_ca = issue("Not A CA", root, ca=False)
    leaf = issue("Leaf", not_ca, ca=False)
    with pytest.raises(AttestationError) as e:
        verify_chain([leaf.cert, not_ca.cert], [root.cert], now=NOW)
    assert (e.value.kind, "not a certificate authority" in str(e.value)) == ("chain", True)


def test_issuer_without_basic_constraints(pki):
    root, _, _ = pki
    bare = issue("Bare", root, basic_constraints=False)
    leaf = issue("Leaf", bare, ca=False)
    assert kind_of([leaf.cert, bare.cert], [root.cert], now=NOW) == "chain"


def test_issuer_without_key_cert_sign(pki):
    root, _, _ = pki
    no_sign = issue("No Sign", root, key_cert_sign=False)
    leaf = issue("Leaf", no_sign, ca=False)
    with pytest.raises(AttestationError) as e:
        verify_chain([leaf.cert, no_sign.cert], [root.cert], now=NOW)
    assert (e.value.kind, "may not sign" in str(e.value)) == ("chain", True)


def test_path_length():
    root = issue("Len Root", path_length=0)
    inter = issue("Len Intermediate", root)
    leaf = issue("Len Leaf", inter, ca=False)
    with pytest.raises(AttestationError) as e:
        verify_chain([leaf.cert, inter.cert], [root.cert], now=NOW)
    assert (e.value.kind, "path length" in str(e.value)) == ("chain", True)
    # path length 0 still allows end-entity certificates directly under it
    direct = issue("Direct Leaf", root, ca=False)
    assert verify_chain([direct.cert], [root.cert], now=NOW)
    # and path length 1 allows one intermediate
    root1 = issue("Len1 Root", path_length=1)
    inter1 = issue("Len1 Intermediate", root1, path_length=0)
    assert verify_chain([issue("Leaf", inter1, ca=False).cert, inter1.cert], [root1.cert], now=NOW)


# ---- time --------------------------------------------------------------------------------------------


def test_expired_and_not_yet_valid(pki):
    root, inter, _ = pki
    leaf = issue("Timed Leaf", inter, ca=False, not_before=T0 + YEAR, not_after=T0 + 2 * YEAR)
    chain = [leaf.cert, inter.cert]
    assert kind_of(chain, [root.cert], now=T0 + YEAR - dt.timedelta(seconds=1)) == "not-yet-valid"
    assert kind_of(chain, [root.cert], now=T0 + 2 * YEAR + dt.timedelta(seconds=1)) == "expired"
    # both ends of the window are inside it (RFC 5280 4.1.2.5)
    assert verify_chain(chain, [root.cert], now=T0 + YEAR)
    assert verify_chain(chain, [root.cert], now=T0 + 2 * YEAR)


def test_expired_intermediate_and_root():
    root = issue("Old Root", not_after=T0 + YEAR)
    inter = issue("Inter", root)
    leaf = issue("Leaf", inter, ca=False)
    assert kind_of([leaf.cert, inter.cert], [root.cert], now=T0 + 2 * YEAR) == "expired"
    late = issue("Late Inter", issue("Root2"), not_before=T0 + YEAR)
    check_validity(late.cert, T0 + YEAR)
    with pytest.raises(AttestationError) as e:
        check_validity(late.cert, T0)
    assert e.value.kind == "not-yet-valid"


# ---- CRLs --------------------------------------------------------------------------------------------


def test_crl_revokes(pki):
    root, inter, leaf = pki
    crl = make_crl(inter, (leaf.cert.serial_number,))
    with pytest.raises(AttestationError) as e:
        verify_chain([leaf.cert, inter.cert], [root.cert], now=NOW, crls=[crl])
    assert (e.value.kind, "Test Leaf" in str(e.value)) == ("revoked", True)
    # the intermediate revoked by the root's CRL
    root_crl = make_crl(root, (inter.cert.serial_number,))
    assert kind_of([leaf.cert, inter.cert], [root.cert], now=NOW, crls=[root_crl]) == "revoked"


def test_root_revoked_by_its_own_crl():
    root = issue("Self Root", serial=77)
    leaf = issue("Leaf", root, ca=False)
    assert kind_of([leaf.cert], [root.cert], now=NOW, crls=[make_crl(root, (77,))]) == "revoked"


def test_crl_not_listing_the_chain_passes(pki):
    root, inter, leaf = pki
    crls = [make_crl(inter, (12345,)), make_crl(root, (67890,))]
    assert verify_chain([leaf.cert, inter.cert], [root.cert], now=NOW, crls=crls).leaf == leaf.cert


def test_crl_with_a_bad_signature(pki):
    root, inter, leaf = pki
    forged = make_crl(inter, signer=ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(AttestationError) as e:
        verify_chain([leaf.cert, inter.cert], [root.cert], now=NOW, crls=[forged])
    assert (e.value.kind, "CRL" in str(e.value)) == ("signature", True)


def test_crl_signed_with_another_key_type(pki):
    root, inter, leaf = pki
    forged = make_crl(inter, signer=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert kind_of([leaf.cert, inter.cert], [root.cert], now=NOW, crls=[forged]) == "signature"


def test_expired_and_future_crls(pki):
    root, inter, leaf = pki
    stale = make_crl(inter, last=T0, next_=T0 + dt.timedelta(days=30))
    assert kind_of([leaf.cert, inter.cert], [root.cert], now=NOW, crls=[stale]) == "expired"
    future = make_crl(inter, last=NOW + dt.timedelta(days=1), next_=NOW + YEAR)
    assert kind_of([leaf.cert, inter.cert], [root.cert], now=NOW, crls=[future]) == "not-yet-valid"


def test_crl_of_an_unrelated_ca_is_ignored(pki):
    root, inter, leaf = pki
    other = issue("Unrelated CA")
    crl = make_crl(other, (leaf.cert.serial_number,), next_=T0 + dt.timedelta(days=1))  # even stale
    assert verify_chain([leaf.cert, inter.cert], [root.cert], now=NOW, crls=[crl])


def test_require_crls(pki):
    root, inter, leaf = pki
    chain = [leaf.cert, inter.cert]
    with pytest.raises(AttestationError) as e:
        verify_chain(chain, [root.cert], now=NOW, require_crls=True)
    assert (e.value.kind, "no CRL" in str(e.value)) == ("chain", True)
    only_inter = [make_crl(inter)]
    assert kind_of(chain, [root.cert], now=NOW, crls=only_inter, require_crls=True) == "chain"
    both = [make_crl(inter), make_crl(root)]
    assert verify_chain(chain, [root.cert], now=NOW, crls=both, require_crls=True)


# ---- loading -----------------------------------------------------------------------------------------


def test_load_certificates_forms(pki):
    root, inter, leaf = pki
    pem = b"".join(c.public_bytes(Encoding.PEM) for c in (leaf.cert, inter.cert, root.cert))
    assert load_certificates(pem, "x") == [leaf.cert, inter.cert, root.cert]
    assert load_certificates(pem + b"\0", "x") == [leaf.cert, inter.cert, root.cert]  # NUL-terminated
    assert load_certificates(leaf.cert.public_bytes(Encoding.DER), "x") == [leaf.cert]


@pytest.mark.filterwarnings("ignore:Parsed a serial number")
def test_load_certificates_serial_zero(vectors):
    # AMD's VCEKs have serial number 0, which RFC 5280 forbids and `cryptography` warns about.
    (vcek,) = load_certificates((vectors / "snp" / "virtee-sev" / "vcek_milan.der").read_bytes(), "VCEK")
    assert vcek.serial_number == 0


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", b"\x30\x03\x02\x01"],
)
def test_load_certificates_garbage(data):
    with pytest.raises(AttestationError) as e:
        load_certificates(data, "the chain")
    assert e.value.kind == "malformed"
    assert "the chain" in str(e.value)


def test_load_crl_forms(pki):
    _, inter, _ = pki
    crl = make_crl(inter, (5,))
    assert load_crl(crl.public_bytes(Encoding.DER), "crl") == crl
    assert load_crl(crl.public_bytes(Encoding.PEM), "crl") == crl
    for junk in (b"", b"junk", b"-----BEGIN X509 CRL-----\nAA==\n-----END X509 CRL-----\n"):
        with pytest.raises(AttestationError) as e:
            load_crl(junk, "the CRL")
        assert e.value.kind == "malformed"


def test_der_certificate_ending_in_a_whitespace_or_nul_byte():
    # DER may end in any byte: trimming that is right for PEM text must not touch DER.
    key = ec.generate_private_key(ec.SECP256R1())
    for serial in range(1, 5000):
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("Tail"))
            .issuer_name(_name("Tail"))
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(T0)
            .not_valid_after(T0 + YEAR)
            .sign(key, hashes.SHA256())
        )
        der = cert.public_bytes(Encoding.DER)
        if der[-1:] in (b"\0", b"\n"):
            break
    else:
        pytest.fail("no certificate ending in NUL or LF was produced")
    assert load_certificates(der, "x") == [cert]


def test_undecodable_extension_is_malformed(pki):
    root, _, _ = pki
    # A BasicConstraints extension whose value is not a SEQUENCE: parsed lazily by `cryptography`.
    bad = x509.UnrecognizedExtension(x509.oid.ExtensionOID.BASIC_CONSTRAINTS, b"\x05\x00")
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Odd"))
        .issuer_name(root.cert.subject)
        .public_key(root.key.public_key())
        .serial_number(9)
        .not_valid_before(T0)
        .not_valid_after(T0 + YEAR)
        .add_extension(bad, False)
        .sign(root.key, hashes.SHA384())
    )
    with pytest.raises(AttestationError) as e:
        load_certificates(cert.public_bytes(Encoding.PEM), "the chain")
    assert e.value.kind == "malformed"
