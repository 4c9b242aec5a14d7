"""Acceptance: an independent verifier (PyPI dcap-qvl, Phala's Rust DCAP verifier) accepts our quotes.

`dcap_qvl.verify_with_root_ca(quote, collateral, sim_root_der, now)` checks the whole DCAP chain:
root CA against its CRL, TCB Info and QE Identity signatures and validity, the PCK chain (webpki) and
PCK CRL, the QE report signature, the QE report-data binding, the QE identity, the ISV signature, and
matches the PCK certificate's TCB against TCB Info. It must accept a simulated quote, give the TCB
status and advisories configured, and refuse a quote in which any single byte was changed.
"""

from __future__ import annotations

import base64
import datetime
import json
from dataclasses import dataclass, fields
from pathlib import Path

import dcap_qvl
import pytest

from haven.errors import FormatError
from haven.structs import Struct
from haven.tee.sgx.quote import (
    AuthDataHeader,
    CertificationDataHeader,
    EcdsaSigData,
    Quote3,
    QuoteHeader,
    decode_quote_v3,
    split_pem_chain,
)
from haven.tee.sgx.structs import ReportBody
from haven.tee.sim.collateral import VALIDITY, platform_collateral
from haven.tee.sim.platform import DEFAULT_CPUSVN, DEFAULT_PCESVN, SimPlatform, TcbLevel
from haven.tee.sim.qe import QE_AUTH_DATA, QuotingEnclave
from tests.sim_quote_support import epoch, launch_app, make_platform

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
REPORT_DATA = bytes(range(64))


@dataclass
class Evidence:
    platform: SimPlatform
    quote: bytes
    collateral: dcap_qvl.QuoteCollateralV3
    root: bytes

    def verify(self, quote: bytes | None = None, *, at: datetime.datetime = NOW) -> dcap_qvl.VerifiedReport:
        return dcap_qvl.verify_with_root_ca(
            self.quote if quote is None else quote, self.collateral, self.root, epoch(at)
        )

    def verify_with(self, collateral: dcap_qvl.QuoteCollateralV3) -> dcap_qvl.VerifiedReport:
        return dcap_qvl.verify_with_root_ca(self.quote, collateral, self.root, epoch(NOW))


def _evidence(path: Path, *, debug: bool = False, **config: object) -> Evidence:
    platform = make_platform(path, **config)
    qe = QuotingEnclave(platform)
    app = launch_app(platform, debug=debug)
    quote = qe.quote(app.ereport(qe.target_info(), REPORT_DATA))
    collateral = platform_collateral(platform, NOW, pki=qe.pki)
    return Evidence(
        platform,
        quote,
        dcap_qvl.QuoteCollateralV3.from_json(collateral.to_dcap_qvl_json()),
        qe.pki.root_der(),
    )


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Evidence:
    return _evidence(tmp_path_factory.mktemp("good") / "platform.json")


# -- verdicts --------------------------------------------------------------------------------------


def test_default_platform_is_up_to_date(good: Evidence) -> None:
    result = good.verify()
    assert result.status == "UpToDate"
    assert result.advisory_ids == []
    body = decode_quote_v3(good.quote).report_body
    assert body.reportdata == REPORT_DATA
    report = json.loads(result.to_json())["report"]["SgxEnclave"]  # dcap-qvl's parse of what it verified
    assert report["mr_enclave"] == body.mrenclave.hex() and report["report_data"] == REPORT_DATA.hex()


def test_ppid_is_the_platforms(good: Evidence) -> None:
    from haven.tee.sim.pki import platform_pki

    assert good.verify().ppid == platform_pki(good.platform).ppid


def test_platform_behind_is_out_of_date_with_the_configured_advisories(tmp_path: Path) -> None:
    newer = bytes([13, 13, 4, 4, 255, 1, 13]) + bytes(9)
    levels = (
        TcbLevel(tuple(newer), DEFAULT_PCESVN, "UpToDate", tcb_date="2025-06-01T00:00:00Z"),
        TcbLevel(tuple(DEFAULT_CPUSVN), DEFAULT_PCESVN, "OutOfDate", ("INTEL-SA-00950", "INTEL-SA-00999")),
    )
    result = _evidence(tmp_path / "behind.json", tcb_levels=levels).verify()
    assert result.status == "OutOfDate"
    assert result.advisory_ids == ["INTEL-SA-00950", "INTEL-SA-00999"]


def test_a_configured_status_other_than_out_of_date_is_reported(tmp_path: Path) -> None:
    levels = (TcbLevel(tuple(DEFAULT_CPUSVN), DEFAULT_PCESVN, "SWHardeningNeeded", ("INTEL-SA-00615",)),)
    result = _evidence(tmp_path / "sw.json", tcb_levels=levels).verify()
    assert (result.status, result.advisory_ids) == ("SWHardeningNeeded", ["INTEL-SA-00615"])


def test_no_matching_tcb_level_is_refused(tmp_path: Path) -> None:
    above = tuple(bytes([99]) + DEFAULT_CPUSVN[1:])
    ev = _evidence(tmp_path / "nomatch.json", tcb_levels=(TcbLevel(above, DEFAULT_PCESVN, "UpToDate"),))
    with pytest.raises(ValueError, match=r"(?i)tcb level"):
        ev.verify()


def test_revoked_pck_certificate_is_refused(tmp_path: Path) -> None:
    ev = _evidence(tmp_path / "revoked.json", pck_revoked=True)
    with pytest.raises(ValueError, match=r"(?i)revoked"):
        ev.verify()


def test_revoked_tcb_level_is_refused(tmp_path: Path) -> None:
    levels = (TcbLevel(tuple(DEFAULT_CPUSVN), DEFAULT_PCESVN, "Revoked", ("INTEL-SA-00001",)),)
    with pytest.raises(ValueError, match=r"(?i)revoked"):
        _evidence(tmp_path / "tcbrevoked.json", tcb_levels=levels).verify()


def test_debug_enclave_quote_is_refused(tmp_path: Path) -> None:
    ev = _evidence(tmp_path / "debug.json", debug=True)
    assert decode_quote_v3(ev.quote).report_body.attributes.debug
    with pytest.raises(ValueError, match=r"(?i)debug"):
        ev.verify()


def test_expired_collateral_is_refused(good: Evidence) -> None:
    # webpki treats a CRL as expired at its nextUpdate; TCB Info and QE Identity a second later.
    good.verify(at=NOW + VALIDITY - datetime.timedelta(seconds=1))
    for late in (VALIDITY, VALIDITY + datetime.timedelta(seconds=1), VALIDITY * 2):
        with pytest.raises(ValueError, match=r"(?i)expired"):
            good.verify(at=NOW + late)


def test_collateral_from_the_future_is_refused(good: Evidence) -> None:
    with pytest.raises(ValueError):
        good.verify(at=NOW - datetime.timedelta(seconds=1))


def test_another_platforms_root_or_collateral_is_refused(good: Evidence, tmp_path: Path) -> None:
    other = _evidence(tmp_path / "other.json")
    with pytest.raises(ValueError):
        dcap_qvl.verify_with_root_ca(good.quote, good.collateral, other.root, epoch(NOW))
    with pytest.raises(ValueError):
        dcap_qvl.verify_with_root_ca(good.quote, other.collateral, other.root, epoch(NOW))


def test_intels_root_does_not_trust_simulated_quotes(good: Evidence) -> None:
    with pytest.raises(ValueError):
        dcap_qvl.verify(good.quote, good.collateral, epoch(NOW))


# -- any changed byte is refused -----------------------------------------------------------------


def _flip(data: bytes, at: int, mask: int = 0xFF) -> bytes:
    return data[:at] + bytes([data[at] ^ mask]) + data[at + 1 :]


def _field_spans(cls: type[Struct], base: int, prefix: str) -> list[tuple[str, int, int]]:
    spans = []
    for f in fields(cls):  # type: ignore[arg-type]
        at = base + cls.offset_of(f.name)
        size = f.metadata["size"]
        spans.append((f"{prefix}{f.name}", at, size))
    return spans


SIG_DATA = Quote3.SIZE
_QUOTE_FIELDS = [
    *_field_spans(QuoteHeader, 0, "header."),
    *_field_spans(ReportBody, Quote3.offset_of("report_body"), "report_body."),
    ("signature_data_len", Quote3.offset_of("signature_data_len"), 4),
    ("sig", SIG_DATA + EcdsaSigData.offset_of("sig"), 64),
    ("attest_pub_key", SIG_DATA + EcdsaSigData.offset_of("attest_pub_key"), 64),
    *_field_spans(ReportBody, SIG_DATA + EcdsaSigData.offset_of("qe_report"), "qe_report."),
    ("qe_report_sig", SIG_DATA + EcdsaSigData.offset_of("qe_report_sig"), 64),
    ("qe_auth_data.size", SIG_DATA + EcdsaSigData.SIZE, AuthDataHeader.SIZE),
    ("qe_auth_data", SIG_DATA + EcdsaSigData.SIZE + AuthDataHeader.SIZE, len(QE_AUTH_DATA)),
]
_CERT_HEADER_AT = SIG_DATA + EcdsaSigData.SIZE + AuthDataHeader.SIZE + len(QE_AUTH_DATA)


@pytest.mark.parametrize(("name", "at", "size"), _QUOTE_FIELDS, ids=[n for n, _, _ in _QUOTE_FIELDS])
def test_every_field_of_the_quote_is_protected(good: Evidence, name: str, at: int, size: int) -> None:
    """First, last and middle byte of each field (every byte of the short ones), flipped one at a time."""
    positions = sorted(
        {at, at + size // 2, at + size - 1} | (set(range(at, at + size)) if size <= 4 else set())
    )
    for pos in positions:
        with pytest.raises(ValueError):
            good.verify(_flip(good.quote, pos))


def test_certification_data_type_is_protected(good: Evidence) -> None:
    for pos in range(_CERT_HEADER_AT, _CERT_HEADER_AT + 2):
        with pytest.raises(ValueError):
            good.verify(_flip(good.quote, pos))


def test_certification_data_size_is_protected(good: Evidence) -> None:
    """Every byte of the u32 size. A flip that makes it larger overruns the quote; one that makes it
    smaller cuts the tail of the chain, which is the root CA's copy: dcap-qvl anchors on the root it
    is given and never reads that copy (see test_root_ca_copy_in_the_chain), so there our own strict
    parser is what refuses the quote."""
    at = _CERT_HEADER_AT + CertificationDataHeader.offset_of("size")
    size = CertificationDataHeader.from_bytes(good.quote[_CERT_HEADER_AT : at + 4]).size
    for pos in range(at, at + 4):
        tampered = _flip(good.quote, pos)
        with pytest.raises(FormatError):
            decode_quote_v3(tampered)
        new_size = CertificationDataHeader.from_bytes(tampered[_CERT_HEADER_AT : at + 4]).size
        if new_size > size:
            with pytest.raises(ValueError):
                good.verify(tampered)
        else:
            chain = decode_quote_v3(good.quote).certification_data
            assert len(chain) - new_size < len(split_pem_chain(chain)[-1])  # only the root's copy is cut


def _chain(good: Evidence) -> tuple[int, bytes, list[bytes]]:
    cert_data = decode_quote_v3(good.quote).certification_data
    return len(good.quote) - len(cert_data), cert_data, split_pem_chain(cert_data)


def _reencode(der: bytes) -> bytes:
    b64 = base64.b64encode(der)
    lines = b"".join(b64[i : i + 64] + b"\n" for i in range(0, len(b64), 64))
    return b"-----BEGIN CERTIFICATE-----\n" + lines + b"-----END CERTIFICATE-----\n"


@pytest.mark.parametrize("index", [0, 1], ids=["pck_leaf", "platform_ca"])
def test_every_byte_of_the_pck_and_platform_ca_certificates_is_protected(good: Evidence, index: int) -> None:
    at, cert_data, blocks = _chain(good)
    start = cert_data.index(blocks[index])
    der = decode_quote_v3(good.quote).pck_chain_der()[index]
    assert _reencode(der) == blocks[index]  # the chain is PEM with 64-column lines, as re-encoded here
    for k in range(len(der)):
        block = _reencode(_flip(der, k))
        tampered = good.quote[: at + start] + block + good.quote[at + start + len(block) :]
        with pytest.raises(ValueError):
            good.verify(tampered)


@pytest.mark.parametrize("index", [0, 1], ids=["pck_leaf", "platform_ca"])
def test_every_byte_of_the_pem_armour_is_protected(good: Evidence, index: int) -> None:
    """The BEGIN and END lines and every line break. A line break is changed into a letter: changed into
    another white-space character it would still be the same PEM (RFC 7468 section 3). The line break
    that ends a block is the exception: a letter there starts text *between* blocks, which RFC 7468
    section 5.2 lets parsers ignore (dcap-qvl does); Haven's strict parser refuses it."""
    at, cert_data, blocks = _chain(good)
    start = at + cert_data.index(blocks[index])
    block = blocks[index]
    end_line = block.index(b"-----END")
    positions = [i for i in range(len(block)) if i < 28 or i >= end_line or block[i] == 0x0A]
    assert len(positions) > 60
    for i in positions:
        pos = start + i
        changed = b"A" if block[i] == 0x0A else bytes([block[i] ^ 0x01])
        tampered = good.quote[:pos] + changed + good.quote[pos + 1 :]
        if i == len(block) - 1:
            with pytest.raises(FormatError):
                decode_quote_v3(tampered).pck_chain_pem()
            continue
        with pytest.raises(ValueError):
            good.verify(tampered)


def test_root_ca_copy_in_the_chain(good: Evidence) -> None:
    """dcap-qvl (webpki) builds the path to the root it is given and never reads the copy at the end
    of certification data, so it accepts a quote whose copy was changed. Haven's own verifier must
    compare that copy with its pinned root; the changed copy is detectably not the root."""
    at, cert_data, blocks = _chain(good)
    der = decode_quote_v3(good.quote).pck_chain_der()[2]
    assert der == good.root
    start = at + cert_data.index(blocks[2])
    flipped = _flip(der, len(der) // 2)
    tampered = good.quote[:start] + _reencode(flipped) + good.quote[start + len(blocks[2]) :]
    assert good.verify(tampered).status == "UpToDate"  # the oracle's blind spot, pinned so a change is seen
    assert decode_quote_v3(tampered).pck_chain_der()[2] != good.root


def test_collateral_changes_are_refused(good: Evidence) -> None:
    doc = json.loads(good.collateral.to_json())
    for key in ("tcb_info", "qe_identity"):
        changed = dict(doc, **{key: doc[key].replace('"version":', '"version": ')})
        with pytest.raises(ValueError):
            good.verify_with(dcap_qvl.QuoteCollateralV3.from_json(json.dumps(changed)))
    for key in ("tcb_info_signature", "qe_identity_signature", "pck_crl", "root_ca_crl"):
        raw = bytearray(bytes.fromhex(doc[key]))
        raw[len(raw) // 2] ^= 0xFF
        with pytest.raises(ValueError):
            good.verify_with(dcap_qvl.QuoteCollateralV3.from_json(json.dumps(dict(doc, **{key: raw.hex()}))))
