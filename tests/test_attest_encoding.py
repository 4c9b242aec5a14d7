"""Evidence encodings: raw bytes, hex (with or without 0x) and base64 are told apart."""

from __future__ import annotations

import base64
import string

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from haven.attest.encoding import MAX_EVIDENCE, decode_evidence
from haven.attest.errors import AttestationError

_TEXT_ALPHABET = set((string.ascii_letters + string.digits + "+/_-=" + string.whitespace).encode())


def test_real_vectors_in_every_encoding(vectors):
    snp = vectors / "snp" / "virtee-sev"
    raw = (snp / "report_milan.bin").read_bytes()
    assert decode_evidence(raw) == raw
    assert decode_evidence((snp / "report_milan.hex").read_bytes()) == raw  # upper-case hex
    tdx = vectors / "tdx" / "dcap-qvl"
    prefixed = decode_evidence((tdx / "tdx-quote.hex").read_bytes())  # "0x..." with a newline
    assert prefixed[:8] == bytes.fromhex("0400020081000000")
    nitro = decode_evidence((vectors / "nitro" / "blocky-nitrite" / "nitro_attestation.b64").read_bytes())
    assert nitro[:4] == bytes.fromhex("8444a101")  # COSE_Sign1 array, protected header {1: -35}
    assert len(nitro) == 7539


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"00ff10", b"\x00\xff\x10"),
        (b"0x00FF10", b"\x00\xff\x10"),
        (b"0X00ff10\n", b"\x00\xff\x10"),
        (b"  00 ff\r\n10\t", b"\x00\xff\x10"),  # line breaks and spaces inside hex text
        (base64.b64encode(b"\xfb\xff\xfe evidence"), b"\xfb\xff\xfe evidence"),
        (base64.urlsafe_b64encode(b"\xfb\xff\xfe evidence"), b"\xfb\xff\xfe evidence"),
        (base64.b64encode(b"\xfb\xff\xfe evidence").rstrip(b"="), b"\xfb\xff\xfe evidence"),  # unpadded
        (b"+/+/\n+/+/", base64.b64decode(b"+/+/+/+/")),  # wrapped base64
    ],
)
def test_text_encodings(text, expected):
    assert decode_evidence(text) == expected


def test_binary_is_returned_unchanged():
    binary = bytes(range(256))
    assert decode_evidence(binary) == binary
    cose = bytes.fromhex("8444a1013822a0")
    assert decode_evidence(cose) == cose


def test_empty_is_malformed():
    with pytest.raises(AttestationError) as e:
        decode_evidence(b"")
    assert e.value.kind == "malformed"


def test_oversized_is_malformed():
    with pytest.raises(AttestationError) as e:
        decode_evidence(b"\x00" * (MAX_EVIDENCE + 1))
    assert e.value.kind == "malformed"
    assert str(MAX_EVIDENCE) in str(e.value)
    assert decode_evidence(b"\x01" * MAX_EVIDENCE) == b"\x01" * MAX_EVIDENCE


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_hex_round_trip(data):
    assume(data)
    assert decode_evidence(data.hex().encode()) == data
    assert decode_evidence(b"0x" + data.hex().upper().encode()) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=600))
def test_base64_round_trip(data):
    text = base64.b64encode(data)
    # Base64 text made only of hex digits (and of even length) is read as hex: a real document is far
    # too long for that to happen by chance ((22/64) ** length).
    assume(not all(c in b"0123456789abcdefABCDEF" for c in text.rstrip(b"=")))
    assert decode_evidence(text) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=600))
def test_binary_outside_text_alphabets_is_raw(data):
    assume(any(c not in _TEXT_ALPHABET for c in data))
    assert decode_evidence(data) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000) | st.text(max_size=200).map(str.encode))
def test_fuzz_only_clean_errors(data):
    try:
        out = decode_evidence(data)
    except AttestationError as e:
        assert e.kind == "malformed"
    else:
        assert isinstance(out, bytes)
