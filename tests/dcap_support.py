"""Shared pieces of the DCAP verification tests: the vector sets, their times, simulated evidence."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from haven.attest.dcap import parse_quote
from haven.attest.encoding import decode_evidence
from haven.attest.roots import intel_sgx_root
from haven.tee.sgx.quote import ecdsa_der_to_raw
from haven.tee.sim.collateral import platform_collateral
from haven.tee.sim.platform import SimPlatform
from haven.tee.sim.qe import QuotingEnclave
from tests.sim_quote_support import launch_app, make_platform

UTC = datetime.UTC
# The go-tdx-guest SPR quote ends in 39 bytes of ASCII ("extra bytes(only for testing purpose)"),
# which are neither signed nor zero padding.
SPR_TAIL = 39


def at(seconds: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True)
class DcapSet:
    """A vector set of ../shared/vectors/README.md: quote, collateral, time, expected verdict."""

    name: str
    quote: str
    collateral: str
    now: datetime.datetime
    status: str | None  # expected TCB status, or None when verification must fail
    advisories: tuple[str, ...] = ()
    error: str | None = None  # expected AttestationError kind when status is None
    strip_tail: int = 0

    def quote_bytes(self, vectors: Path) -> bytes:
        raw = decode_evidence((vectors / self.quote).read_bytes())
        return raw[: len(raw) - self.strip_tail]


SETS = (
    DcapSet(
        "sgx-v3",
        "sgx/dcap-qvl/sgx_quote.bin",
        "sgx/dcap-qvl/sgx_quote_collateral.json",
        at(1752919277),
        "ConfigurationAndSWHardeningNeeded",
        ("INTEL-SA-00289", "INTEL-SA-00615"),
    ),
    DcapSet(
        "tdx-v4",
        "tdx/dcap-qvl/tdx_quote.bin",
        "tdx/dcap-qvl/tdx_quote_collateral.json",
        at(1752919234),
        "UpToDate",
    ),
    # The file name says "outdated"; the PCK's SGX component 7 (SEAMLDR ACM SVN 3) is below every level's 5.
    DcapSet(
        "tdx-v5",
        "tdx/dcap-qvl/tdx_quote_outdated.bin",
        "tdx/dcap-qvl/tdx_quote_outdated_collateral.json",
        at(1774003274),
        None,
        error="tcb-no-match",
    ),
    DcapSet(
        "tdx-v4-near",
        "tdx/dcap-qvl/near_quote_hex.txt",
        "tdx/dcap-qvl/near_quote_collateral.json",
        at(1756800000),
        "UpToDate",
    ),
    DcapSet(
        "tdx-v4-spr",
        "tdx/go-tdx-guest/tdx_prod_quote_SPR_E4.dat",
        "tdx/go-tdx-guest",
        datetime.datetime(2023, 7, 1, 1, 0, tzinfo=UTC),
        None,
        error="tcb-no-match",
        strip_tail=SPR_TAIL,
    ),
)
SET_IDS = [s.name for s in SETS]

# Quotes checked for their own signatures and PCK chain only (no collateral in the vectors).
PARSE_ONLY = (
    "sgx/trustee/occlum_quote.dat",
    "tdx/dcap-qvl/tdx-quote.hex",
    "tdx/dcap-qvl/quote-from-tappd.hex",
    "tdx/go-tdx-guest/quote_v5_sample.dat",
    "tdx/go-tdx-guest/cos-113-tdx-quote.dat",
)


def intel_roots() -> tuple[x509.Certificate, ...]:
    return (intel_sgx_root(),)


def inside(chain: list[x509.Certificate]) -> datetime.datetime:
    """A time inside every certificate's window (the middle of their intersection)."""
    start = max(c.not_valid_before_utc for c in chain)
    end = min(c.not_valid_after_utc for c in chain)
    assert start < end
    return start + (end - start) / 2


def quote_regions(quote: bytes) -> dict[str, range]:
    """Byte ranges of a quote's parts (absolute offsets), from its parsed lengths."""
    q = parse_quote(quote)
    signed = len(q.signed_bytes)
    regions: dict[str, range] = {"header.version": range(0, 2), "header.key_type": range(2, 4)}
    regions["header.tee_type"] = range(4, 8)
    regions["header.svns"] = range(8, 12)
    regions["header.qe_vendor"] = range(12, 28)
    regions["header.user_data"] = range(28, 48)
    body_at = 48
    if q.version == 5:
        regions["body.descriptor"] = range(48, 54)
        body_at = 54
    regions["body"] = range(body_at, signed)
    regions["sig_len"] = range(signed, signed + 4)
    at_ = signed + 4
    regions["isv_signature"] = range(at_, at_ + 64)
    regions["attest_key"] = range(at_ + 64, at_ + 128)
    at_ += 128
    if q.version == 3:
        regions["qe_report"] = range(at_, at_ + 384)
        regions["qe_report_signature"] = range(at_ + 384, at_ + 448)
        at_ += 448
    else:
        regions["outer_cert_header"] = range(at_, at_ + 6)
        regions["qe_report"] = range(at_ + 6, at_ + 390)
        regions["qe_report_signature"] = range(at_ + 390, at_ + 454)
        at_ += 454
    regions["auth_size"] = range(at_, at_ + 2)
    regions["auth_data"] = range(at_ + 2, at_ + 2 + len(q.qe_auth_data))
    at_ += 2 + len(q.qe_auth_data)
    regions["cert_header"] = range(at_, at_ + 6)
    regions["pck_chain"] = range(at_ + 6, at_ + 6 + len(q.pck_chain_pem))
    regions["padding"] = range(len(quote) - q.padding, len(quote))
    assert regions["pck_chain"].stop == regions["padding"].start
    return regions


# -- simulated evidence ---------------------------------------------------------------------------


@dataclass
class SimEvidence:
    platform: SimPlatform
    qe: QuotingEnclave
    quote: bytes
    collateral: str  # dcap-qvl JSON
    now: datetime.datetime

    @property
    def root(self) -> x509.Certificate:
        return self.qe.pki.root_cert

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        return (intel_sgx_root(), self.qe.pki.root_cert)

    def sign(self, text: str) -> str:
        der = self.qe.pki.tcb_signing_key.sign(text.encode(), ec.ECDSA(hashes.SHA256()))
        return ecdsa_der_to_raw(der).hex()

    def resigned(
        self, *, tcb_info: dict[str, Any] | None = None, qe_identity: dict[str, Any] | None = None
    ) -> str:
        """The collateral JSON with TCB Info and/or QE Identity replaced, signed by the simulated TCB key."""
        doc = json.loads(self.collateral)
        for name, value in (("tcb_info", tcb_info), ("qe_identity", qe_identity)):
            if value is not None:
                doc[name] = json.dumps(value, separators=(",", ":"))
                doc[f"{name}_signature"] = self.sign(doc[name])
        return json.dumps(doc)

    def document(self, name: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(json.loads(self.collateral)[name])
        return doc


REPORT_DATA = bytes(range(64))


def sim_evidence(
    path: Path, *, debug: bool = False, now: datetime.datetime | None = None, **config: Any
) -> SimEvidence:
    platform = make_platform(path, **config)
    qe = QuotingEnclave(platform)
    app = launch_app(platform, debug=debug)
    quote = qe.quote(app.ereport(qe.target_info(), REPORT_DATA))
    now = now or datetime.datetime.now(UTC).replace(microsecond=0)
    collateral = platform_collateral(platform, now, pki=qe.pki).to_dcap_qvl_json()
    return SimEvidence(platform, qe, quote, collateral, now)
