"""`detect_tee` on every kind of real evidence and on near misses; `verify_evidence` dispatch and the inputs
it refuses rather than ignores."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haven.attest.errors import AttestationError
from haven.attest.result import parse_time
from haven.attest.verify import VerifyUsageError, detect_tee, verify_evidence
from tests.attest_helpers import SETS, verified

pytestmark = pytest.mark.usefixtures("vectors")


def _raw(vectors: Path, name: str) -> bytes:
    data = (vectors / name).read_bytes()
    if name.endswith(".b64"):
        return base64.b64decode(data)
    if name.endswith((".hex", "_hex.txt")):
        text = data.decode().strip()
        return bytes.fromhex(text.removeprefix("0x"))
    return data


@pytest.mark.parametrize(
    ("name", "tee"),
    [
        ("sgx/dcap-qvl/sgx_quote.bin", "sgx"),
        ("sgx/trustee/occlum_quote.dat", "sgx"),
        ("tdx/dcap-qvl/tdx_quote.bin", "tdx"),
        ("tdx/dcap-qvl/tdx_quote_outdated.bin", "tdx"),  # v5
        ("tdx/dcap-qvl/near_quote_hex.txt", "tdx"),
        ("tdx/dcap-qvl/tdx-quote.hex", "tdx"),
        ("tdx/go-tdx-guest/quote_v5_sample.dat", "tdx"),
        ("tdx/go-tdx-guest/cos-113-tdx-quote.dat", "tdx"),
        ("snp/go-sev-guest/attestation.bin", "snp"),
        ("snp/virtee-sev/report_milan.bin", "snp"),
        ("nitro/blocky-nitrite/nitro_attestation.b64", "nitro"),
        ("nitro/blocky-nitrite/nitro_attestation_debug.b64", "nitro"),
    ],
)
def test_detect_real_evidence(vectors: Path, name: str, tee: str) -> None:
    assert detect_tee(_raw(vectors, name)) == tee


def _quote_header(version: int, key_type: int = 2, tee_type: int = 0) -> bytes:
    return (
        version.to_bytes(2, "little")
        + key_type.to_bytes(2, "little")
        + tee_type.to_bytes(4, "little")
        + bytes(40)
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_quote_header(3), "sgx"),
        (_quote_header(4), "sgx"),
        (_quote_header(4, tee_type=0x81), "tdx"),
        (_quote_header(5, tee_type=0x81), "tdx"),
        ((2).to_bytes(4, "little") + bytes(1180), "snp"),
        ((5).to_bytes(4, "little") + bytes(1180), "snp"),
        (b"\x84\x40\xa0\xf6\x40", "nitro"),
        (b"\xd2\x84", "nitro"),
    ],
)
def test_detect_by_header(data: bytes, expected: str) -> None:
    assert detect_tee(data) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "neither"),
        (b"\x00" * 10, "neither"),
        (_quote_header(2), "neither"),
        (_quote_header(6), "neither"),
        (_quote_header(3, key_type=3), "neither"),  # ECDSA P-384 is reserved
        (_quote_header(3, tee_type=0x81), "unknown TEE type 0x81"),  # TDX needs v4+
        (_quote_header(4, tee_type=0x80), "unknown TEE type 0x80"),
        ((1).to_bytes(4, "little") + bytes(1180), "neither"),
        ((6).to_bytes(4, "little") + bytes(1180), "neither"),
        ((2).to_bytes(4, "little") + bytes(1181), "neither"),  # an SNP report is exactly 1184 bytes
        (b"\x83\x40\xa0\x40", "neither"),  # a CBOR array of three is no COSE_Sign1
        (b"{}", "neither"),
    ],
)
def test_detect_refuses(data: bytes, message: str) -> None:
    with pytest.raises(AttestationError) as e:
        detect_tee(data)
    assert e.value.kind == "malformed" and message in str(e.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_detect_never_crashes(data: bytes) -> None:
    try:
        assert detect_tee(data) in ("sgx", "tdx", "snp", "nitro")
    except AttestationError as e:
        assert e.kind == "malformed"


def test_dispatch_accepts_encoded_evidence(vectors: Path) -> None:
    s = SETS["snp"]
    hex_text = s.path().read_bytes().hex().encode()
    ev = verify_evidence(
        b"0x" + hex_text,
        vek=(vectors / str(s.vek)).read_bytes(),
        chain=(vectors / str(s.chain)).read_bytes(),
        now=parse_time(s.now),
    )
    assert ev == verified("snp")


def test_inputs_that_do_not_apply_are_refused(vectors: Path) -> None:
    snp = SETS["snp"]
    report, vek = snp.path().read_bytes(), (vectors / str(snp.vek)).read_bytes()
    nitro = SETS["nitro"].path().read_bytes()
    quote = SETS["sgx"].path().read_bytes()
    now = parse_time(snp.now)
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: verify_evidence(report, now=now), "give --vek"),
        (lambda: verify_evidence(report, vek=vek, collateral=object(), now=now), "DCAP collateral"),  # type: ignore[arg-type]
        (lambda: verify_evidence(quote, now=now), "give --collateral"),
        (lambda: verify_evidence(quote, vek=vek, now=now), "--vek"),
        (lambda: verify_evidence(quote, chain=b"x", now=now), "--chain"),
        (lambda: verify_evidence(quote, crls=[b"x"], now=now), "--crl"),
        (lambda: verify_evidence(nitro, vek=vek, now=now), "--vek"),
        (lambda: verify_evidence(nitro, chain=b"x", now=now), "cabundle"),
        (lambda: verify_evidence(nitro, crls=[b"x"], now=now), "--crl"),
        (lambda: verify_evidence(nitro, roots=[], now=now), "trusts nothing"),
    ]
    for call, message in cases:
        with pytest.raises(VerifyUsageError, match=message):
            call()


def test_roots_replace_the_pinned_ones(vectors: Path) -> None:
    from haven.attest import roots

    s = SETS["nitro"]
    data, now = s.path().read_bytes(), parse_time(s.now)
    assert verify_evidence(data, roots=[roots.aws_nitro_root()], now=now).tee == "nitro"
    with pytest.raises(AttestationError) as e:
        verify_evidence(data, roots=[roots.intel_sgx_root()], now=now)
    assert e.value.kind == "chain"
