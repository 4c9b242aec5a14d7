"""Real evidence from ../shared/vectors, verified once per session, for the appraisal and CLI tests.

Each set is verified at the time the vectors README gives for it; the appraisal tests then work on the
`VerifiedEvidence` the verifiers produced, never on hand-written stand-ins.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from haven.attest.result import VerifiedEvidence, parse_time
from tests.conftest import VECTORS


@dataclass(frozen=True)
class VectorSet:
    """Evidence, what verifies it, and the time to verify at, as `haven attest verify` arguments."""

    evidence: str
    now: str
    collateral: str | None = None
    vek: str | None = None
    chain: str | None = None

    def argv(self) -> list[str]:
        argv = [str(VECTORS / self.evidence), "--now", self.now]
        for flag, value in (("--collateral", self.collateral), ("--vek", self.vek), ("--chain", self.chain)):
            if value is not None:
                argv += [flag, str(VECTORS / value)]
        return argv

    def path(self) -> Path:
        return VECTORS / self.evidence


SETS = {
    "sgx": VectorSet(
        "sgx/dcap-qvl/sgx_quote.bin", "1752919277", collateral="sgx/dcap-qvl/sgx_quote_collateral.json"
    ),
    "tdx": VectorSet(
        "tdx/dcap-qvl/tdx_quote.bin",
        "2025-07-19T10:00:34Z",
        collateral="tdx/dcap-qvl/tdx_quote_collateral.json",
    ),
    "snp": VectorSet(
        "snp/virtee-sev/report_milan.bin",
        "2024-01-01T00:00:00Z",
        vek="snp/virtee-sev/vcek_milan.der",
        chain="snp/virtee-sev/cert_chain_milan",
    ),
    "snp-debug": VectorSet(
        "snp/go-sev-guest/attestation.bin",
        "2022-09-24T01:00:00Z",
        vek="snp/go-sev-guest/vcek.testcer",
        chain="snp/go-sev-guest/ask_ark_milan.pem",
    ),
    "nitro": VectorSet("nitro/blocky-nitrite/nitro_attestation.b64", "2024-09-07T14:37:39.545Z"),
    "nitro-debug": VectorSet("nitro/blocky-nitrite/nitro_attestation_debug.b64", "2024-09-07T14:38:06.508Z"),
}


@functools.cache
def verified(name: str) -> VerifiedEvidence:
    from haven.attest.verify import verify_evidence

    s = SETS[name]
    collateral = None
    if s.collateral is not None:
        from haven.attest.dcap.collateral import load_collateral

        collateral = load_collateral(VECTORS / s.collateral)
    return verify_evidence(
        s.path().read_bytes(),
        collateral=collateral,
        vek=(VECTORS / s.vek).read_bytes() if s.vek else None,
        chain=(VECTORS / s.chain).read_bytes() if s.chain else None,
        now=parse_time(s.now),
    )
