"""Intel SGX DCAP quote, version 3 (`sgx_quote3_t`), byte for byte in Intel's layout.

Sources: Intel's DCAP header `sgx_quote_3.h` (the offsets in its comments) and the *Intel SGX ECDSA
Quote Library API* reference, appendix "Quote Format" (tables "Quote Header", "ECDSA 256-bit Quote
Signature Data Structure", "QE Authentication Data", "QE Certification Data"). A quote is::

    sgx_quote3_t            header (48) ‖ report_body (384) ‖ signature_data_len (u32)   = 436 bytes
    sgx_ql_ecdsa_sig_data_t sig (64) ‖ attest_pub_key (64) ‖ qe_report (384) ‖ qe_report_sig (64)
    sgx_ql_auth_data_t      size (u16) ‖ auth_data[size]
    sgx_ql_certification_data_t  cert_key_type (u16) ‖ size (u32) ‖ certification_data[size]

All integers are little-endian; the ECDSA signatures (raw r‖s) and the attestation key (raw x‖y) are
big-endian, as the header says. The parser is sans-I/O and strict: every length must agree with the
bytes present, and anything it cannot account for is a FormatError.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from haven.errors import FormatError
from haven.structs import Struct, field_at
from haven.tee.sgx.structs import ReportBody

# sgx_quote_3.h / Quote Library API "Quote Header": the only quote version this module speaks.
QUOTE_VERSION_3 = 3
# sgx_attestation_algorithm_id_t (sgx_quote_3.h): SGX_QL_ALG_ECDSA_P256 = 2. (3 = P-384 is reserved.)
ATT_KEY_TYPE_ECDSA_P256 = 2
# Quote Library API, "Quote Header", QE Vendor ID: Intel's quoting enclave.
INTEL_QE_VENDOR_ID = bytes.fromhex("939A7233F79C4CA9940A0DB3957F0607")
# sgx_ql_cert_key_type_t (sgx_quote_3.h): PCK_CERT_CHAIN = 5, "concatenated PCK cert chain (PEM)".
CERT_TYPE_PCK_CERT_CHAIN = 5
# Quote Library API, "QE Report": report_data = SHA-256(attest_pub_key ‖ qe_auth_data) ‖ 32 zero bytes.
QE_REPORT_DATA_PAD = bytes(32)

# Refuse absurd lengths before slicing (a real quote is a few KiB; Intel's own limit for the
# certification data is far below this).
MAX_QUOTE_SIZE = 1 << 20

_S = TypeVar("_S", bound=Struct)


@dataclass
class QuoteHeader(Struct):
    """`sgx_quote_header_t` (48 bytes)."""

    SIZE: ClassVar[int] = 48
    version: int = field_at(0, "<H")
    att_key_type: int = field_at(2, "<H")
    att_key_data_0: int = field_at(4, "<I")  # TEE type in v4/v5 headers; 0 (SGX) for ECDSA v3
    qe_svn: int = field_at(8, "<H")
    pce_svn: int = field_at(10, "<H")
    qe_vendor_id: bytes = field_at(12, "16s")
    user_data: bytes = field_at(28, "20s")  # first 16 bytes: the QE ID


@dataclass
class Quote3(Struct):
    """The fixed part of `sgx_quote3_t` (436 bytes); `signature_data[]` follows."""

    SIZE: ClassVar[int] = 436
    header: QuoteHeader = field_at(0, QuoteHeader)
    report_body: ReportBody = field_at(48, ReportBody)
    signature_data_len: int = field_at(432, "<I")


@dataclass
class EcdsaSigData(Struct):
    """The fixed part of `sgx_ql_ecdsa_sig_data_t` (576 bytes); auth then certification data follow."""

    SIZE: ClassVar[int] = 576
    sig: bytes = field_at(0, "64s")
    attest_pub_key: bytes = field_at(64, "64s")
    qe_report: ReportBody = field_at(128, ReportBody)
    qe_report_sig: bytes = field_at(512, "64s")


@dataclass
class AuthDataHeader(Struct):
    """`sgx_ql_auth_data_t` without its flexible array: the size of the QE authentication data."""

    SIZE: ClassVar[int] = 2
    size: int = field_at(0, "<H")


@dataclass
class CertificationDataHeader(Struct):
    """`sgx_ql_certification_data_t` without its flexible array."""

    SIZE: ClassVar[int] = 6
    cert_key_type: int = field_at(0, "<H")
    size: int = field_at(2, "<I")


@dataclass(frozen=True)
class QuoteV3:
    """A decoded version-3 ECDSA-P256 quote. `encode_quote_v3` turns it back into the same bytes."""

    header: QuoteHeader
    report_body: ReportBody
    signature: bytes  # ECDSA-P256-SHA256 over header ‖ report body by the attestation key, raw r‖s
    attest_pub_key: bytes  # raw x‖y
    qe_report_body: ReportBody
    qe_report_signature: bytes  # by the PCK key over the QE report body, raw r‖s
    qe_auth_data: bytes
    certification_data_type: int
    certification_data: bytes

    def signed_bytes(self) -> bytes:
        """What the ISV signature covers: quote bytes 0..431 (the header and the report body)."""
        return self.header.to_bytes() + self.report_body.to_bytes()

    def pck_chain_pem(self) -> list[bytes]:
        """The PEM certificates of certification data type 5, in order (PCK leaf first)."""
        if self.certification_data_type != CERT_TYPE_PCK_CERT_CHAIN:
            raise FormatError(
                f"certification data type {self.certification_data_type} carries no PCK certificate chain"
            )
        return split_pem_chain(self.certification_data)

    def pck_chain_der(self) -> list[bytes]:
        """The chain's certificates as DER, decoded strictly (exact armour, canonical base64)."""
        return [pem_certificate_der(block) for block in self.pck_chain_pem()]


def encode_quote_v3(quote: QuoteV3) -> bytes:
    """Lay out a quote exactly as `sgx_quote3_t` (refuses values that do not fit their fields)."""
    for name, value in (
        ("signature", quote.signature),
        ("attest_pub_key", quote.attest_pub_key),
        ("qe_report_signature", quote.qe_report_signature),
    ):
        if len(value) != 64:
            raise FormatError(f"quote {name}: {len(value)} bytes, expected 64")
    if len(quote.qe_auth_data) > 0xFFFF:
        raise FormatError(
            f"QE authentication data of {len(quote.qe_auth_data)} bytes does not fit a u16 size"
        )
    tail = (
        EcdsaSigData(
            sig=quote.signature,
            attest_pub_key=quote.attest_pub_key,
            qe_report=quote.qe_report_body,
            qe_report_sig=quote.qe_report_signature,
        ).to_bytes()
        + AuthDataHeader(size=len(quote.qe_auth_data)).to_bytes()
        + quote.qe_auth_data
        + CertificationDataHeader(
            cert_key_type=quote.certification_data_type, size=len(quote.certification_data)
        ).to_bytes()
        + quote.certification_data
    )
    if Quote3.SIZE + len(tail) > MAX_QUOTE_SIZE:
        raise FormatError(f"quote of {Quote3.SIZE + len(tail)} bytes exceeds {MAX_QUOTE_SIZE}")
    head = Quote3(header=quote.header, report_body=quote.report_body, signature_data_len=len(tail))
    return head.to_bytes() + tail


def decode_quote_v3(data: bytes | bytearray | memoryview, *, allow_trailing: bool = False) -> QuoteV3:
    """Parse a version-3 ECDSA-P256 quote from untrusted bytes.

    Checks the structure only (version, key type, every length and reserved field); signatures,
    certificates and policy are the verifier's business. With ``allow_trailing``, bytes after the
    signature data are ignored (some quote relays pad); by default they are an error.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_quote_v3 needs bytes, not {type(data).__name__}")
    data = bytes(data)  # a private copy: the caller's buffer may change under us
    if len(data) > MAX_QUOTE_SIZE:
        raise FormatError(f"quote of {len(data)} bytes exceeds {MAX_QUOTE_SIZE}")
    if len(data) < Quote3.SIZE:
        raise FormatError(f"quote of {len(data)} bytes is shorter than the {Quote3.SIZE}-byte sgx_quote3_t")
    header = QuoteHeader.from_bytes(data[: QuoteHeader.SIZE])
    if header.version != QUOTE_VERSION_3:
        raise FormatError(f"quote version {header.version}, expected {QUOTE_VERSION_3}")
    if header.att_key_type != ATT_KEY_TYPE_ECDSA_P256:
        raise FormatError(
            f"attestation key type {header.att_key_type}, "
            f"expected {ATT_KEY_TYPE_ECDSA_P256} (ECDSA-256 with P-256)"
        )
    fixed = _parse(Quote3, data[: Quote3.SIZE], "quote report body")
    body = data[Quote3.SIZE :]
    if fixed.signature_data_len > len(body):
        raise FormatError(
            f"signature data length {fixed.signature_data_len} exceeds the {len(body)} bytes that follow"
        )
    if fixed.signature_data_len < len(body) and not allow_trailing:
        raise FormatError(f"{len(body) - fixed.signature_data_len} bytes follow the signature data")
    sig_data = body[: fixed.signature_data_len]

    at = EcdsaSigData.SIZE
    if len(sig_data) < at + AuthDataHeader.SIZE:
        raise FormatError(f"signature data of {len(sig_data)} bytes is too short for ECDSA signature data")
    ecdsa = _parse(EcdsaSigData, sig_data[:at], "QE report body")
    auth = AuthDataHeader.from_bytes(sig_data[at : at + AuthDataHeader.SIZE])
    at += AuthDataHeader.SIZE
    if at + auth.size + CertificationDataHeader.SIZE > len(sig_data):
        raise FormatError(f"QE authentication data size {auth.size} runs past the signature data")
    qe_auth_data = sig_data[at : at + auth.size]
    at += auth.size
    cert = CertificationDataHeader.from_bytes(sig_data[at : at + CertificationDataHeader.SIZE])
    at += CertificationDataHeader.SIZE
    if at + cert.size != len(sig_data):
        raise FormatError(
            f"certification data size {cert.size} does not match the {len(sig_data) - at} bytes left "
            "in the signature data"
        )
    return QuoteV3(
        header=header,
        report_body=fixed.report_body,
        signature=ecdsa.sig,
        attest_pub_key=ecdsa.attest_pub_key,
        qe_report_body=ecdsa.qe_report,
        qe_report_signature=ecdsa.qe_report_sig,
        qe_auth_data=qe_auth_data,
        certification_data_type=cert.cert_key_type,
        certification_data=sig_data[at:],
    )


def _parse(cls: type[_S], raw: bytes, what: str) -> _S:
    try:
        return cls.from_bytes(raw)
    except FormatError as e:
        raise FormatError(f"{what}: {e}") from None


def qe_report_data(attest_pub_key: bytes, qe_auth_data: bytes) -> bytes:
    """The QE report's REPORTDATA that binds the attestation key: SHA-256(key ‖ auth data) ‖ 0^32."""
    return hashlib.sha256(attest_pub_key + qe_auth_data).digest() + QE_REPORT_DATA_PAD


# --- ECDSA encodings used by the quote format -------------------------------------------------

_P256_BYTES = 32


def ecdsa_der_to_raw(der: bytes) -> bytes:
    """A DER ECDSA-P256 signature as the quote stores it: r ‖ s, 32 bytes each, big-endian."""
    r, s = decode_dss_signature(der)
    return r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")


def ecdsa_raw_to_der(raw: bytes) -> bytes:
    if len(raw) != 2 * _P256_BYTES:
        raise FormatError(f"raw ECDSA-P256 signature of {len(raw)} bytes, expected 64")
    return encode_dss_signature(
        int.from_bytes(raw[:_P256_BYTES], "big"), int.from_bytes(raw[_P256_BYTES:], "big")
    )


def attest_key_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    """A P-256 public key as the quote stores it: x ‖ y (the SEC 1 uncompressed point without 0x04)."""
    if not isinstance(key.curve, ec.SECP256R1):
        raise FormatError(f"attestation key on {key.curve.name}, expected P-256")
    numbers = key.public_numbers()
    return numbers.x.to_bytes(_P256_BYTES, "big") + numbers.y.to_bytes(_P256_BYTES, "big")


def attest_public_key(raw: bytes) -> ec.EllipticCurvePublicKey:
    """The attestation key of a quote; a FormatError if it is not a point on P-256."""
    if len(raw) != 2 * _P256_BYTES:
        raise FormatError(f"attestation key of {len(raw)} bytes, expected 64")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + raw)
    except ValueError:
        raise FormatError("attestation key is not a point on P-256") from None


# --- certification data type 5: a PEM chain ---------------------------------------------------

_PEM_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n(?P<body>[A-Za-z0-9+/=\r\n]+?)-----END CERTIFICATE-----\r?\n?"
)


def split_pem_chain(data: bytes) -> list[bytes]:
    """Split concatenated PEM certificates; only whitespace (and Intel's trailing NUL) may surround them."""
    text = data[:-1] if data.endswith(b"\0") else data
    blocks: list[bytes] = []
    at = 0
    for m in _PEM_BLOCK.finditer(text):
        if text[at : m.start()].strip():
            raise FormatError("certification data has bytes outside its PEM certificates")
        blocks.append(m.group(0))
        at = m.end()
    if text[at:].strip():
        raise FormatError("certification data has bytes outside its PEM certificates")
    if not blocks:
        raise FormatError("certification data holds no PEM certificate")
    return blocks


def pem_certificate_der(block: bytes) -> bytes:
    m = _PEM_BLOCK.fullmatch(block)
    if m is None:
        raise FormatError("malformed PEM certificate armour")
    b64 = re.sub(rb"[\r\n]", b"", m.group("body"))
    try:
        der = base64.b64decode(b64, validate=True)
    except ValueError:
        raise FormatError("PEM certificate body is not valid base64") from None
    if base64.b64encode(der) != b64:
        raise FormatError("PEM certificate body is not canonical base64")
    return der
