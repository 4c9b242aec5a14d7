"""Appraisal: verified evidence against a policy, giving an EAR appraisal (status and AR4SI vector).

Every check runs, and each refusal is recorded, so a result explains all of what is wrong. The AR4SI
claims (draft-ietf-rats-ar4si §2.3) are set as follows:

- instance-identity 2: the evidence verified up to a trusted root;
- hardware 2 (genuine), 32 when the TCB status says the platform has known vulnerabilities
  (SWHardeningNeeded, OutOfDate...), or when the root is the Haven Simulation Root CA (no hardware
  protects a simulated enclave); 96 when the policy refuses the TCB status or a hardware reference
  value (TDX MRSEAM, SNP minimum TCB);
- configuration 2, 32 for accepted configuration statuses (ConfigurationNeeded...) and for an allowed
  debug TEE, 96 for refused ones and for configuration reference values that do not match;
- executables 2 (SGX, Nitro: every page of code is measured) or 3 (TDX, SNP: the boot image is) when
  reference values matched, 96 when one did not, no claim when the policy names none;
- runtime-opaque 2 (encrypted TEE memory), 32 for Nitro (isolated, not encrypted) and simulation,
  96 for a refused debug TEE (the host can read its memory);
- file-system, storage-opaque, sourced-data: no claim (the evidence says nothing about them).

The status is the worst tier among the claims, and ``contraindicated`` whenever the policy refused.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from haven.attest import ear
from haven.attest.errors import AttestationError, Kind
from haven.attest.policy import Check, Policy, Spec, is_simulation_root
from haven.attest.result import VerifiedEvidence

_EXE, _CONF, _HW = "executables", "configuration", "hardware"


@dataclass(frozen=True)
class Appraisal:
    """The outcome of appraising verified evidence against a policy: an EAR appraisal and its reasons."""

    evidence: VerifiedEvidence
    policy_id: str
    vector: dict[str, int]
    status: ear.Status
    problems: tuple[AttestationError, ...]
    nonce: bytes | None  # the expected report data, when it matched

    @property
    def accepted(self) -> bool:
        return not self.problems

    def check(self) -> None:
        """Raise the first reason the evidence was refused, if any."""
        if self.problems:
            raise self.problems[0]

    def to_ear(self) -> dict[str, Any]:
        """This appraisal as an EAR submodule (draft-ietf-rats-ear §3.2)."""
        evidence = {k: v for k, v in self.evidence.to_json().items() if k != "verified"}
        sub: dict[str, Any] = {"ear.status": self.status}
        vector = {c: self.vector[c] for c in ear.TRUST_CLAIMS if self.vector.get(c, ear.NO_CLAIM)}
        if vector:
            sub["ear.trustworthiness-vector"] = vector
        sub["ear.appraisal-policy-id"] = self.policy_id
        sub["ear.veraison.annotated-evidence"] = evidence
        if self.problems:
            sub["ear.veraison.policy-claims"] = {
                "problems": [{"kind": p.kind, "message": str(p)} for p in self.problems]
            }
        return sub


class _Vector:
    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def claim(self, name: str, value: int) -> None:
        """Record ``value`` unless the claim already holds one of a worse tier (the worst tier wins)."""
        old = self.values.get(name)
        if old is None or ear.STATUSES.index(ear.tier(value)) > ear.STATUSES.index(ear.tier(old)):
            self.values[name] = value


# Intel's TCB statuses (TCB Info "tcbStatus") as AR4SI claims: what each says is wrong, and where.
_TCB_CLAIMS: dict[str, tuple[str, ...]] = {
    "UpToDate": (),
    "SWHardeningNeeded": (_HW,),
    "ConfigurationNeeded": (_CONF,),
    "ConfigurationAndSWHardeningNeeded": (_HW, _CONF),
    "OutOfDate": (_HW,),
    "OutOfDateConfigurationNeeded": (_HW, _CONF),
}
_FAILED = {
    _EXE: ear.CONTRAINDICATED_RUNTIME,
    _CONF: ear.UNSUPPORTABLE_CONFIG,
    _HW: ear.CONTRAINDICATED_HARDWARE,
}
_WARNED = {_EXE: ear.UNSAFE_RUNTIME, _CONF: ear.UNSAFE_CONFIG, _HW: ear.UNSAFE_HARDWARE}
_APPROVED = {_CONF: ear.APPROVED_CONFIG, _HW: ear.GENUINE_HARDWARE}
# SGX and Nitro measure every page of code the enclave runs; TDX and SNP measure the boot image.
_APPROVED_EXE: dict[str, int] = {"sgx": ear.APPROVED_RUNTIME, "nitro": ear.APPROVED_RUNTIME}


def _lookup(evidence: VerifiedEvidence, spec: Spec) -> Any:
    value: Any = evidence.measurements if spec.source == "measurements" else evidence.claims
    for key in spec.key:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _as_int(value: Any) -> int | None:
    if isinstance(value, Mapping):  # a decoded field that also keeps its raw value
        value = value.get("value", value.get("raw"))
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 16) if value.lower().startswith("0x") else int(value)
        except ValueError:
            return None
    return None


def _as_bytes(value: Any) -> bytes | None:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return bytes.fromhex(value[2:] if value[:2].lower() == "0x" else value)
        except ValueError:
            return None
    return None


def _run_check(check: Check, evidence: VerifiedEvidence) -> str | None:
    """Why the evidence fails ``check``, or None if it passes."""
    raw = _lookup(evidence, check.spec)
    name = ".".join(check.spec.key)
    if raw is None:
        return f"policy {check.field}: the evidence has no {name}"
    rule = check.spec.rule
    if rule == "hex":
        actual = _as_bytes(raw)
        if actual is None:
            return f"policy {check.field}: the evidence's {name} is not hex"
        # Every accepted value is compared, in constant time, whatever matched first.
        matches = [hmac.compare_digest(actual, ref) for ref in check.accepted]
        if any(matches):
            return None
        which = "the accepted value" if len(matches) == 1 else f"any of the {len(matches)} accepted values"
        return f"policy {check.field}: the evidence has {actual.hex()}, not {which}"
    number = _as_int(raw)
    if number is None:
        return f"policy {check.field}: the evidence's {name} is not an integer"
    if rule == "int" and number not in check.accepted:
        return f"policy {check.field}: {name} {number} is not one of {', '.join(map(str, check.accepted))}"
    if rule == "min" and number < check.accepted[0]:
        return f"policy {check.field}: {name} {number} is below the minimum {check.accepted[0]}"
    if rule == "bit":
        bit, expected = check.accepted
        if bool(number >> bit & 1) != expected:
            state = "set" if expected else "clear"
            return f"policy {check.field}: the guest policy (0x{number:x}) must have bit {bit} {state}"
    return None


def _report_data_matches(expected: bytes, actual: bytes) -> bool:
    """Expected report data shorter than the evidence's field is zero-padded, as TEEs pad it."""
    if len(expected) > len(actual):
        return False
    return hmac.compare_digest(expected + bytes(len(actual) - len(expected)), actual)


def appraise(
    evidence: VerifiedEvidence,
    policy: Policy,
    *,
    allow_debug: bool | None = None,
    report_data: bytes | None = None,
) -> Appraisal:
    """Appraise verified ``evidence``: every check runs, and each refusal is recorded as a problem.

    ``allow_debug`` and ``report_data`` override the policy's (the CLI's flags).
    """
    allow_debug = policy.allow_debug if allow_debug is None else allow_debug
    expected = policy.report_data if report_data is None else report_data
    problems: list[tuple[Kind, str]] = []
    v = _Vector()
    v.claim("instance-identity", ear.TRUSTWORTHY_INSTANCE)
    simulated = is_simulation_root(evidence.root)
    v.claim(_HW, ear.UNSAFE_HARDWARE if simulated else ear.GENUINE_HARDWARE)
    tee_memory = ear.ISOLATED_MEMORY if evidence.tee == "nitro" or simulated else ear.ENCRYPTED_MEMORY
    v.claim(_CONF, ear.APPROVED_CONFIG)

    if evidence.debug:
        if allow_debug:
            v.claim(_CONF, ear.UNSAFE_CONFIG)  # allowed, but the host can read the TEE's memory
        else:
            v.claim(_CONF, ear.UNSUPPORTABLE_CONFIG)
            v.claim("runtime-opaque", ear.VISIBLE_MEMORY)
            problems.append(("debug", f"the {evidence.tee} TEE runs in debug mode, and debug is not allowed"))
    else:
        v.claim("runtime-opaque", tee_memory)

    if not policy.accepts_tee(evidence.tee):
        named = ", ".join(policy.references)
        why = f"policy: {evidence.tee} evidence is not accepted (the policy names {named})"
        problems.append(("policy", why))

    accepted = evidence.tcb_status in policy.tcb_statuses
    for claim in _TCB_CLAIMS.get(evidence.tcb_status, (_HW,)):
        v.claim(claim, _WARNED[claim] if accepted else _FAILED[claim])
    if not accepted:
        if evidence.tcb_status == "UpToDate":
            v.claim(_HW, ear.CONTRAINDICATED_HARDWARE)
        problems.append(
            (
                "policy",
                f"policy tcb_statuses: TCB status {evidence.tcb_status} is not accepted "
                f"(accepted: {', '.join(policy.tcb_statuses)})",
            )
        )

    exe_checked = False
    for check in policy.references.get(evidence.tee, ()):
        claim = check.spec.claim
        failure = _run_check(check, evidence)
        if failure is None:
            if claim == _EXE:
                exe_checked = True
            else:
                v.claim(claim, _APPROVED[claim])
        else:
            v.claim(claim, _FAILED[claim])
            problems.append(("policy", failure))
    if exe_checked:
        v.claim(_EXE, _APPROVED_EXE.get(evidence.tee, ear.APPROVED_BOOT))

    nonce = None
    if expected is not None:
        if _report_data_matches(expected, evidence.report_data):
            nonce = expected
        else:
            why = "policy report_data: the evidence's report data is not the expected value"
            problems.append(("policy", why))

    errors = tuple(AttestationError(kind, message) for kind, message in problems)
    status = "contraindicated" if errors else ear.status_of(v.values)
    return Appraisal(evidence, policy.id, dict(v.values), status, errors, nonce)
