"""Every DCAP vector set gives its expected verdict at its time (../shared/vectors/README.md)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from haven.attest.chain import verify_chain
from haven.attest.dcap import (
    check_quote_signatures,
    load_collateral,
    load_pck_chain,
    parse_quote,
    verify_dcap,
)
from haven.attest.encoding import decode_evidence
from haven.attest.errors import AttestationError
from tests.dcap_support import PARSE_ONLY, SET_IDS, SETS, SPR_TAIL, DcapSet, at, inside, intel_roots

UTC = datetime.UTC


@pytest.mark.parametrize("s", SETS, ids=SET_IDS)
def test_each_set_gives_its_verdict(vectors: Path, s: DcapSet) -> None:
    collateral = load_collateral(vectors / s.collateral)
    quote = s.quote_bytes(vectors)
    if s.status is None:
        with pytest.raises(AttestationError) as e:
            verify_dcap(quote, collateral, now=s.now)
        assert e.value.kind == s.error
        return
    ev = verify_dcap(quote, collateral, now=s.now)
    assert (ev.tcb_status, ev.advisory_ids) == (s.status, s.advisories)
    assert ev.valid_from <= s.now <= ev.valid_until
    assert ev.root.endswith("CN=Intel SGX Root CA")
    assert ev.debug is False


def test_sgx_v3_claims(vectors: Path) -> None:
    s = SETS[0]
    ev = verify_dcap(s.quote_bytes(vectors), load_collateral(vectors / s.collateral), now=s.now)
    body = parse_quote(s.quote_bytes(vectors)).sgx_body
    assert ev.tee == "sgx"
    assert ev.measurements == {"mrenclave": body.mrenclave.hex(), "mrsigner": body.mrsigner.hex()}
    assert ev.report_data == body.reportdata
    assert ev.claims["fmspc"] == "00a067110000" and ev.claims["pce_id"] == "0000"
    assert ev.claims["quote_version"] == 3 and ev.claims["qe_tcb_status"] == "UpToDate"
    assert ev.claims["isvprodid"] == body.isvprodid and ev.claims["isvsvn"] == body.isvsvn
    assert ev.claims["pck_cpusvn"] == "0b0b0202ff0100000000000000000000"  # the TCB the PCK certifies
    assert ev.claims["cpusvn"] == body.cpusvn.hex()
    assert ev.claims["attributes"] == body.attributes.to_bytes().hex()
    # The intersection of every window: TCB Info issue (10:56:11) .. QE Identity nextUpdate (10:01:18).
    assert ev.valid_from == datetime.datetime(2025, 6, 19, 10, 56, 11, tzinfo=UTC)
    assert ev.valid_until == datetime.datetime(2025, 7, 19, 10, 1, 18, tzinfo=UTC)


def test_tdx_v4_claims(vectors: Path) -> None:
    s = SETS[1]
    quote = s.quote_bytes(vectors)
    ev = verify_dcap(quote, load_collateral(vectors / s.collateral), now=s.now)
    td = parse_quote(quote).td_report
    assert ev.tee == "tdx"
    assert ev.measurements["mrtd"] == td.mr_td.hex() and ev.measurements["rtmr3"] == td.rtmr3.hex()
    assert set(ev.measurements) == {
        "mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrseam", "mrsignerseam", "mrconfigid", "mrowner",
        "mrownerconfig",
    }  # fmt: skip
    assert ev.claims["tdx_module"] == "TDX_01" and ev.claims["tdx_module_status"] == "UpToDate"
    assert ev.claims["tee_tcb_svn"] == td.tee_tcb_svn.hex()
    assert ev.claims["td_attributes"] == "0000001000000000"  # SEPT_VE_DISABLE, not DEBUG
    assert ev.claims["fmspc"] == "b0c06f000000"
    assert ev.report_data == td.report_data


@pytest.mark.parametrize(
    ("when", "ok"),
    [
        (datetime.datetime(2025, 9, 2, 7, 41, 59, tzinfo=UTC), True),
        (datetime.datetime(2025, 9, 20, tzinfo=UTC), True),
        (datetime.datetime(2025, 10, 2, 7, 3, 51, tzinfo=UTC), True),
        (datetime.datetime(2025, 9, 2, 7, 41, 58, tzinfo=UTC), False),
        (datetime.datetime(2025, 10, 2, 7, 3, 52, tzinfo=UTC), False),
    ],
)
def test_near_quote_holds_exactly_in_its_window(vectors: Path, when: datetime.datetime, ok: bool) -> None:
    s = SETS[3]
    quote, collateral = s.quote_bytes(vectors), load_collateral(vectors / s.collateral)
    if ok:
        assert verify_dcap(quote, collateral, now=when).tcb_status == "UpToDate"
    else:
        with pytest.raises(AttestationError) as e:
            verify_dcap(quote, collateral, now=when)
        assert e.value.kind == ("not-yet-valid" if when.month == 9 else "expired")


def test_spr_quote_with_its_ascii_tail_is_malformed(vectors: Path) -> None:
    # "Trailing zero padding tolerated, nothing else": its 39 unsigned ASCII bytes are refused; the
    # quote without them is the README's negative set (tested above: no TCB level matches).
    raw = (vectors / "tdx/go-tdx-guest/tdx_prod_quote_SPR_E4.dat").read_bytes()
    with pytest.raises(AttestationError, match="not zero padding") as e:
        verify_dcap(raw, load_collateral(vectors / "tdx/go-tdx-guest"), now=SETS[4].now)
    assert e.value.kind == "malformed"
    assert parse_quote(raw[:-SPR_TAIL] + bytes(SPR_TAIL)).padding == SPR_TAIL


@pytest.mark.parametrize("name", PARSE_ONLY)
def test_parse_only_quotes_have_valid_signatures_and_chains(vectors: Path, name: str) -> None:
    quote = parse_quote(decode_evidence((vectors / name).read_bytes()))
    chain = load_pck_chain(quote.pck_chain_pem)
    check_quote_signatures(quote, chain[0])
    verified = verify_chain(chain, intel_roots(), now=inside(chain), what="PCK chain")
    assert "Intel SGX Root CA" in verified.root.subject.rfc4514_string()


def test_occlum_quote_is_a_debug_enclave(vectors: Path) -> None:
    quote = parse_quote((vectors / "sgx/trustee/occlum_quote.dat").read_bytes())
    assert quote.version == 3 and quote.sgx_body.attributes.debug


def test_v5_sample_matches_its_tcb_info_fmspc(vectors: Path) -> None:
    # sample_tcbinfo_response_v5 is the TCB Info for quote_v5_sample's FMSPC (no full collateral exists).
    from haven.attest.dcap import pck_extension_of
    from haven.attest.dcap.collateral import split_signed_body
    from haven.attest.dcap.documents import loads_strict, parse_tcb_info

    quote = parse_quote((vectors / "tdx/go-tdx-guest/quote_v5_sample.dat").read_bytes())
    ext = pck_extension_of(load_pck_chain(quote.pck_chain_pem)[0])
    signed, _ = split_signed_body(
        (vectors / "tdx/go-tdx-guest/sample_tcbinfo_response_v5").read_bytes(), "tcbInfo", "TCB Info"
    )
    info = parse_tcb_info(loads_strict(signed.decode(), "TCB Info"))
    assert info.fmspc == ext.fmspc and info.id == "TDX" and quote.body_type == 3


def test_sets_verify_when_now_is_the_default_clock_only_if_current(vectors: Path) -> None:
    # The default `now` is the current time, long after these collaterals' nextUpdate.
    s = SETS[0]
    with pytest.raises(AttestationError) as e:
        verify_dcap(s.quote_bytes(vectors), load_collateral(vectors / s.collateral))
    assert e.value.kind == "expired"


def test_same_collateral_object_verifies_many_quotes_and_times(vectors: Path) -> None:
    s = SETS[0]
    collateral, quote = load_collateral(vectors / s.collateral), s.quote_bytes(vectors)
    for t in (s.now, s.now - datetime.timedelta(days=20), s.now):
        assert verify_dcap(quote, collateral, now=t).tcb_status == s.status
    # A cached verification still rechecks the windows at the new `now`.
    with pytest.raises(AttestationError) as e:
        verify_dcap(quote, collateral, now=at(1752919277 + 86400))
    assert e.value.kind == "expired"
    with pytest.raises(AttestationError) as e:
        verify_dcap(quote, collateral, now=datetime.datetime(2025, 6, 1, tzinfo=UTC))
    assert e.value.kind == "not-yet-valid"


def test_naive_time_is_refused(vectors: Path) -> None:
    s = SETS[0]
    with pytest.raises(ValueError, match="timezone"):
        verify_dcap(
            s.quote_bytes(vectors), load_collateral(vectors / s.collateral), now=datetime.datetime(2025, 7, 1)
        )
