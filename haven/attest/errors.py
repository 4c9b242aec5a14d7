"""Why evidence was not accepted: one error class, with the check that failed as its ``kind``.

The kinds are the verdicts `haven attest verify` reports; each names the check, not the symptom, so a
relying party (and a test) can tell a forged signature from stale collateral.
"""

from __future__ import annotations

from typing import Literal, get_args

from haven.errors import HavenError

Kind = Literal[
    "malformed",  # the evidence or collateral does not parse
    "signature",  # a signature over evidence or collateral does not verify
    "chain",  # a certificate chain does not lead to a trusted root
    "revoked",  # a certificate is listed in a CRL, or the TCB level is Revoked
    "expired",  # a certificate, CRL or collateral document is past its validity at `now`
    "not-yet-valid",  # ... or not yet valid at `now`
    "tcb-no-match",  # no TCB level in the TCB Info matches the platform
    "debug",  # the TEE runs in debug mode and debug is not allowed
    "policy",  # the appraisal policy refuses the (genuine) evidence
    "collateral-mismatch",  # the collateral is for another platform (FMSPC, PCE-ID, TEE type, QE)
]
KINDS: tuple[str, ...] = get_args(Kind)


class AttestationError(HavenError):
    """Evidence was refused. ``kind`` is one of :data:`KINDS`; the message is a sentence for people."""

    def __init__(self, kind: Kind, message: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown attestation error kind {kind!r}")
        super().__init__(message)
        self.kind: Kind = kind
