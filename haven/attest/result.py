"""What verification establishes about a piece of evidence, whatever TEE produced it."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, Literal

from haven.tee.sgx.tcb import TCB_STATUSES

__all__ = ["TCB_STATUSES", "Tee", "VerifiedEvidence", "parse_time"]

Tee = Literal["sgx", "tdx", "snp", "nitro"]



@dataclass(frozen=True)
class VerifiedEvidence:
    """Evidence whose signatures, chains and collateral checked out at ``now``.

    ``measurements`` maps the TEE's own names (``mrenclave``, ``mrtd``, ``rtmr0``, ``measurement``,
    ``pcr0``...) to hex; ``claims`` holds the other fields a policy may test (``isvprodid``, ``policy``,
    ``vmpl``...). ``valid_from``/``valid_until`` bound the times at which the same verdict holds: the
    intersection of every certificate's, CRL's and collateral document's validity.
    """

    tee: Tee
    tcb_status: str
    advisory_ids: tuple[str, ...]
    measurements: dict[str, str]
    report_data: bytes
    debug: bool
    valid_from: datetime.datetime
    valid_until: datetime.datetime
    root: str  # subject of the trusted root the evidence chains to
    claims: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "verified": True,
            "tee": self.tee,
            "tcb_status": self.tcb_status,
            "advisory_ids": list(self.advisory_ids),
            "measurements": dict(self.measurements),
            "report_data": self.report_data.hex(),
            "debug": self.debug,
            "valid_from": _rfc3339(self.valid_from),
            "valid_until": _rfc3339(self.valid_until),
            "root": self.root,
            "claims": self.claims,
        }


def _rfc3339(t: datetime.datetime) -> str:
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime.datetime:
    """RFC 3339 (``2025-07-19T10:01:17Z``) or Unix seconds, as the CLI's ``--now`` takes them."""
    from haven.errors import HavenError

    text = text.strip()
    try:
        if text.lstrip("-").replace(".", "", 1).isdigit():
            return datetime.datetime.fromtimestamp(float(text), datetime.UTC)
        t = datetime.datetime.fromisoformat(text.replace("z", "Z"))
    except (ValueError, OverflowError, OSError):
        raise HavenError(f"{text!r} is neither an RFC 3339 time nor Unix seconds") from None
    if t.tzinfo is None:
        raise HavenError(f"{text!r} has no time zone (use Z for UTC)")
    return t.astimezone(datetime.UTC)
