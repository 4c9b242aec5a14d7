"""DCAP quote v3 layout: Intel's offsets, byte-exact round trips of real quotes, strict hostile parsing."""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from haven.errors import FormatError
from haven.structs import Struct
from haven.tee.sgx.quote import (
    ATT_KEY_TYPE_ECDSA_P256,
    CERT_TYPE_PCK_CERT_CHAIN,
    INTEL_QE_VENDOR_ID,
    MAX_QUOTE_SIZE,
    AuthDataHeader,
    CertificationDataHeader,
    EcdsaSigData,
    Quote3,
    QuoteHeader,
    QuoteV3,
    attest_key_bytes,
    attest_public_key,
    decode_quote_v3,
    ecdsa_der_to_raw,
    ecdsa_raw_to_der,
    encode_quote_v3,
    pem_certificate_der,
    qe_report_data,
    split_pem_chain,
)
from tests.conftest import VECTORS

# Offsets from the comments of Intel's sgx_quote_3.h (and LAYOUTS.md §1–2 of the test vectors).
LAYOUTS: list[tuple[type[Struct], int, dict[str, int]]] = [
    (
        QuoteHeader,
        48,
        {
            "version": 0,
            "att_key_type": 2,
            "att_key_data_0": 4,
            "qe_svn": 8,
            "pce_svn": 10,
            "qe_vendor_id": 12,
            "user_data": 28,
        },
    ),
    (Quote3, 436, {"header": 0, "report_body": 48, "signature_data_len": 432}),
    (EcdsaSigData, 576, {"sig": 0, "attest_pub_key": 64, "qe_report": 128, "qe_report_sig": 512}),
    (AuthDataHeader, 2, {"size": 0}),
    (CertificationDataHeader, 6, {"cert_key_type": 0, "size": 2}),
]

REAL_QUOTES = ["sgx/dcap-qvl/sgx_quote.bin", "sgx/trustee/occlum_quote.dat"]


@pytest.mark.parametrize(("cls", "size", "offsets"), LAYOUTS, ids=[c.__name__ for c, _, _ in LAYOUTS])
def test_layout_matches_intels_header(cls: type[Struct], size: int, offsets: dict[str, int]) -> None:
    assert cls.SIZE == size
    for name, offset in offsets.items():
        assert cls.offset_of(name) == offset, name


def test_constants_are_intels() -> None:
    assert INTEL_QE_VENDOR_ID.hex().upper() == "939A7233F79C4CA9940A0DB3957F0607"
    assert (ATT_KEY_TYPE_ECDSA_P256, CERT_TYPE_PCK_CERT_CHAIN) == (2, 5)


@pytest.fixture(params=REAL_QUOTES)
def real_quote(request: pytest.FixtureRequest, vectors: Path) -> bytes:
    return (vectors / str(request.param)).read_bytes()


def test_real_quotes_round_trip_byte_for_byte(real_quote: bytes) -> None:
    q = decode_quote_v3(real_quote)
    assert encode_quote_v3(q) == real_quote
    assert q.header.version == 3 and q.header.qe_vendor_id == INTEL_QE_VENDOR_ID
    assert q.qe_auth_data == bytes(range(32))
    assert q.certification_data_type == CERT_TYPE_PCK_CERT_CHAIN
    assert q.signed_bytes() == real_quote[:432]


def test_real_quote_fields(vectors: Path) -> None:
    q = decode_quote_v3((vectors / "sgx/dcap-qvl/sgx_quote.bin").read_bytes())
    assert (q.header.qe_svn, q.header.pce_svn) == (10, 15)
    assert q.report_body.reportdata.rstrip(b"\0") == b"Hello, world!"
    assert q.report_body.mrenclave.hex() == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    assert len(q.pck_chain_der()) == 3
    assert q.certification_data.endswith(b"\0")  # Intel's QE ends the PEM chain with a NUL


def test_helpers_check_intels_own_signatures(real_quote: bytes) -> None:
    """Our binding, key and signature helpers reproduce what Intel's QE and PCE computed."""
    q = decode_quote_v3(real_quote)
    assert qe_report_data(q.attest_pub_key, q.qe_auth_data) == q.qe_report_body.reportdata
    key = attest_public_key(q.attest_pub_key)
    assert attest_key_bytes(key) == q.attest_pub_key
    key.verify(ecdsa_raw_to_der(q.signature), q.signed_bytes(), ec.ECDSA(hashes.SHA256()))
    pck = x509.load_der_x509_certificate(q.pck_chain_der()[0]).public_key()
    assert isinstance(pck, ec.EllipticCurvePublicKey)
    pck.verify(
        ecdsa_raw_to_der(q.qe_report_signature), q.qe_report_body.to_bytes(), ec.ECDSA(hashes.SHA256())
    )
    with pytest.raises(InvalidSignature):
        key.verify(ecdsa_raw_to_der(q.signature), q.signed_bytes()[:-1] + b"\1", ec.ECDSA(hashes.SHA256()))


# -- hostile bytes ---------------------------------------------------------------------------------


@pytest.fixture
def quote(vectors: Path) -> bytes:
    return (vectors / "sgx/dcap-qvl/sgx_quote.bin").read_bytes()


def _put(data: bytes, at: int, fmt: str, value: int) -> bytes:
    raw = bytearray(data)
    struct.pack_into(fmt, raw, at, value)
    return bytes(raw)


AUTH_AT = 436 + EcdsaSigData.SIZE  # sgx_ql_auth_data_t, then certification data
CERT_AT = AUTH_AT + 2 + 32


def test_every_truncation_is_refused(quote: bytes) -> None:
    for n in range(len(quote)):
        with pytest.raises(FormatError):
            decode_quote_v3(quote[:n])


def test_trailing_bytes_are_refused_unless_allowed(quote: bytes) -> None:
    with pytest.raises(FormatError, match="follow the signature data"):
        decode_quote_v3(quote + b"\0")
    assert encode_quote_v3(decode_quote_v3(quote + bytes(70), allow_trailing=True)) == quote


@pytest.mark.parametrize(
    ("at", "fmt", "value", "message"),
    [
        (0, "<H", 4, "quote version 4"),
        (0, "<H", 2, "quote version 2"),
        (2, "<H", 3, "attestation key type 3"),
        (432, "<I", 0, "follow the signature data"),
        (432, "<I", 4165, "exceeds"),
        (432, "<I", 4163, "follow the signature data"),
        (AUTH_AT, "<H", 33, "certification data size"),
        (AUTH_AT, "<H", 0xFFFF, "runs past"),
        (CERT_AT + 2, "<I", 3547, "certification data size"),
        (CERT_AT + 2, "<I", 3549, "certification data size"),
        (CERT_AT + 2, "<I", 0xFFFFFFFF, "certification data size"),
    ],
)
def test_inconsistent_lengths_and_kinds_are_refused(
    quote: bytes, at: int, fmt: str, value: int, message: str
) -> None:
    with pytest.raises(FormatError, match=message):
        decode_quote_v3(_put(quote, at, fmt, value))


@pytest.mark.parametrize(
    ("at", "where"),
    [
        (48 + 20, "quote report body"),
        (48 + 96, "quote report body"),
        (48 + 300, "quote report body"),
        (436 + 128 + 20, "QE report body"),
        (436 + 128 + 170, "QE report body"),
    ],
)
def test_reserved_report_bytes_are_refused(quote: bytes, at: int, where: str) -> None:
    with pytest.raises(FormatError, match=f"{where}.*reserved"):
        decode_quote_v3(_put(quote, at, "<B", 1))


def test_signature_data_too_short_for_its_fixed_part(quote: bytes) -> None:
    with pytest.raises(FormatError, match="too short"):
        decode_quote_v3(_put(quote, 432, "<I", 100)[: 436 + 100])


def test_size_limits_and_types(quote: bytes) -> None:
    with pytest.raises(FormatError, match="exceeds"):
        decode_quote_v3(quote + bytes(MAX_QUOTE_SIZE))
    with pytest.raises(TypeError):
        decode_quote_v3("not bytes")  # type: ignore[arg-type]
    assert encode_quote_v3(decode_quote_v3(memoryview(quote))) == quote  # any bytes-like input


def test_other_certification_data_types_parse_but_carry_no_chain(quote: bytes) -> None:
    q = decode_quote_v3(_put(quote, CERT_AT, "<H", 3))
    assert q.certification_data_type == 3
    with pytest.raises(FormatError, match="type 3"):
        q.pck_chain_pem()


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=1200))
def test_random_bytes_give_format_errors_only(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        decode_quote_v3(data)


@pytest.mark.skipif(not VECTORS.is_dir(), reason="attestation vectors not found")
@settings(max_examples=300, deadline=None)
@given(at=st.integers(0, 700), value=st.integers(0, 255), cut=st.integers(0, 8))
def test_mutated_quotes_give_format_errors_only(at: int, value: int, cut: int) -> None:
    quote = (VECTORS / "sgx/dcap-qvl/sgx_quote.bin").read_bytes()
    mutated = _put(quote, at, "<B", value)[: len(quote) - cut]
    try:
        q = decode_quote_v3(mutated)
    except FormatError:
        return
    assert encode_quote_v3(q) == mutated  # whatever parses, re-encodes to the same bytes


# -- encoding --------------------------------------------------------------------------------------


def test_encode_refuses_values_that_do_not_fit(quote: bytes) -> None:
    q = decode_quote_v3(quote)
    fields = {f: getattr(q, f) for f in QuoteV3.__dataclass_fields__}
    for name in ("signature", "attest_pub_key", "qe_report_signature"):
        with pytest.raises(FormatError, match=name):
            encode_quote_v3(QuoteV3(**{**fields, name: bytes(63)}))
    with pytest.raises(FormatError, match="u16"):
        encode_quote_v3(QuoteV3(**{**fields, "qe_auth_data": bytes(0x10000)}))
    with pytest.raises(FormatError, match="exceeds"):
        encode_quote_v3(QuoteV3(**{**fields, "certification_data": bytes(MAX_QUOTE_SIZE)}))
    with pytest.raises(FormatError):
        encode_quote_v3(QuoteV3(**{**fields, "header": q.header.replace(qe_svn=1 << 16)}))


# -- PEM chains and ECDSA encodings ---------------------------------------------------------------


def test_pem_chain_parsing_is_strict(quote: bytes) -> None:
    chain = decode_quote_v3(quote).certification_data.rstrip(b"\0")
    blocks = split_pem_chain(chain)
    assert len(blocks) == 3 and b"".join(blocks) == chain
    assert split_pem_chain(chain.replace(b"\n", b"\r\n")) != []
    with pytest.raises(FormatError, match="outside"):
        split_pem_chain(blocks[0] + b"junk\n" + blocks[1])
    with pytest.raises(FormatError, match="outside"):
        split_pem_chain(chain + b"x")
    with pytest.raises(FormatError, match="no PEM"):
        split_pem_chain(b"\n")
    body_at = blocks[0].index(b"\n") + 1
    with pytest.raises(FormatError, match="base64"):
        pem_certificate_der(blocks[0][:body_at] + b"=" + blocks[0][body_at + 1 :])
    with pytest.raises(FormatError, match="armour"):
        pem_certificate_der(blocks[0].replace(b"BEGIN", b"BEGIM"))
    # Base64 whose unused trailing bits are set decodes leniently elsewhere; here it is refused.
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    pad = blocks[1].index(b"=")  # 668 DER bytes: one padding character, 2 unused bits before it
    last = alphabet.index(blocks[1][pad - 1])
    assert last % 4 == 0
    with pytest.raises(FormatError, match="canonical"):
        pem_certificate_der(blocks[1][: pad - 1] + alphabet[last + 1 : last + 2] + blocks[1][pad:])


def test_ecdsa_encodings() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.sign(b"m", ec.ECDSA(hashes.SHA256()))
    raw = ecdsa_der_to_raw(der)
    assert len(raw) == 64 and ecdsa_raw_to_der(raw) == der
    with pytest.raises(FormatError):
        ecdsa_raw_to_der(raw[:-1])
    with pytest.raises(FormatError, match="not a point"):
        attest_public_key(bytes(64))
    with pytest.raises(FormatError):
        attest_public_key(bytes(65))
    with pytest.raises(FormatError, match="P-256"):
        attest_key_bytes(ec.generate_private_key(ec.SECP384R1()).public_key())
