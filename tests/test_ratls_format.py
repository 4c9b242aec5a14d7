"""The RA-TLS certificate, byte for byte: Gramine's two extensions, the CBOR of the TCG DICE tagged
evidence, the report data each quote carries; what the enclave accepts from the quoting callable; and
every malformed extension refused with a one-line error."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from haven.attest.dcap.quote import parse_quote
from haven.errors import QuoteError
from haven.shield.ratls import (
    LEGACY_QUOTE_OID,
    TAGGED_EVIDENCE_OID,
    RatlsError,
    encode_claims,
    encode_evidence,
    make_ratls_identity,
    parse_ratls_certificate,
    spki_der,
)
from haven.tee.sgx.structs import Report
from tests.ratls_support import World, build_app_bundle, certificate, make_world

# The DER of each OID as it appears in the certificate (tag 06, length, content).
STANDARD_OID_DER = bytes.fromhex("0606 678105050409".replace(" ", ""))
# Gramine's legacy OID: the content is itself "06 09 <1.2.840.113741.1337.6>".
LEGACY_OID_DER = bytes.fromhex("060b 06092a864886f84d8a3906".replace(" ", ""))
GRAMINE_QUOTE_MAX = 8192  # SGX_QUOTE_MAX_SIZE in Gramine's sgx_attest.h


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("ratls-format"))


@pytest.fixture(scope="module")
def identity(world: World):
    return world.identity()


def _ext(cert_der: bytes, oid: x509.ObjectIdentifier) -> bytes:
    value = x509.load_der_x509_certificate(cert_der).extensions.get_extension_for_oid(oid).value
    assert isinstance(value, x509.UnrecognizedExtension)
    return value.value


# -- the encoding ------------------------------------------------------------------------------------------


def test_claims_are_the_pubkey_hash_map_byte_for_byte(identity) -> None:
    digest = hashlib.sha256(identity.spki).digest()
    # [1, h'<32 bytes>']: array(2), uint 1 (IANA sha-256), bstr(32)
    hash_entry = b"\x82\x01\x58\x20" + digest
    # {"pubkey-hash": h'<hash-entry>'}: map(1), tstr(11), bstr(36)
    assert identity.claims == b"\xa1\x6bpubkey-hash\x58\x24" + hash_entry
    assert encode_claims(identity.spki) == identity.claims


def test_tagged_evidence_is_tag_60000_of_two_byte_strings(identity) -> None:
    value = _ext(identity.certificate_der, TAGGED_EVIDENCE_OID)
    quote, claims = identity.quote, identity.claims
    # tag(60000) = d9 ea60; array(2) = 82; bstr with a 2-byte length = 59 LLLL; bstr(51) = 58 33
    expected = b"\xd9\xea\x60\x82\x59" + len(quote).to_bytes(2, "big") + quote + b"\x58\x33" + claims
    assert value == expected == encode_evidence(quote, claims) == identity.evidence


def test_legacy_extension_is_the_raw_quote(identity) -> None:
    assert _ext(identity.certificate_der, LEGACY_QUOTE_OID) == identity.legacy_quote


def test_each_quote_binds_its_extension(world: World, identity) -> None:
    standard, legacy = parse_quote(identity.quote), parse_quote(identity.legacy_quote)
    assert standard.report_data == hashlib.sha256(identity.claims).digest() + bytes(32)
    assert legacy.report_data == hashlib.sha256(identity.spki).digest() + bytes(32)
    for q in (standard, legacy):
        assert q.sgx_body.mrenclave == world.mrenclave


def test_the_key_is_p384_by_default_and_p256_on_request(world: World, identity) -> None:
    cert = x509.load_der_x509_certificate(identity.certificate_der)
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    assert identity.spki == spki_der(key)
    small = world.identity(curve="P-256")
    small_key = x509.load_der_x509_certificate(small.certificate_der).public_key()
    assert isinstance(small_key, ec.EllipticCurvePublicKey) and small_key.curve.name == "secp256r1"
    assert parse_ratls_certificate(small.certificate_der).extension == "tcg-dice"
    with pytest.raises(ValueError, match="curve"):
        world.identity(curve="P-521")


def test_both_extensions_are_non_critical_legacy_first(identity) -> None:
    cert = x509.load_der_x509_certificate(identity.certificate_der)
    oids = [e.oid for e in cert.extensions]
    assert oids.index(LEGACY_QUOTE_OID) < oids.index(TAGGED_EVIDENCE_OID)
    for oid in (LEGACY_QUOTE_OID, TAGGED_EVIDENCE_OID):
        assert cert.extensions.get_extension_for_oid(oid).critical is False
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.value.ca is False
    cert.verify_directly_issued_by(cert)  # self-signed


def _gramine_find_oid(exts: bytes, oid: bytes) -> bytes:
    """What Gramine's find_oid_in_cert_extensions() does: find the OID bytes, skip a critical=FALSE
    BOOLEAN if present, then expect an OCTET STRING with a two-byte length, of 128..8192 bytes."""
    at = exts.find(oid)
    assert at >= 0, "OID not found"
    p = at + len(oid)
    if exts[p] == 0x01:
        assert exts[p + 1 : p + 3] == b"\x01\x00"
        p += 3
    assert exts[p] == 0x04 and exts[p + 1] == 0x82
    size = int.from_bytes(exts[p + 2 : p + 4], "big")
    assert 128 <= size <= GRAMINE_QUOTE_MAX
    return exts[p + 4 : p + 4 + size]


def test_gramine_finds_both_extensions(identity) -> None:
    tbs = x509.load_der_x509_certificate(identity.certificate_der).tbs_certificate_bytes
    # Gramine searches for the legacy OID's *content* bytes (its g_ratls_quote_oid).
    assert _gramine_find_oid(tbs, LEGACY_OID_DER[2:]) == identity.legacy_quote
    assert LEGACY_OID_DER in tbs
    assert _gramine_find_oid(tbs, STANDARD_OID_DER) == identity.evidence


def test_a_fresh_key_and_certificate_every_time(world: World, identity) -> None:
    other = world.identity()
    assert other.spki != identity.spki and other.certificate_der != identity.certificate_der
    assert repr(other) == f"RatlsIdentity({len(other.certificate_der)}-byte certificate)"  # never the key


# -- what the enclave accepts from the quoting callable (the host relays quotes) --------------------------


def _lying(world: World, answer) -> None:
    with pytest.raises(RatlsError) as e:
        make_ratls_identity(world.enclave, answer, target=world.qe.target_info())
    assert e.value.kind == "quote"
    assert "\n" not in str(e.value)


def test_refuses_a_quote_of_another_report(world: World, identity) -> None:
    # An old quote (for an earlier key) replayed, whatever report is asked.
    _lying(world, lambda report: identity.quote)


def test_refuses_another_enclaves_quote(world: World, tmp_path: Path) -> None:
    other = world.launch(build_app_bundle(tmp_path, greeting="other"))

    def replace(report: Report) -> bytes:
        target = world.qe.target_info()
        return world.qe.quote(other.ereport(target, report.body.reportdata))

    _lying(world, replace)


def test_refuses_garbage_and_non_bytes(world: World) -> None:
    _lying(world, lambda report: b"\x03\x00\x02\x00" + bytes(600))
    _lying(world, lambda report: "a quote")
    _lying(world, lambda report: bytes(1 << 17))


def test_refuses_a_quote_whose_signature_is_broken(world: World) -> None:
    def corrupt(report: Report) -> bytes:
        q = bytearray(world.qe.quote(report))
        q[436] ^= 1  # the first byte of the ISV signature (sgx_ql_ecdsa_sig_data_t.sig)
        return bytes(q)

    _lying(world, corrupt)


def test_a_refusal_of_the_quoting_enclave_is_reported(world: World) -> None:
    def refuse(report: Report) -> bytes:
        raise QuoteError("REPORT refused by local attestation: bad MAC")

    _lying(world, refuse)


# -- malformed extensions: each refused, with its own message ------------------------------------------


def _refused(cert_der: bytes, kind: str, match: str) -> None:
    with pytest.raises(RatlsError, match=match) as e:
        parse_ratls_certificate(cert_der)
    assert e.value.kind == kind
    assert "\n" not in str(e.value)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _with_evidence(value: bytes, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    key = key or _key()
    return certificate(key, [(TAGGED_EVIDENCE_OID, value)])


def _claims_for(key: ec.EllipticCurvePrivateKey, **override) -> bytes:
    spki = spki_der(key.public_key())
    claims = {"pubkey-hash": cbor2.dumps([1, hashlib.sha256(spki).digest()]), **override}
    return cbor2.dumps(claims)


QUOTE = b"\x03\x00" + bytes(1000)  # only its place matters here: the quote is verified later


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (b"\xff\x00", "not valid CBOR"),
        (b"\xd9\xea\x60\x82\x41", "not valid CBOR"),  # truncated
        (cbor2.dumps(cbor2.CBORTag(60001, [QUOTE, b"\xa0"])), "CBOR tag 60001"),
        (cbor2.dumps([QUOTE, b"\xa0"]), "untagged"),
        (cbor2.dumps(cbor2.CBORTag(60000, {"q": QUOTE})), "array of two"),
        (cbor2.dumps(cbor2.CBORTag(60000, [QUOTE])), "array of two"),
        (cbor2.dumps(cbor2.CBORTag(60000, [QUOTE, b"\xa0", b""])), "array of two"),
        (cbor2.dumps(cbor2.CBORTag(60000, ["quote", b"\xa0"])), "quote must be"),
        (cbor2.dumps(cbor2.CBORTag(60000, [b"", b"\xa0"])), "quote must be"),
        (cbor2.dumps(cbor2.CBORTag(60000, [QUOTE, b""])), "claims must be a non-empty byte"),
        (cbor2.dumps(cbor2.CBORTag(60000, [QUOTE, {"pubkey-hash": b""}])), "claims must be a non-empty byte"),
        (cbor2.dumps(cbor2.CBORTag(60000, [QUOTE, b"\xa0"])), "non-empty CBOR map"),
        (cbor2.dumps(cbor2.CBORTag(60000, [QUOTE, cbor2.dumps([1, 2])])), "non-empty CBOR map"),
        (cbor2.dumps(cbor2.CBORTag(60000, [QUOTE, b"\xa1\x61a"])), "not valid CBOR"),
        (cbor2.dumps(cbor2.CBORTag(60000, [QUOTE, cbor2.dumps({1: b"x"})])), "claim name 1"),
        (cbor2.dumps(cbor2.CBORTag(60000, [QUOTE, cbor2.dumps({"nonce": b"x"})])), "no 'pubkey-hash'"),
        (cbor2.dumps(cbor2.CBORTag(60000, [QUOTE, cbor2.dumps({"pubkey-hash": [1, b"x"]})])), "byte string"),
        (cbor2.dumps(cbor2.CBORTag(60000, [QUOTE, b"\xa0"])) + b"\x00", "1 bytes follow"),
        # a map with the same claim twice: the second must not silently win
        (
            cbor2.dumps(cbor2.CBORTag(60000, [QUOTE, b"\xa2\x6bpubkey-hash\x41\x01\x6bpubkey-hash\x41\x02"])),
            "not valid CBOR",
        ),
    ],
)
def test_malformed_tagged_evidence(value: bytes, match: str) -> None:
    _refused(_with_evidence(value), "malformed", match)


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        (b"\x01", "hash-entry must be an array"),
        (cbor2.dumps([1]), "hash-entry must be an array"),
        (cbor2.dumps([1, b"x", b"y"]), "hash-entry must be an array"),
        (cbor2.dumps([2, bytes(32)]), "hash-alg-id 2"),
        (cbor2.dumps([True, bytes(32)]), "hash-alg-id True"),
        (cbor2.dumps(["sha-256", bytes(32)]), "hash-alg-id 'sha-256'"),
        (cbor2.dumps([1, bytes(31)]), "32-byte string"),
        (cbor2.dumps([7, bytes(32)]), "48-byte string"),
        (cbor2.dumps([1, "00" * 32]), "32-byte string"),
        (b"\xff", "not valid CBOR"),
    ],
)
def test_malformed_pubkey_hash(entry: bytes, match: str) -> None:
    key = _key()
    claims = cbor2.dumps({"pubkey-hash": entry})
    _refused(_with_evidence(encode_evidence(QUOTE, claims), key), "malformed", match)


def test_a_nonce_claim_must_be_bytes() -> None:
    key = _key()
    claims = _claims_for(key, nonce="fresh")
    _refused(_with_evidence(encode_evidence(QUOTE, claims), key), "malformed", "'nonce'")


@pytest.mark.parametrize(("alg", "hash_fn"), [(1, hashlib.sha256), (7, hashlib.sha384), (8, hashlib.sha512)])
def test_every_hash_algorithm_verifiers_must_support(alg: int, hash_fn) -> None:
    key = _key()
    digest = hash_fn(spki_der(key.public_key())).digest()
    claims = cbor2.dumps({"pubkey-hash": cbor2.dumps([alg, digest]), "nonce": b"n", "other": 5})
    found = parse_ratls_certificate(_with_evidence(encode_evidence(QUOTE, claims), key))
    assert found.extension == "tcg-dice" and found.quote == QUOTE
    assert found.binding == hashlib.sha256(claims).digest()
    assert found.claims["nonce"] == b"n"  # other claims are kept, and ignored


def test_pubkey_hash_of_another_key_is_a_binding_failure() -> None:
    key, other = _key(), _key()
    value = encode_evidence(QUOTE, _claims_for(other))
    _refused(_with_evidence(value, key), "binding", "hash of another key")


def test_no_extension_at_all() -> None:
    _refused(certificate(_key(), []), "no-evidence", "2.23.133.5.4.9")


def test_empty_and_oversized_extensions() -> None:
    _refused(certificate(_key(), [(LEGACY_QUOTE_OID, b"")]), "malformed", "empty")
    _refused(_with_evidence(bytes(70_000)), "malformed", "at most")


def test_the_standard_extension_wins_and_is_not_bypassed(identity) -> None:
    # A valid legacy extension does not rescue a broken standard one.
    key = _key()
    cert = certificate(key, [(LEGACY_QUOTE_OID, identity.legacy_quote), (TAGGED_EVIDENCE_OID, b"\xff")])
    _refused(cert, "malformed", "tcg-dice")


def test_only_the_legacy_extension() -> None:
    key = _key()
    found = parse_ratls_certificate(certificate(key, [(LEGACY_QUOTE_OID, QUOTE)]))
    assert found.extension == "legacy" and found.quote == QUOTE
    assert found.binding == hashlib.sha256(spki_der(key.public_key())).digest()
    found.check_binding(found.binding + bytes(32))
    with pytest.raises(RatlsError, match="public key") as e:
        found.check_binding(bytes(64))
    assert e.value.kind == "binding"


def test_not_a_certificate() -> None:
    _refused(b"\x30\x03\x02\x01\x01", "certificate", "not an X.509 certificate")
    _refused(b"", "certificate", "not an X.509 certificate")
    with pytest.raises(RatlsError, match="not DER bytes"):
        parse_ratls_certificate("MIIB...")  # type: ignore[arg-type]


def test_keys_other_than_p256_and_p384_are_refused() -> None:
    key = ec.generate_private_key(ec.SECP521R1())
    _refused(certificate(key, [(LEGACY_QUOTE_OID, QUOTE)]), "certificate", "P-256 or P-384")
    signer = _key()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cert = certificate(signer, [(LEGACY_QUOTE_OID, QUOTE)], public_key=rsa_key.public_key())
    _refused(cert, "certificate", "P-256 or P-384")


def test_a_certificate_not_signed_by_its_own_key() -> None:
    key, other = _key(), _key()
    _refused(certificate(key, [(LEGACY_QUOTE_OID, QUOTE)], signer=other), "certificate", "self-signed")


def test_a_duplicated_extension_is_refused() -> None:
    # cryptography will not write one: write a sibling OID of the same length and patch it in the DER.
    sibling = x509.ObjectIdentifier("0.6.9.42.840.113741.1337.7")
    der = certificate(_key(), [(LEGACY_QUOTE_OID, QUOTE), (sibling, QUOTE)])
    patched = der.replace(LEGACY_OID_DER[:-1] + b"\x07", LEGACY_OID_DER)
    assert patched.count(LEGACY_OID_DER) == 2
    _refused(patched, "certificate", "cannot be decoded")


_FUZZ_KEY = ec.generate_private_key(ec.SECP256R1())


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=1, max_size=400))
def test_fuzzed_evidence_fails_cleanly(value: bytes) -> None:
    try:
        parse_ratls_certificate(certificate(_FUZZ_KEY, [(TAGGED_EVIDENCE_OID, value)]))
    except RatlsError as e:
        assert e.kind in ("malformed", "binding") and "\n" not in str(e)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_evidence_fails_cleanly_or_keeps_its_binding(data: st.DataObject) -> None:
    spki = spki_der(_FUZZ_KEY.public_key())
    claims = encode_claims(spki)
    value = bytearray(encode_evidence(QUOTE, claims))
    at = data.draw(st.integers(0, len(value) - 1))
    value[at] ^= data.draw(st.integers(1, 255))
    try:
        found = parse_ratls_certificate(certificate(_FUZZ_KEY, [(TAGGED_EVIDENCE_OID, bytes(value))]))
    except RatlsError as e:
        assert e.kind in ("malformed", "binding") and "\n" not in str(e)
    else:
        # Only a change inside the quote's bytes leaves the evidence readable, with the same binding.
        assert found.binding == hashlib.sha256(claims).digest()
        assert found.quote != QUOTE
