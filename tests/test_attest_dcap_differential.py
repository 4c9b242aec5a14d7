"""Differential: PyPI dcap-qvl (Phala's Rust verifier) and ours agree on every DCAP set and on
simulated quotes — same TCB status and advisory IDs, or both refuse. Where they differ by design
(docs/attestation-dcap.md, "Differences from dcap-qvl"), the test pins the difference."""

from __future__ import annotations

from pathlib import Path

import dcap_qvl
import pytest

from haven.attest.dcap import load_collateral, parse_collateral_json, to_dcap_qvl_json, verify_dcap
from haven.attest.errors import AttestationError
from haven.tee.sim.platform import DEFAULT_CPUSVN, DEFAULT_PCESVN, TcbLevel
from tests.dcap_support import SET_IDS, SETS, DcapSet, SimEvidence, sim_evidence
from tests.sim_quote_support import epoch


def _ours(
    quote: bytes, collateral_json: str, *, roots: object = None, now: object
) -> tuple[str, tuple[str, ...]] | str:
    try:
        ev = verify_dcap(quote, parse_collateral_json(collateral_json), roots=roots, now=now)  # type: ignore[arg-type]
    except AttestationError as e:
        return e.kind
    return ev.tcb_status, ev.advisory_ids


def _theirs(
    quote: bytes, collateral_json: str, now: int, root_der: bytes | None = None
) -> tuple[str, tuple[str, ...]] | str:
    collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_json)
    try:
        if root_der is None:
            r = dcap_qvl.verify(quote, collateral, now)
        else:
            r = dcap_qvl.verify_with_root_ca(quote, collateral, root_der, now)
    except ValueError as e:
        return f"refused: {e}"
    return r.status, tuple(r.advisory_ids)


@pytest.mark.parametrize("s", SETS, ids=SET_IDS)
def test_every_set_agrees(vectors: Path, s: DcapSet) -> None:
    text = to_dcap_qvl_json(load_collateral(vectors / s.collateral))
    quote = s.quote_bytes(vectors)
    ours, theirs = _ours(quote, text, now=s.now), _theirs(quote, text, epoch(s.now))
    if s.status is None:
        assert ours == s.error and isinstance(theirs, str) and theirs.startswith("refused")
        assert "TCB level" in theirs
    else:
        assert ours == theirs == (s.status, s.advisories)


def test_spr_quote_with_its_ascii_tail(vectors: Path) -> None:
    # dcap-qvl ignores bytes after the signature data; we accept only zero padding there. Both refuse
    # this quote, for different reasons: we for the tail, dcap-qvl for the TCB level.
    s = SETS[4]
    raw = (vectors / s.quote).read_bytes()
    text = to_dcap_qvl_json(load_collateral(vectors / s.collateral))
    assert _ours(raw, text, now=s.now) == "malformed"
    assert "TCB level" in str(_theirs(raw, text, epoch(s.now)))


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> SimEvidence:
    return sim_evidence(tmp_path_factory.mktemp("differential") / "platform.json")


def _both(
    ev: SimEvidence, collateral: str | None = None, quote: bytes | None = None
) -> tuple[object, object]:
    text = ev.collateral if collateral is None else collateral
    q = ev.quote if quote is None else quote
    return _ours(q, text, roots=ev.roots, now=ev.now), _theirs(q, text, epoch(ev.now), ev.qe.pki.root_der())


def test_simulated_default_platform_is_up_to_date(good: SimEvidence) -> None:
    ours, theirs = _both(good)
    assert ours == theirs == ("UpToDate", ())


def test_simulated_out_of_date_platform(tmp_path: Path) -> None:
    newer = bytes([13, 13, 4, 4, 255, 1, 13]) + bytes(9)
    levels = (
        TcbLevel(tuple(newer), DEFAULT_PCESVN, "UpToDate", tcb_date="2025-06-01T00:00:00Z"),
        TcbLevel(tuple(DEFAULT_CPUSVN), DEFAULT_PCESVN, "OutOfDate", ("INTEL-SA-00950", "INTEL-SA-00999")),
    )
    ours, theirs = _both(sim_evidence(tmp_path / "behind.json", tcb_levels=levels))
    assert ours == theirs == ("OutOfDate", ("INTEL-SA-00950", "INTEL-SA-00999"))


@pytest.mark.parametrize(
    "status",
    [
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDateConfigurationNeeded",
    ],
)
def test_simulated_platform_statuses(good: SimEvidence, status: str) -> None:
    info = good.document("tcb_info")
    info["tcbLevels"][0] |= {"tcbStatus": status, "advisoryIDs": ["INTEL-SA-00615"]}
    ours, theirs = _both(good, good.resigned(tcb_info=info))
    assert ours == theirs == (status, ("INTEL-SA-00615",))


@pytest.mark.parametrize("platform", ["UpToDate", "SWHardeningNeeded", "ConfigurationNeeded"])
def test_simulated_out_of_date_qe_merges_as_dcap_qvl_does(good: SimEvidence, platform: str) -> None:
    info, qe = good.document("tcb_info"), good.document("qe_identity")
    info["tcbLevels"][0] |= {"tcbStatus": platform, "advisoryIDs": ["INTEL-SA-00615", "INTEL-SA-00001"]}
    isvsvn = qe["tcbLevels"][0]["tcb"]["isvsvn"]
    qe["tcbLevels"] = [
        {"tcb": {"isvsvn": isvsvn + 1}, "tcbDate": "2025-01-01T00:00:00Z", "tcbStatus": "UpToDate"},
        {
            "tcb": {"isvsvn": isvsvn},
            "tcbDate": "2024-01-01T00:00:00Z",
            "tcbStatus": "OutOfDate",
            "advisoryIDs": ["INTEL-SA-09999", "INTEL-SA-00615"],
        },
    ]
    ours, theirs = _both(good, good.resigned(tcb_info=info, qe_identity=qe))
    assert ours == theirs
    assert ours[1] == ("INTEL-SA-00615", "INTEL-SA-00001", "INTEL-SA-09999")  # type: ignore[index]


def test_simulated_no_matching_level_both_refuse(good: SimEvidence) -> None:
    info = good.document("tcb_info")
    info["tcbLevels"][0]["tcb"]["pcesvn"] += 1
    ours, theirs = _both(good, good.resigned(tcb_info=info))
    assert ours == "tcb-no-match" and str(theirs).startswith("refused")


def test_simulated_revoked_both_refuse(good: SimEvidence, tmp_path: Path) -> None:
    ours, theirs = _both(sim_evidence(tmp_path / "revoked.json", pck_revoked=True))
    assert ours == "revoked" and "revoked" in str(theirs).lower()
    info = good.document("tcb_info")
    info["tcbLevels"][0]["tcbStatus"] = "Revoked"
    ours, theirs = _both(good, good.resigned(tcb_info=info))
    assert ours == "revoked" and str(theirs).startswith("refused")


def test_simulated_quote_needs_the_simulation_root(good: SimEvidence) -> None:
    collateral = parse_collateral_json(good.collateral)
    with pytest.raises(AttestationError) as e:
        verify_dcap(good.quote, collateral, now=good.now)  # default roots: Intel's only
    assert e.value.kind == "chain"
    assert str(_theirs(good.quote, good.collateral, epoch(good.now))).startswith("refused")


def test_debug_enclave_is_reported_not_refused(tmp_path: Path) -> None:
    # A difference by design: dcap-qvl refuses debug enclaves; we report debug=True and leave the
    # decision to the appraisal policy.
    ev = sim_evidence(tmp_path / "debug.json", debug=True)
    result = verify_dcap(ev.quote, parse_collateral_json(ev.collateral), roots=ev.roots, now=ev.now)
    assert (result.debug, result.tcb_status) == (True, "UpToDate")
    assert "debug" in str(_both(ev)[1]).lower()


def test_trailing_bytes_differ_by_design(good: SimEvidence) -> None:
    ours, theirs = _both(good, quote=good.quote + bytes(64))
    assert ours == theirs == ("UpToDate", ())
    ours, theirs = _both(good, quote=good.quote + b"junk")
    assert ours == "malformed" and theirs == ("UpToDate", ())
