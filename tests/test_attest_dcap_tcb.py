"""TCB level matching and status merging, rule by rule (Intel QVL TcbLevelCheck / TdxModuleCheck).

The real TDX v4 quote and its collateral are the starting point; each test changes one thing in the
parsed quote or the parsed TCB Info and evaluates again (signatures are not the subject here).
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import pytest

from haven.attest.dcap import (
    DcapQuote,
    PckExtension,
    TdReport15,
    load_collateral,
    load_pck_chain,
    parse_quote,
)
from haven.attest.dcap.documents import EnclaveIdentity, IsvTcbLevel, TcbInfo, TcbLevel, TdxModule
from haven.attest.dcap.pck import pck_extension_of
from haven.attest.dcap.quote import BODY_TD15
from haven.attest.dcap.tcb import QeTcb, check_qe_identity, check_tcb_info_applies, evaluate_tcb
from haven.attest.errors import AttestationError
from tests.dcap_support import SETS

D = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
UP = QeTcb("UpToDate", (), 4)


def level(
    sgx: int = 0, pcesvn: int = 0, tdx: tuple[int, ...] | None = None, status: str = "UpToDate", *adv: str
) -> TcbLevel:
    comps = tdx if tdx is None else tdx + (0,) * (16 - len(tdx))
    return TcbLevel((sgx,) * 16, pcesvn, comps, D, status, adv)


def module(ident: str, *levels: tuple[int, str], adv: tuple[str, ...] = ()) -> TdxModule:
    return TdxModule(
        ident, bytes(48), bytes(8), b"\xff" * 8, tuple(IsvTcbLevel(s, D, st, adv) for s, st in levels)
    )


Tdx = tuple[DcapQuote, TcbInfo, EnclaveIdentity, PckExtension]


@pytest.fixture
def tdx(vectors: Path) -> Tdx:
    s = SETS[1]
    quote = parse_quote(s.quote_bytes(vectors))
    collateral = load_collateral(vectors / s.collateral)
    pck = pck_extension_of(load_pck_chain(quote.pck_chain_pem)[0])
    return quote, collateral.tcb_info, collateral.qe_identity, pck


def _with_svn(quote: DcapQuote, tee_tcb_svn: bytes) -> DcapQuote:
    return dataclasses.replace(quote, body=quote.td_report.replace(tee_tcb_svn=tee_tcb_svn))


def _svn(*first: int) -> bytes:
    return bytes(first) + bytes(16 - len(first))


def _kind(call: object) -> str:
    with pytest.raises(AttestationError) as e:
        call()  # type: ignore[operator]
    return e.value.kind


def test_the_real_quote_is_up_to_date(tdx: Tdx) -> None:
    quote, info, identity, pck = tdx
    qe = check_qe_identity(identity, quote)
    v = evaluate_tcb(info, quote, pck, qe)
    assert (v.status, v.tdx_module, v.tdx_module_status, v.level.pcesvn) == (
        "UpToDate",
        "TDX_01",
        "UpToDate",
        11,
    )


def test_sgx_components_and_pcesvn_select_the_first_level_met(tdx: Tdx) -> None:
    quote, info, _, pck = tdx  # PCK: components 3,3,2,2,4,1,0,5,… PCESVN 11
    pck = dataclasses.replace(pck, tcb_components=(5,) * 16)
    levels = (
        level(6, 0, (0,), "UpToDate"),
        level(5, 12, (0,), "SWHardeningNeeded"),
        level(5, 11, (0,), "OutOfDate", "A-1"),
    )
    v = evaluate_tcb(dataclasses.replace(info, levels=levels), quote, pck, UP)
    assert (v.status, v.advisory_ids) == ("OutOfDate", ("A-1",))
    one_low = dataclasses.replace(pck, tcb_components=(5,) * 15 + (4,))
    assert (
        _kind(lambda: evaluate_tcb(dataclasses.replace(info, levels=levels), quote, one_low, UP))
        == "tcb-no-match"
    )


def test_tdx_components_skip_the_module_bytes_when_the_module_has_a_version(tdx: Tdx) -> None:
    quote, info, _, pck = tdx
    pck = dataclasses.replace(pck, tcb_components=(9,) * 16)
    info = dataclasses.replace(
        info, levels=(level(0, 0, (99, 99, 3), "UpToDate"), level(0, 0, (0, 0, 2), "OutOfDate"))
    )
    # Module version 1: bytes 0 and 1 are judged by the module identity, not by the level.
    assert evaluate_tcb(info, _with_svn(quote, _svn(4, 1, 3)), pck, UP).status == "UpToDate"
    assert evaluate_tcb(info, _with_svn(quote, _svn(4, 1, 2)), pck, UP).status == "OutOfDate"
    # Module version 0: every byte counts, and no module identity is consulted.
    v = evaluate_tcb(info, _with_svn(quote, _svn(4, 0, 3)), pck, UP)
    assert (v.status, v.tdx_module) == ("OutOfDate", None)
    assert _kind(lambda: evaluate_tcb(info, _with_svn(quote, _svn(4, 0, 1)), pck, UP)) == "tcb-no-match"


def test_module_identity_must_exist_and_cover_the_module_svn(tdx: Tdx) -> None:
    quote, info, _, pck = tdx
    assert _kind(lambda: evaluate_tcb(info, _with_svn(quote, _svn(6, 7, 3)), pck, UP)) == "tcb-no-match"
    assert _kind(lambda: evaluate_tcb(info, _with_svn(quote, _svn(1, 1, 3)), pck, UP)) == "tcb-no-match"


def test_module_signer_and_seam_attributes(tdx: Tdx) -> None:
    quote, info, _, pck = tdx
    signed_by_other = dataclasses.replace(quote, body=quote.td_report.replace(mr_signer_seam=b"\x01" * 48))
    assert _kind(lambda: evaluate_tcb(info, signed_by_other, pck, UP)) == "tcb-no-match"
    attrs = dataclasses.replace(quote, body=quote.td_report.replace(seam_attributes=b"\x01" + bytes(7)))
    assert _kind(lambda: evaluate_tcb(info, attrs, pck, UP)) == "tcb-no-match"


@pytest.mark.parametrize(
    ("platform", "module_status", "expected"),
    [
        ("UpToDate", "OutOfDate", "OutOfDate"),
        ("SWHardeningNeeded", "OutOfDate", "OutOfDate"),
        ("ConfigurationNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"),
        ("ConfigurationAndSWHardeningNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"),
        ("OutOfDate", "OutOfDate", "OutOfDate"),
        ("ConfigurationNeeded", "UpToDate", "ConfigurationNeeded"),
    ],
)
def test_module_status_merges_into_the_platform_status(
    tdx, platform: str, module_status: str, expected: str
) -> None:
    quote, info, _, pck = tdx
    info = dataclasses.replace(
        info,
        levels=(level(0, 0, (0,), platform, "A-1"),),
        tdx_module_identities=(module("TDX_01", (0, module_status), adv=("A-2", "A-1")),),
    )
    v = evaluate_tcb(info, quote, pck, UP)
    assert (v.status, v.advisory_ids, v.tdx_module_status) == (expected, ("A-1", "A-2"), module_status)


def test_revoked_anywhere_is_an_error(tdx: Tdx) -> None:
    quote, info, _, pck = tdx
    revoked_module = dataclasses.replace(info, tdx_module_identities=(module("TDX_01", (0, "Revoked")),))
    assert _kind(lambda: evaluate_tcb(revoked_module, quote, pck, UP)) == "revoked"
    revoked_level = dataclasses.replace(info, levels=(level(0, 0, (0,), "Revoked"),))
    assert _kind(lambda: evaluate_tcb(revoked_level, quote, pck, UP)) == "revoked"
    assert _kind(lambda: evaluate_tcb(info, quote, pck, QeTcb("Revoked", (), 4))) == "revoked"


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        ("UpToDate", "OutOfDate"),
        ("SWHardeningNeeded", "OutOfDate"),
        ("ConfigurationNeeded", "OutOfDateConfigurationNeeded"),
        ("ConfigurationAndSWHardeningNeeded", "OutOfDateConfigurationNeeded"),
        ("OutOfDateConfigurationNeeded", "OutOfDateConfigurationNeeded"),
    ],
)
def test_qe_out_of_date_merges_into_the_platform_status(tdx: Tdx, platform: str, expected: str) -> None:
    quote, info, _, pck = tdx
    info = dataclasses.replace(info, levels=(level(0, 0, (0,), platform, "A-1", "A-3"),))
    v = evaluate_tcb(info, quote, pck, QeTcb("OutOfDate", ("A-3", "A-4"), 3))
    assert (v.status, v.advisory_ids, v.qe_status) == (expected, ("A-1", "A-3", "A-4"), "OutOfDate")


def test_td15_relaunch_advised_when_svn2_reaches_the_newest_level(tdx: Tdx) -> None:
    quote, info, _, pck = tdx
    info = dataclasses.replace(
        info,
        levels=(level(0, 0, (0, 0, 5), "UpToDate"), level(0, 0, (0, 0, 3), "OutOfDate")),
        tdx_module_identities=(module("TDX_01", (6, "UpToDate"), (4, "OutOfDate")),),
    )
    base = quote.td_report.replace(tee_tcb_svn=_svn(4, 1, 3))

    def td15(svn2: bytes) -> DcapQuote:
        body = TdReport15(base=base, tee_tcb_svn2=svn2, mr_servicetd=bytes(48))
        return dataclasses.replace(quote, version=5, body_type=BODY_TD15, body=body)

    ahead = evaluate_tcb(info, td15(_svn(6, 1, 5)), pck, UP)
    assert (ahead.status, ahead.relaunch_advised) == ("OutOfDate", True)
    assert evaluate_tcb(info, td15(_svn(6, 1, 4)), pck, UP).relaunch_advised is False
    assert evaluate_tcb(info, td15(_svn(4, 1, 3)), pck, UP).relaunch_advised is False
    # A module without a version (svn2[1] == 0) is compared with the newest level's TDX components.
    assert evaluate_tcb(info, td15(_svn(0, 0, 5)), pck, UP).relaunch_advised is True
    assert evaluate_tcb(info, td15(_svn(0, 0, 4)), pck, UP).relaunch_advised is False
    # Not when the QE itself is out of date: relaunching the TD would not help.
    assert evaluate_tcb(info, td15(_svn(6, 1, 5)), pck, QeTcb("OutOfDate", (), 1)).relaunch_advised is False


def test_tcb_info_must_be_for_the_quotes_tee_fmspc_and_pce_id(tdx: Tdx) -> None:
    quote, info, _, pck = tdx
    check_tcb_info_applies(info, quote, pck)
    for changed in (
        dataclasses.replace(info, id="SGX"),
        dataclasses.replace(info, version=2),
        dataclasses.replace(info, fmspc=bytes(6)),
        dataclasses.replace(info, pce_id=b"\x01\x00"),
    ):
        assert _kind(lambda c=changed: check_tcb_info_applies(c, quote, pck)) == "collateral-mismatch"


def test_qe_identity_rules(tdx: Tdx) -> None:
    quote, _, identity, _ = tdx
    isvsvn = quote.qe_report.isvsvn
    assert check_qe_identity(identity, quote) == QeTcb("UpToDate", (), isvsvn)
    for changed in (
        dataclasses.replace(identity, id="QE"),
        dataclasses.replace(identity, mrsigner=bytes(32)),
        dataclasses.replace(identity, isvprodid=1),
        dataclasses.replace(identity, miscselect=1),
        dataclasses.replace(identity, attributes=b"\x13" + identity.attributes[1:]),
    ):
        assert _kind(lambda c=changed: check_qe_identity(c, quote)) == "collateral-mismatch"
    # Masked bits do not count: the QE's report has bit 2 of byte 0 set, which the mask (0xFB) clears.
    assert quote.qe_report.attributes.to_bytes()[0] & 0x04
    assert identity.attributes_mask[0] == 0xFB
    loose = dataclasses.replace(identity, attributes_mask=b"\x00" * 16, attributes=bytes(16))
    assert check_qe_identity(loose, quote).status == "UpToDate"
    levels = (IsvTcbLevel(isvsvn + 1, D, "UpToDate", ()), IsvTcbLevel(isvsvn, D, "OutOfDate", ("A-9",)))
    expected = QeTcb("OutOfDate", ("A-9",), isvsvn)
    assert check_qe_identity(dataclasses.replace(identity, levels=levels), quote) == expected
    too_new = (IsvTcbLevel(isvsvn + 1, D, "UpToDate", ()),)
    assert (
        _kind(lambda: check_qe_identity(dataclasses.replace(identity, levels=too_new), quote))
        == "tcb-no-match"
    )
