"""AWS Nitro Enclaves attestation documents: a strict parser and verification to the pinned AWS root.

Sources: AWS Nitro Enclaves User Guide, "Verifying the root of trust" (the document's CDDL, its
syntactic checks and the certificate chain), RFC 9052 (COSE_Sign1, §4.2; Sig_structure, §4.4) and
RFC 9053 §2.1 (ES384: ECDSA P-384 with SHA-384, signature as raw r‖s). ``LAYOUTS.md`` §7 of the test
vectors summarises them.

A document is a COSE_Sign1 array ``[protected, unprotected, payload, signature]``, optionally with
tag 18. The payload is a CBOR map naming the enclave's PCRs, signed by a short-lived leaf certificate
that chains through ``cabundle`` (root first) to AWS's Nitro root.

Order of checks: parse (``malformed``), COSE signature with the leaf's key (``signature``), then the
certificate chain at ``now``. The signature covers the whole payload, certificates included, so any
change to a signed byte fails either the parser or the signature, never a later check.
"""

from __future__ import annotations

import datetime
import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from haven.attest import roots as pinned
from haven.attest.chain import MAX_CHAIN, check_decodable, utcnow, verify_chain
from haven.attest.encoding import decode_evidence
from haven.attest.errors import AttestationError
from haven.attest.result import VerifiedEvidence

COSE_SIGN1_TAG = 18  # RFC 9052 §4.2
COSE_HEADER_ALG, COSE_HEADER_CRIT = 1, 2  # RFC 9052 §3.1
COSE_ALG_ES384 = -35  # RFC 9053 §2.1
ES384_SIGNATURE_SIZE = 96  # r‖s, 48 bytes each (RFC 9053 §2.1)

# The AWS guide's CDDL: index = 0..31, pcr = bytes .size (32/48/64) — 48 for digest "SHA384";
# cert = bytes .size (1..1024); user_data = bytes .size (0..1024) for public_key, user_data, nonce.
PCR_COUNT = 32
PCR_SIZE = 48
MAX_CERT = 1024
MAX_USER_DATA = 1024
MAX_CABUNDLE = MAX_CHAIN - 1  # with the leaf, a chain of at most MAX_CHAIN; AWS sends four
_DEBUG_PCRS = (0, 1, 2)  # enclave image, kernel+bootstrap, application: all zero in debug mode
_OPTIONAL = ("public_key", "user_data", "nonce")
_MAX_DEPTH = 16  # the document nests three levels deep; refuse pathological nesting early


@dataclass(frozen=True)
class NitroDocument:
    """A parsed (not yet verified) attestation document."""

    protected: bytes
    payload: bytes
    signature: bytes
    module_id: str
    digest: str
    timestamp: int  # milliseconds since the Unix epoch
    pcrs: Mapping[int, bytes]
    certificate: x509.Certificate
    cabundle: tuple[x509.Certificate, ...]  # root first, as AWS sends it
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None

    @property
    def time(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.timestamp / 1000, datetime.UTC)

    def sig_structure(self) -> bytes:
        """RFC 9052 §4.4: ``["Signature1", body_protected, external_aad, payload]`` in CBOR."""
        return cbor2.dumps(["Signature1", self.protected, b"", self.payload])

    @property
    def debug(self) -> bool:
        return all(not any(self.pcrs[i]) for i in _DEBUG_PCRS)


def _malformed(message: str) -> AttestationError:
    return AttestationError("malformed", f"Nitro attestation document: {message}")


def _cbor(data: bytes, what: str) -> Any:
    """Exactly one CBOR item, definite or indefinite length, no duplicate map keys, nothing after it."""
    stream = io.BytesIO(data)
    try:
        # read_size=1: the decoder must not read ahead, so the stream position marks the item's end.
        decoder = cbor2.CBORDecoder(stream, read_size=1, max_depth=_MAX_DEPTH, allow_duplicate_keys=False)
        item = decoder.decode()
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError, MemoryError) as e:
        raise _malformed(f"{what} is not valid CBOR ({e})") from None
    if stream.tell() != len(data):
        raise _malformed(f"{what} has {len(data) - stream.tell()} bytes after its CBOR item")
    return item


def _bytes(value: Any, what: str, lo: int, hi: int) -> bytes:
    if not isinstance(value, bytes):
        raise _malformed(f"{what} is not a byte string")
    if not lo <= len(value) <= hi:
        raise _malformed(f"{what} is {len(value)} bytes, expected {lo} to {hi}")
    return value


def _certificate(der: Any, what: str) -> x509.Certificate:
    raw = _bytes(der, what, 1, MAX_CERT)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unusual but parseable encodings are the chain's business
            cert = x509.load_der_x509_certificate(raw)
    except (ValueError, x509.InvalidVersion) as e:
        raise _malformed(f"{what} is not a DER certificate ({e})") from None
    check_decodable(cert, f"Nitro attestation document: {what}")
    return cert


def _envelope(raw: bytes) -> tuple[bytes, bytes, bytes]:
    item = _cbor(raw, "the document")
    if isinstance(item, cbor2.CBORTag):
        if item.tag != COSE_SIGN1_TAG:
            raise _malformed(f"CBOR tag {item.tag} is not COSE_Sign1 (18)")
        item = item.value
    if not isinstance(item, (list, tuple)) or len(item) != 4:
        raise _malformed("not a COSE_Sign1 array of four items")
    protected, unprotected, payload, signature = item
    if not isinstance(protected, bytes) or not isinstance(payload, bytes) or not isinstance(signature, bytes):
        raise _malformed("COSE_Sign1 protected header, payload and signature must be byte strings")
    if not isinstance(unprotected, Mapping):
        raise _malformed("COSE_Sign1 unprotected header is not a map")
    header = _cbor(protected, "the protected header")
    if not isinstance(header, Mapping) or not all(type(k) in (int, str) for k in header):
        raise _malformed("the protected header is not a map of COSE labels")
    alg = header.get(COSE_HEADER_ALG)
    if type(alg) is not int or alg != COSE_ALG_ES384:
        raise _malformed("the protected header does not name algorithm ES384 (-35)")
    if COSE_HEADER_CRIT in header or COSE_HEADER_ALG in unprotected:
        raise _malformed("critical or unprotected algorithm headers are not supported")
    if len(signature) != ES384_SIGNATURE_SIZE:
        raise _malformed(f"the ES384 signature is {len(signature)} bytes, expected {ES384_SIGNATURE_SIZE}")
    return protected, payload, signature


def _pcrs(value: Any) -> dict[int, bytes]:
    if not isinstance(value, Mapping) or not 1 <= len(value) <= PCR_COUNT:
        raise _malformed(f"pcrs is not a map of 1 to {PCR_COUNT} entries")
    pcrs: dict[int, bytes] = {}
    for index, digest in value.items():
        if type(index) is not int or not 0 <= index < PCR_COUNT:
            raise _malformed(f"PCR index {index!r} is not 0 to {PCR_COUNT - 1}")
        pcrs[index] = _bytes(digest, f"PCR{index}", PCR_SIZE, PCR_SIZE)
    missing = [i for i in _DEBUG_PCRS if i not in pcrs]
    if missing:
        raise _malformed(f"pcrs lacks PCR{missing[0]}")
    return dict(sorted(pcrs.items()))


def parse_nitro_document(data: bytes) -> NitroDocument:
    """Parse a document (raw, hex or base64) and check every payload field's type and size."""
    protected, payload, signature = _envelope(decode_evidence(data))
    fields = _cbor(payload, "the payload")
    if not isinstance(fields, Mapping):
        raise _malformed("the payload is not a map")
    for key in fields:
        if not isinstance(key, str):
            raise _malformed(f"payload key {key!r} is not a text string")
    for key in ("module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle"):
        if key not in fields:
            raise _malformed(f"the payload has no {key}")
    module_id, digest, timestamp = fields["module_id"], fields["digest"], fields["timestamp"]
    if not isinstance(module_id, str) or not module_id:
        raise _malformed("module_id is not a non-empty text string")
    if digest != "SHA384":
        raise _malformed(f"digest {digest!r} is not 'SHA384'")
    if type(timestamp) is not int or not 0 < timestamp < 1 << 64:
        raise _malformed("timestamp is not a positive 64-bit integer")
    bundle = fields["cabundle"]
    if not isinstance(bundle, (list, tuple)) or not 1 <= len(bundle) <= MAX_CABUNDLE:
        raise _malformed(f"cabundle is not an array of 1 to {MAX_CABUNDLE} certificates")
    optional: dict[str, bytes | None] = {}
    for key in _OPTIONAL:
        value = fields.get(key)
        optional[key] = None if value is None else _bytes(value, key, 0, MAX_USER_DATA)
    return NitroDocument(
        protected=protected,
        payload=payload,
        signature=signature,
        module_id=module_id,
        digest=digest,
        timestamp=timestamp,
        pcrs=_pcrs(fields["pcrs"]),
        certificate=_certificate(fields["certificate"], "certificate"),
        cabundle=tuple(_certificate(c, f"cabundle[{i}]") for i, c in enumerate(bundle)),
        public_key=optional["public_key"],
        user_data=optional["user_data"],
        nonce=optional["nonce"],
    )


def _check_signature(doc: NitroDocument) -> None:
    key = doc.certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise AttestationError("signature", "Nitro attestation document: the signing key is not ECDSA P-384")
    half = ES384_SIGNATURE_SIZE // 2
    r = int.from_bytes(doc.signature[:half], "big")
    s = int.from_bytes(doc.signature[half:], "big")
    try:
        key.verify(encode_dss_signature(r, s), doc.sig_structure(), ec.ECDSA(hashes.SHA384()))
    except (InvalidSignature, ValueError):
        msg = "Nitro attestation document: the signature does not verify"
        raise AttestationError("signature", msg) from None


def verify_nitro(
    document: bytes,
    *,
    roots: Sequence[x509.Certificate] | None = None,
    now: datetime.datetime | None = None,
) -> VerifiedEvidence:
    """Verify a Nitro attestation document at ``now`` (default: the current time, not the document's).

    ``roots`` replaces the pinned AWS Nitro root. A debug-mode enclave (PCR0, PCR1 and PCR2 all zero)
    verifies, with ``debug=True``: refusing it is the appraisal policy's decision.
    ``report_data`` is the document's ``user_data`` (empty when absent).
    """
    now = utcnow() if now is None else now
    if now.tzinfo is None:
        raise ValueError("verify_nitro needs a timezone-aware time")
    doc = parse_nitro_document(document)
    _check_signature(doc)
    anchors = (pinned.aws_nitro_root(),) if roots is None else tuple(roots)
    path = [doc.certificate, *reversed(doc.cabundle)]
    verified = verify_chain(path, anchors, now=now, what="Nitro certificate chain")
    return VerifiedEvidence(
        tee="nitro",
        tcb_status="UpToDate",
        advisory_ids=(),
        measurements={f"pcr{i}": value.hex() for i, value in doc.pcrs.items()},
        report_data=doc.user_data or b"",
        debug=doc.debug,
        valid_from=verified.not_before,
        valid_until=verified.not_after,
        root=verified.root.subject.rfc4514_string(),
        claims={
            "module_id": doc.module_id,
            "timestamp": doc.timestamp,
            "time": doc.time.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "digest": doc.digest,
            **{key: None if getattr(doc, key) is None else getattr(doc, key).hex() for key in _OPTIONAL},
        },
    )
