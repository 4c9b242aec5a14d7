"""Mutation: every single-byte change of a quote is refused, for the reason of the part it touches.

For each quote with collateral (the real sets and a simulated one), every byte is XORed with 0x01 and
the quote verified again: bytes the parser checks first (version, key type, TEE type, QE vendor, body
type/size, lengths, certification data types) give ``malformed``; bytes under the ISV signature, the QE
report signature or the key binding give ``signature``; the PCK chain's bytes give ``malformed``,
``chain`` or ``signature``; zero padding changed to non-zero is ``malformed`` — while its length is
irrelevant. Quotes without collateral get the same treatment against their own signatures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from haven.attest.dcap import (
    Collateral,
    check_quote_signatures,
    load_collateral,
    load_pck_chain,
    parse_collateral_json,
    parse_quote,
    verify_dcap,
)
from haven.attest.encoding import decode_evidence
from haven.attest.errors import AttestationError
from tests.dcap_support import PARSE_ONLY, SET_IDS, SETS, DcapSet, SimEvidence, quote_regions, sim_evidence

EXPECTED = {
    "header.version": {"malformed"},
    "header.key_type": {"malformed"},
    "header.tee_type": {"malformed"},
    "header.svns": {"signature"},
    "header.qe_vendor": {"malformed"},
    "header.user_data": {"signature"},
    "body.descriptor": {"malformed"},
    "body": {"signature"},
    "sig_len": {"malformed"},
    "isv_signature": {"signature"},
    "attest_key": {"signature"},
    "outer_cert_header": {"malformed"},
    "qe_report": {"signature"},
    "qe_report_signature": {"signature"},
    "auth_size": {"malformed"},
    "auth_data": {"signature"},
    "cert_header": {"malformed"},
    "pck_chain": {"malformed", "chain", "signature"},
    "padding": {"malformed"},
}
SIGNED = ("header.svns", "header.user_data", "body")


def _kind(verify: object, quote: bytes) -> str | None:
    try:
        verify(quote)  # type: ignore[operator]
    except AttestationError as e:
        return e.kind
    return None


def _flip(quote: bytes, i: int, mask: int = 0x01) -> bytes:
    b = bytearray(quote)
    b[i] ^= mask
    return bytes(b)


def _check_all_regions(
    quote: bytes, verify: object, baseline: str | None, skip: tuple[str, ...] = ()
) -> None:
    assert _kind(verify, quote) == baseline
    wrong: list[str] = []
    for region, span in quote_regions(quote).items():
        if region in skip:
            continue
        masks = (0x01, 0x80) if region in SIGNED else (0x01,)
        for i in span:
            for mask in masks:
                got = _kind(verify, _flip(quote, i, mask))
                if got not in EXPECTED[region]:
                    wrong.append(f"{region} byte {i} ^{mask:#x}: {got}")
    assert wrong == []


def _full(collateral: Collateral, s: DcapSet | SimEvidence, roots: object = None) -> object:
    def verify(q: bytes) -> object:
        return verify_dcap(q, collateral, now=s.now, roots=roots)  # type: ignore[arg-type]

    return verify


@pytest.mark.parametrize("s", SETS, ids=SET_IDS)
def test_every_byte_of_every_set(vectors: Path, s: DcapSet) -> None:
    quote = s.quote_bytes(vectors)
    _check_all_regions(quote, _full(load_collateral(vectors / s.collateral), s), s.error)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimEvidence:
    return sim_evidence(tmp_path_factory.mktemp("mutation") / "platform.json")


def test_every_byte_of_a_simulated_quote(sim: SimEvidence) -> None:
    collateral = parse_collateral_json(sim.collateral)
    _check_all_regions(sim.quote, _full(collateral, sim, sim.roots), None)


@pytest.mark.parametrize("name", PARSE_ONLY)
def test_every_byte_of_quotes_without_collateral(vectors: Path, name: str) -> None:
    raw = decode_evidence((vectors / name).read_bytes())
    leaf = load_pck_chain(parse_quote(raw).pck_chain_pem)[0]

    def verify(q: bytes) -> None:
        check_quote_signatures(parse_quote(q), leaf)

    # The chain is not the subject here (it is exercised with collateral above).
    _check_all_regions(raw, verify, None, skip=("pck_chain",))


@pytest.mark.parametrize("s", [SETS[1], SETS[3]], ids=["tdx-v4", "tdx-v4-near"])
def test_zero_padding_length_does_not_matter(vectors: Path, s: DcapSet) -> None:
    quote = s.quote_bytes(vectors)
    collateral = load_collateral(vectors / s.collateral)
    padding = parse_quote(quote).padding
    assert padding == 70
    bare = quote[: len(quote) - padding]
    for q in (bare, bare + bytes(1), quote + bytes(8000 - len(quote))):
        assert verify_dcap(q, collateral, now=s.now).tcb_status == s.status
    with pytest.raises(AttestationError, match="not zero padding") as e:
        verify_dcap(bare + b"\0" * 10 + b"\x01", collateral, now=s.now)
    assert e.value.kind == "malformed"


def test_simulated_quote_tolerates_zero_padding_only(sim: SimEvidence) -> None:
    collateral = parse_collateral_json(sim.collateral)
    assert (
        verify_dcap(sim.quote + bytes(100), collateral, roots=sim.roots, now=sim.now).tcb_status == "UpToDate"
    )
    with pytest.raises(AttestationError) as e:
        verify_dcap(sim.quote + b"\xff", collateral, roots=sim.roots, now=sim.now)
    assert e.value.kind == "malformed"


def test_truncation_anywhere_is_malformed(sim: SimEvidence) -> None:
    collateral = parse_collateral_json(sim.collateral)
    for n in range(0, len(sim.quote), 7):
        with pytest.raises(AttestationError) as e:
            verify_dcap(sim.quote[:n], collateral, roots=sim.roots, now=sim.now)
        assert e.value.kind == "malformed", n
