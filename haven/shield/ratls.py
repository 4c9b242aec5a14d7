"""RA-TLS: a TLS certificate that carries the enclave's quote, interoperable with Gramine's.

The enclave makes a key pair, quotes a hash of its public key, and puts the quote in a self-signed
X.509 certificate; a client that verifies the quote and the binding knows it is talking to that
enclave, with no CA involved. Two extensions carry the evidence, both non-critical, in the order and
encoding Gramine (v1.8 and later, ``tools/sgx/ra-tls``) writes them:

1. the legacy extension, OID 0.6.9.42.840.113741.1337.6: the raw quote, whose REPORTDATA[0:32] is
   SHA-256 of the certificate's SubjectPublicKeyInfo (DER) and REPORTDATA[32:64] zero. (The odd OID is
   Gramine's: it passed the DER tag and length of 1.2.840.113741.1337.6 as the OID's content, so the
   encoded content is ``06 09 2A 86 48 86 F8 4D 8A 39 06``; clients look for exactly those bytes.)
2. the standard TCG DICE "tagged evidence" extension, OID 2.23.133.5.4.9 (tcg-dice-conceptual-message-
   wrapper), holding the CBOR (RFC 8949) data item::

       #6.60000([ quote: bstr, claims: bstr .cbor { "pubkey-hash": bstr .cbor [ hash-alg-id, hash ] } ])

   CBOR tag 60000 is IANA's "TEE quote evidence" tag; ``hash-alg-id`` is from IANA's Named Information
   Hash Algorithm Registry (1 = SHA-256, 7 = SHA-384, 8 = SHA-512) and ``hash`` is of the
   SubjectPublicKeyInfo DER; the quote's REPORTDATA[0:32] is SHA-256 of the claims bytes (the
   ``claims`` bstr's content), REPORTDATA[32:64] zero. This is the CCC "Interoperable RA-TLS" evidence
   format, which Gramine implements.

One quote cannot carry two report datas, so the enclave quotes twice — once per extension — exactly as
Gramine does. A client prefers the standard extension; if it is present but wrong, the certificate is
refused (no falling back to the legacy one).

Everything here is sans-I/O: :func:`make_ratls_identity` reaches the quoting enclave only through the
``quoting`` callable (a host call, in a real run) and checks what comes back; :func:`parse_ratls_certificate`
reads a certificate's evidence for a verifier (``haven.ratls`` verifies the quote and applies a policy).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from haven.attest.chain import check_decodable
from haven.attest.dcap.quote import parse_quote
from haven.attest.errors import AttestationError
from haven.errors import FormatError, HavenError, QuoteError
from haven.shield.tls import TlsIdentity
from haven.tee.sgx.quote import attest_public_key, ecdsa_raw_to_der
from haven.tee.sgx.structs import Report, ReportBody, TargetInfo

# TCG DICE Attestation Architecture, "tcg-dice-conceptual-message-wrapper" (tagged evidence).
TAGGED_EVIDENCE_OID = x509.ObjectIdentifier("2.23.133.5.4.9")
# Gramine's legacy "SGX quote" extension (see the module docstring for why it reads 0.6.9.42...).
LEGACY_QUOTE_OID = x509.ObjectIdentifier("0.6.9.42.840.113741.1337.6")
# IANA CBOR tags registry: 60000, an array of a TEE quote and its claims (Intel TEE quote evidence).
TEE_QUOTE_CBOR_TAG = 60000
CLAIM_PUBKEY_HASH = "pubkey-hash"
CLAIM_NONCE = "nonce"
# IANA Named Information Hash Algorithm Registry: the IDs a verifier must support (CCC Interoperable
# RA-TLS, "Evidence Custom Claims"); producers use SHA-256, as Gramine does.
HASH_ALG_SHA256 = 1
HASH_ALGORITHMS: Mapping[int, Callable[[bytes], Any]] = {
    HASH_ALG_SHA256: hashlib.sha256,
    7: hashlib.sha384,
    8: hashlib.sha512,
}
REPORT_DATA_SIZE = 64  # SGX REPORTDATA (SDM Vol. 3D, "REPORT")
# A DCAP quote with its PCK chain is a few KiB (Gramine refuses more than 8 KiB); the extension is
# bounded well above that so nothing absurd is decoded.
MAX_EXTENSION = 64 << 10
_MAX_CBOR_DEPTH = 8
# Gramine's verifier accepts EC keys on these curves only (ra_tls_verify_common.c).
CURVES: Mapping[str, ec.EllipticCurve] = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}
_SIGNATURE_HASH: Mapping[str, type[hashes.SHA256 | hashes.SHA384]] = {
    "P-256": hashes.SHA256,
    "P-384": hashes.SHA384,
}
# The certificate is self-signed and trusted for its evidence alone; its dates only need to cover the
# enclave's life (and a client's clock skew). The enclave's clock is the host's, so they assert nothing.
_BACKDATE = datetime.timedelta(hours=1)
_LIFETIME = datetime.timedelta(days=365)
_SUBJECT = x509.Name(
    [
        x509.NameAttribute(NameOID.COMMON_NAME, "Haven RA-TLS enclave"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Haven"),
    ]
)

Extension = Literal["tcg-dice", "legacy"]
ErrorKind = Literal["certificate", "no-evidence", "malformed", "binding", "quote"]


class RatlsError(HavenError):
    """An RA-TLS certificate, its evidence, or the quote the host relayed, is not what it must be.

    ``kind``: ``certificate`` (not a usable certificate), ``no-evidence`` (neither extension),
    ``malformed`` (an extension does not decode), ``binding`` (the evidence does not bind the
    certificate's key), ``quote`` (the enclave side: the quote returned is not for our report).
    """

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


# -- the encodings ---------------------------------------------------------------------------------------


def spki_der(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The DER SubjectPublicKeyInfo (RFC 5280 §4.1.2.7), as the certificate carries it."""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def encode_claims(spki: bytes, *, nonce: bytes | None = None) -> bytes:
    """The claims map, ``{"pubkey-hash": bstr .cbor [1, SHA-256(spki)]}`` (and a nonce if given)."""
    hash_entry = cbor2.dumps([HASH_ALG_SHA256, hashlib.sha256(spki).digest()])
    claims: dict[str, bytes] = {CLAIM_PUBKEY_HASH: hash_entry}
    if nonce is not None:
        claims[CLAIM_NONCE] = bytes(nonce)
    return cbor2.dumps(claims)


def encode_evidence(quote: bytes, claims: bytes) -> bytes:
    """The standard extension's value: ``#6.60000([quote, claims])``, both as byte strings."""
    return cbor2.dumps(cbor2.CBORTag(TEE_QUOTE_CBOR_TAG, [bytes(quote), bytes(claims)]))


def report_data_for(digest: bytes) -> bytes:
    """REPORTDATA carrying a 32-byte binding hash: the hash, then zeros (as Gramine fills it)."""
    if len(digest) != 32:
        raise ValueError("the binding hash is SHA-256: 32 bytes")
    return digest + bytes(REPORT_DATA_SIZE - len(digest))


# -- the enclave side ------------------------------------------------------------------------------------


class ReportingEnclave(Protocol):
    """What RA-TLS needs of the enclave: EREPORT (``SimEnclave`` has it; hardware backends will)."""

    def ereport(self, target: TargetInfo, reportdata: bytes) -> Report: ...


Quoting = Callable[[Report], bytes]


class RatlsIdentity(TlsIdentity):
    """The enclave's RA-TLS key and certificate, and the two quotes in it (see the module docstring)."""

    def __init__(
        self,
        certificate_der: bytes,
        private_key: ec.EllipticCurvePrivateKey,
        *,
        spki: bytes,
        claims: bytes,
        quote: bytes,
        legacy_quote: bytes,
    ) -> None:
        super().__init__(certificate_der, private_key)
        self.spki = spki
        self.claims = claims
        self.quote = quote  # in the standard extension; REPORTDATA binds ``claims``
        self.legacy_quote = legacy_quote  # in the legacy extension; REPORTDATA binds ``spki``

    @property
    def evidence(self) -> bytes:
        """The standard extension's value."""
        return encode_evidence(self.quote, self.claims)


def check_quote(quote: object, report: Report, what: str = "report") -> bytes:
    """The quote the host relayed, if it is a well-formed quote of ``report`` signed by its QE key.

    The rule of the host interface's ``quote(report)`` call; :class:`RatlsError` ``quote`` otherwise.

    The host relays quotes, so it could answer with another enclave's quote, an old one, or garbage.
    The chain to a vendor root is the client's to check; here: the body must be this report's, byte for
    byte, and the attestation key's signature over header and body must hold.
    """
    if not isinstance(quote, (bytes, bytearray)):
        raise RatlsError("quote", f"the quote for the {what} is {type(quote).__name__}, not bytes")
    quote = bytes(quote)
    if len(quote) > MAX_EXTENSION:
        raise RatlsError("quote", f"the quote for the {what} is {len(quote)} bytes (at most {MAX_EXTENSION})")
    try:
        parsed = parse_quote(quote)
    except AttestationError as e:
        raise RatlsError("quote", f"the quote for the {what} does not parse: {e}") from None
    body = parsed.signed_bytes[-ReportBody.SIZE :]
    if parsed.tee != "sgx" or not hmac.compare_digest(body, report.body.to_bytes()):
        raise RatlsError("quote", f"the quote for the {what} is not a quote of this enclave's report")
    try:
        key = attest_public_key(parsed.attest_pub_key)
        key.verify(ecdsa_raw_to_der(parsed.signature), parsed.signed_bytes, ec.ECDSA(hashes.SHA256()))
    except (FormatError, ValueError, InvalidSignature):
        raise RatlsError("quote", f"the quote for the {what} is not signed by its attestation key") from None
    return quote


def _quote(
    enclave: ReportingEnclave, quoting: Quoting, target: TargetInfo, digest: bytes, what: str
) -> bytes:
    report = enclave.ereport(target, report_data_for(digest))
    try:
        answer = quoting(report)
    except QuoteError as e:
        raise RatlsError("quote", f"the quoting enclave refused the {what}'s report: {e}") from None
    return check_quote(answer, report, what)


def make_ratls_identity(
    enclave: ReportingEnclave,
    quoting: Quoting,
    *,
    target: TargetInfo,
    now: datetime.datetime | None = None,
    curve: str = "P-384",
) -> RatlsIdentity:
    """A fresh key made in the enclave and a self-signed certificate carrying its quotes.

    ``quoting`` turns a REPORT targeted at the quoting enclave (``target``: its TARGETINFO) into a
    quote — ``QuotingEnclave.quote`` in process, a host call in a real run; each answer is checked
    (:class:`RatlsError` ``quote``). ``curve`` is ``P-384`` (Gramine's choice) or ``P-256``.
    """
    if curve not in CURVES:
        raise ValueError(f"curve must be one of {', '.join(CURVES)}, not {curve!r}")
    now = (now or datetime.datetime.now(datetime.UTC)).replace(microsecond=0)
    key = ec.generate_private_key(CURVES[curve])
    spki = spki_der(key.public_key())
    claims = encode_claims(spki)
    legacy_quote = _quote(enclave, quoting, target, hashlib.sha256(spki).digest(), "legacy extension")
    quote = _quote(enclave, quoting, target, hashlib.sha256(claims).digest(), "tagged evidence")
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_SUBJECT)
        .issuer_name(_SUBJECT)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        # Gramine's order: legacy, then standard; both non-critical (the DICE draft says SHOULD be
        # critical, but OpenSSL and mbed TLS refuse certificates with critical extensions they do not
        # know — CCC Interoperable RA-TLS, "X.509 Cert with Evidence").
        .add_extension(x509.UnrecognizedExtension(LEGACY_QUOTE_OID, legacy_quote), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(TAGGED_EVIDENCE_OID, encode_evidence(quote, claims)), critical=False
        )
    )
    cert = builder.sign(key, _SIGNATURE_HASH[curve]())
    der = cert.public_bytes(serialization.Encoding.DER)
    return RatlsIdentity(der, key, spki=spki, claims=claims, quote=quote, legacy_quote=legacy_quote)


# -- reading a certificate -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RatlsEvidence:
    """The evidence in an RA-TLS certificate, its key already checked against the claims.

    What remains for the verifier: verify :attr:`quote`, then :meth:`check_binding` with the report
    data it verified.
    """

    extension: Extension
    quote: bytes
    spki: bytes  # the certificate's SubjectPublicKeyInfo, DER
    binding: bytes  # what REPORTDATA[0:32] must be: SHA-256 of the claims (tcg-dice) or of the SPKI
    claims: Mapping[str, Any] = field(default_factory=dict)  # tcg-dice: the decoded claims

    @property
    def spki_sha256(self) -> bytes:
        return hashlib.sha256(self.spki).digest()

    def check_binding(self, report_data: bytes) -> None:
        """REPORTDATA[0:32] of the verified quote must be :attr:`binding` (constant time)."""
        if not hmac.compare_digest(bytes(report_data[:32]), self.binding):
            bound = "the claims in the tagged evidence" if self.extension == "tcg-dice" else "the public key"
            raise RatlsError(
                "binding",
                f"the quote in the {self.extension} extension does not bind {bound} of this certificate "
                "(its report data is for another key)",
            )


def _malformed(extension: str, message: str) -> RatlsError:
    return RatlsError("malformed", f"the {extension} extension: {message}")


def _cbor(data: bytes, what: str) -> Any:
    """Exactly one CBOR item, no duplicate map keys, nothing after it."""
    stream = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(
            stream, read_size=1, max_depth=_MAX_CBOR_DEPTH, allow_duplicate_keys=False
        )
        item = decoder.decode()
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError, MemoryError) as e:
        raise _malformed("tcg-dice", f"{what} is not valid CBOR ({e})") from None
    if stream.tell() != len(data):
        raise _malformed("tcg-dice", f"{len(data) - stream.tell()} bytes follow {what}")
    return item


def _pubkey_hash(value: Any, spki: bytes) -> None:
    if not isinstance(value, bytes) or not value:
        raise _malformed("tcg-dice", f"claim {CLAIM_PUBKEY_HASH!r} must be a byte string (a CBOR hash-entry)")
    entry = _cbor(value, f"the {CLAIM_PUBKEY_HASH} hash-entry")
    if not isinstance(entry, (list, tuple)) or len(entry) != 2:
        raise _malformed("tcg-dice", "the hash-entry must be an array [hash-alg-id, hash-value]")
    alg, digest = entry
    if isinstance(alg, bool) or not isinstance(alg, int) or alg not in HASH_ALGORITHMS:
        raise _malformed(
            "tcg-dice",
            f"hash-alg-id {alg!r} is not SHA-256 (1), SHA-384 (7) or SHA-512 (8) (IANA Named Information)",
        )
    expected = HASH_ALGORITHMS[alg](spki).digest()
    if not isinstance(digest, bytes) or len(digest) != len(expected):
        size = len(expected)
        raise _malformed("tcg-dice", f"the hash-value must be a {size}-byte string for hash-alg-id {alg}")
    if not hmac.compare_digest(digest, expected):
        raise RatlsError(
            "binding", f"claim {CLAIM_PUBKEY_HASH!r} is the hash of another key, not of this certificate's"
        )


def _tagged_evidence(value: bytes, spki: bytes) -> RatlsEvidence:
    item = _cbor(value, "the tagged evidence")
    if not isinstance(item, cbor2.CBORTag) or item.tag != TEE_QUOTE_CBOR_TAG:
        got = f"CBOR tag {item.tag}" if isinstance(item, cbor2.CBORTag) else "an untagged item"
        raise _malformed("tcg-dice", f"{got}, expected tag {TEE_QUOTE_CBOR_TAG} (TEE quote evidence)")
    body = item.value  # cbor2 decodes an array inside a tag as a tuple
    if not isinstance(body, (list, tuple)) or len(body) != 2:
        raise _malformed("tcg-dice", "tag 60000 must hold an array of two byte strings [quote, claims]")
    quote, claims_bytes = body
    if not isinstance(quote, bytes) or not quote:
        raise _malformed("tcg-dice", "the quote must be a non-empty byte string")
    if not isinstance(claims_bytes, bytes) or not claims_bytes:
        raise _malformed("tcg-dice", "the claims must be a non-empty byte string (a CBOR map)")
    claims = _cbor(claims_bytes, "the claims")
    if not isinstance(claims, dict) or not claims:
        raise _malformed("tcg-dice", "the claims must be a non-empty CBOR map")
    for key in claims:
        if not isinstance(key, str) or not key:
            raise _malformed("tcg-dice", f"claim name {key!r} is not a non-empty text string")
    if CLAIM_PUBKEY_HASH not in claims:
        raise _malformed("tcg-dice", f"the claims have no {CLAIM_PUBKEY_HASH!r}: nothing binds the key")
    _pubkey_hash(claims[CLAIM_PUBKEY_HASH], spki)
    if CLAIM_NONCE in claims and not isinstance(claims[CLAIM_NONCE], bytes):
        raise _malformed("tcg-dice", f"claim {CLAIM_NONCE!r} must be a byte string")
    return RatlsEvidence("tcg-dice", quote, spki, hashlib.sha256(claims_bytes).digest(), dict(claims))


def _certificate(cert_der: bytes) -> x509.Certificate:
    if not isinstance(cert_der, (bytes, bytearray)):
        raise RatlsError("certificate", f"the certificate is {type(cert_der).__name__}, not DER bytes")
    try:
        cert = x509.load_der_x509_certificate(bytes(cert_der))
    except ValueError as e:
        raise RatlsError("certificate", f"not an X.509 certificate in DER ({e})") from None
    try:
        # cryptography decodes lazily: decode every part now, so a hostile one fails here.
        check_decodable(cert, "the certificate")
    except AttestationError as e:
        raise RatlsError("certificate", str(e)) from None
    return cert


def _public_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    try:
        key = cert.public_key()
    except (ValueError, TypeError) as e:
        raise RatlsError("certificate", f"the certificate's public key does not load ({e})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not any(
        isinstance(key.curve, type(c)) for c in CURVES.values()
    ):
        raise RatlsError(
            "certificate", "the certificate's key is not an EC key on P-256 or P-384 (as RA-TLS uses)"
        )
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        raise RatlsError("certificate", "the certificate is not self-signed by its own key") from None
    return key


def _extension(cert: x509.Certificate, oid: x509.ObjectIdentifier, name: str) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else None
    if raw is None or not raw:
        raise _malformed(name, "it is empty")
    if len(raw) > MAX_EXTENSION:
        raise _malformed(name, f"{len(raw)} bytes (at most {MAX_EXTENSION})")
    return raw


def parse_ratls_certificate(cert_der: bytes) -> RatlsEvidence:
    """The evidence of an RA-TLS certificate (the standard extension if present, else the legacy one).

    Checks the certificate (EC P-256/P-384 key, self-signed), decodes the extension, and for the
    standard one checks the ``pubkey-hash`` claim against the certificate's key. The quote itself is not
    verified here.
    """
    cert = _certificate(cert_der)
    spki = spki_der(_public_key(cert))
    standard = _extension(cert, TAGGED_EVIDENCE_OID, "tcg-dice")
    if standard is not None:
        return _tagged_evidence(standard, spki)
    legacy = _extension(cert, LEGACY_QUOTE_OID, "legacy")
    if legacy is not None:
        return RatlsEvidence("legacy", legacy, spki, hashlib.sha256(spki).digest())
    raise RatlsError(
        "no-evidence",
        f"the certificate carries no RA-TLS evidence (neither extension {TAGGED_EVIDENCE_OID.dotted_string} "
        f"nor {LEGACY_QUOTE_OID.dotted_string})",
    )
