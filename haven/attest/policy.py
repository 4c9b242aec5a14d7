"""Appraisal policy: which genuine evidence a relying party accepts (haven.attest.appraisal applies it).

Verification (haven.attest.verify) establishes that evidence is genuine and current; the policy then
says whether it is *acceptable*: reference values per TEE, the TCB statuses accepted, whether debug
TEEs are, the expected report data, and which roots are trusted. The schema (docs/attestation.md)::

    {"id": "...", "tcb_statuses": ["UpToDate", ...], "allow_debug": false, "report_data": "hex",
     "trusted_roots": ["intel-sgx", {"name": "haven-simulation", "certificate": "root.der"}, ...],
     "sgx": {"mrenclave": "hex" | ["hex", ...], "mrsigner": ..., "isvprodid": 1, "min_isvsvn": 2},
     "tdx": {"mrtd": ..., "rtmr0": ..., "rtmr3": ..., "mrseam": ..., "td_attributes": ...},
     "snp": {"measurement": ..., "host_data": ..., "vmpl": 0, "min_guest_svn": 1,
             "policy": {"debug": false, "migrate_ma": false, "smt": true, "single_socket": false},
             "min_tcb": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}},
     "nitro": {"pcrs": {"0": "hex", "1": "hex", "2": "hex"}}}

Parsing is strict and sans-I/O: unknown members, wrong types and malformed values are refused with
the JSON path of the offending member. Root certificate files are named here and read when roots are
resolved (haven.attest.verify.resolve_roots).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from haven.attest.result import TCB_STATUSES, Tee
from haven.attest.snp import POLICY_FLAGS
from haven.errors import HavenError

TEES: tuple[Tee, ...] = ("sgx", "tdx", "snp", "nitro")
# UpToDate, and SWHardeningNeeded: the platform is current, and what remains is mitigated in the
# enclave's own software (Intel's TCB Info spec, "tcbStatus"). Refusing it would refuse platforms that
# are as up to date as they can be; configuration and out-of-date statuses are the owner's to accept.
DEFAULT_TCB_STATUSES = ("UpToDate", "SWHardeningNeeded")
# Verification already refuses Revoked (kind `revoked`); a policy cannot accept it.
ACCEPTABLE_TCB_STATUSES = tuple(s for s in TCB_STATUSES if s != "Revoked")
VENDOR_ROOTS = ("intel-sgx", "amd", "amd-milan", "amd-genoa", "amd-turin", "aws-nitro")
SIMULATION_ROOT = "haven-simulation"
DEFAULT_POLICY_ID = "haven:default"
MAX_POLICY = 1 << 20
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
REPORT_DATA_MAX = 64


class PolicyError(HavenError):
    """The policy file is invalid; the message names the JSON path of the problem."""


@dataclass(frozen=True)
class RootSpec:
    """A trusted root as the policy names it: a vendor root, or a certificate file or fingerprint."""

    name: str
    where: str  # JSON path, for messages
    path: Path | None = None
    sha256: bytes | None = None


Rule = Literal["hex", "int", "min", "bit"]


@dataclass(frozen=True)
class Spec:
    rule: Rule
    size: int  # bytes of a hex value; the largest value of an integer
    source: Literal["measurements", "claims"]
    key: tuple[str, ...]  # where the evidence holds it (a path into claims for nested values)
    claim: str  # the AR4SI claim a mismatch contraindicates


@dataclass(frozen=True)
class Check:
    """One reference value: the policy member, the accepted values, and where the evidence has it."""

    field: str
    spec: Spec
    accepted: tuple[Any, ...]  # bytes for hex, ints for int; (minimum,) for min; (bit, expected) for bit


def _hexref(size: int, source: Literal["measurements", "claims"], key: str, claim: str) -> Spec:
    return Spec("hex", size, source, (key,), claim)


_EXE, _CONF, _HW = "executables", "configuration", "hardware"
# Field sizes: SGX REPORT body (Intel SDM Vol. 3D, "REPORT"), TDX TD report (TDX module ABI,
# "REPORTMACSTRUCT"/"TDINFO_STRUCT"), SNP "ATTESTATION_REPORT Structure" (AMD 56860), Nitro PCRs (SHA-384).
_FIELDS: dict[Tee, dict[str, Spec]] = {
    "sgx": {
        "mrenclave": _hexref(32, "measurements", "mrenclave", _EXE),
        "mrsigner": _hexref(32, "measurements", "mrsigner", _EXE),
        "isvprodid": Spec("int", 0xFFFF, "claims", ("isvprodid",), _EXE),
        "min_isvsvn": Spec("min", 0xFFFF, "claims", ("isvsvn",), _EXE),
    },
    "tdx": {
        "mrtd": _hexref(48, "measurements", "mrtd", _EXE),
        **{f"rtmr{i}": _hexref(48, "measurements", f"rtmr{i}", _EXE) for i in range(4)},
        "mrseam": _hexref(48, "measurements", "mrseam", _HW),
        "td_attributes": _hexref(8, "claims", "td_attributes", _CONF),
    },
    "snp": {
        "measurement": _hexref(48, "measurements", "measurement", _EXE),
        "host_data": _hexref(32, "claims", "host_data", _CONF),
        "vmpl": Spec("int", 3, "claims", ("vmpl",), _CONF),
        "min_guest_svn": Spec("min", 0xFFFF_FFFF, "claims", ("guest_svn",), _EXE),
    },
    "nitro": {},
}
# SEV-SNP ABI spec (AMD 56860), "GUEST_POLICY Structure": the flags a policy may require set or clear.
SNP_POLICY_BITS = POLICY_FLAGS
# "TCB_VERSION Structure" components (Turin adds the FMC), as the SNP verifier names them.
SNP_TCB_COMPONENTS = ("bootloader", "tee", "snp", "microcode", "fmc")
NITRO_PCRS = 32


@dataclass(frozen=True)
class Policy:
    id: str
    tcb_statuses: tuple[str, ...]
    allow_debug: bool
    report_data: bytes | None
    trusted_roots: tuple[RootSpec, ...] | None  # None: the pinned vendor roots
    references: Mapping[Tee, tuple[Check, ...]]  # a TEE absent here is refused, unless none is named

    @classmethod
    def default(cls) -> Policy:
        """No policy file: any TEE, any TCB status verification accepts, no reference values."""
        return cls(DEFAULT_POLICY_ID, ACCEPTABLE_TCB_STATUSES, False, None, None, {})

    def accepts_tee(self, tee: str) -> bool:
        return not self.references or tee in self.references


# -- parsing -------------------------------------------------------------------------------------------


def _fail(where: str, message: str) -> PolicyError:
    return PolicyError(f"policy {where}: {message}")


def _object(value: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, "must be a JSON object")
    for key in value:
        if key not in allowed:
            raise _fail(f"{where}.{key}", f"unknown member (expected one of: {', '.join(allowed)})")
    return value


def _int(value: Any, where: str, largest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= largest:
        raise _fail(where, f"must be an integer from 0 to {largest}")
    return value


def _hex(value: Any, where: str, size: int | None, *, largest: int = 0) -> bytes:
    if not isinstance(value, str):
        raise _fail(where, "must be a hex string")
    digits = value[2:] if value[:2].lower() == "0x" else value
    if not _HEX.fullmatch(digits):
        raise _fail(where, "is not hex (an even number of hex digits)")
    data = bytes.fromhex(digits)
    if size is not None and len(data) != size:
        raise _fail(where, f"must be {size} bytes ({2 * size} hex digits), not {len(data)}")
    if size is None and not 1 <= len(data) <= largest:
        raise _fail(where, f"must be 1 to {largest} bytes, not {len(data)}")
    return data


def _one_or_more(value: Any, where: str, parse: Callable[[Any, str], Any]) -> tuple[Any, ...]:
    if isinstance(value, list):
        if not value:
            raise _fail(where, "lists no accepted value")
        return tuple(parse(v, f"{where}[{i}]") for i, v in enumerate(value))
    return (parse(value, where),)


def _check(field: str, spec: Spec, value: Any, where: str) -> Check:
    if spec.rule == "hex":
        accepted = _one_or_more(value, where, lambda v, w: _hex(v, w, spec.size))
    elif spec.rule == "int":
        accepted = _one_or_more(value, where, lambda v, w: _int(v, w, spec.size))
    else:
        accepted = (_int(value, where, spec.size),)
    return Check(field, spec, accepted)


def _snp_special(section: dict[str, Any], where: str) -> list[Check]:
    checks: list[Check] = []
    if "policy" in section:
        bits = _object(section["policy"], f"{where}.policy", tuple(SNP_POLICY_BITS))
        for name, expected in bits.items():
            if not isinstance(expected, bool):
                raise _fail(f"{where}.policy.{name}", "must be true or false")
            spec = Spec("bit", 0, "claims", ("policy",), _CONF)
            checks.append(Check(f"snp.policy.{name}", spec, (SNP_POLICY_BITS[name], expected)))
    if "min_tcb" in section:
        tcb = _object(section["min_tcb"], f"{where}.min_tcb", SNP_TCB_COMPONENTS)
        for name, value in tcb.items():
            spec = Spec("min", 0xFF, "claims", ("reported_tcb", name), _HW)
            checks.append(Check(f"snp.min_tcb.{name}", spec, (_int(value, f"{where}.min_tcb.{name}", 0xFF),)))
    return checks


def _nitro_pcrs(value: Any, where: str) -> list[Check]:
    pcrs = _object(value, where, tuple(str(i) for i in range(NITRO_PCRS)))
    checks = []
    for index, ref in sorted(pcrs.items(), key=lambda kv: int(kv[0])):
        spec = _hexref(48, "measurements", f"pcr{index}", _EXE)
        checks.append(_check(f"nitro.pcrs.{index}", spec, ref, f"{where}.{index}"))
    return checks


def _references(tee: Tee, value: Any) -> tuple[Check, ...]:
    where = f"$.{tee}"
    fields = _FIELDS[tee]
    special = {"snp": ("policy", "min_tcb"), "nitro": ("pcrs",)}.get(tee, ())
    section = _object(value, where, (*fields, *special))
    checks = [_check(f"{tee}.{k}", fields[k], v, f"{where}.{k}") for k, v in section.items() if k in fields]
    if tee == "snp":
        checks += _snp_special(section, where)
    if tee == "nitro" and "pcrs" in section:
        checks += _nitro_pcrs(section["pcrs"], f"{where}.pcrs")
    return tuple(checks)


def _root(value: Any, where: str, base: Path | None) -> RootSpec:
    if isinstance(value, str):
        if value == SIMULATION_ROOT:
            raise _fail(
                where,
                f"the simulation root is trusted only with its certificate or fingerprint: "
                f'{{"name": "{SIMULATION_ROOT}", "certificate": "FILE"}} or {{..., "sha256": "HEX"}}',
            )
        if value not in VENDOR_ROOTS:
            raise _fail(
                where,
                f"unknown root {value!r} (vendor roots: {', '.join(VENDOR_ROOTS)}; "
                'others as {"name": ..., "certificate": FILE} or {"name": ..., "sha256": HEX})',
            )
        return RootSpec(value, where)
    entry = _object(value, where, ("name", "certificate", "sha256"))
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(f"{where}.name", "must be a non-empty string")
    if name in VENDOR_ROOTS:
        raise _fail(f"{where}.name", f"{name!r} is a pinned vendor root; name it as the string {name!r}")
    if ("certificate" in entry) == ("sha256" in entry):
        raise _fail(where, "give exactly one of certificate (a file) and sha256 (a fingerprint)")
    if "sha256" in entry:
        return RootSpec(name, where, sha256=_hex(entry["sha256"], f"{where}.sha256", 32))
    path = entry["certificate"]
    if not isinstance(path, str) or not path:
        raise _fail(f"{where}.certificate", "must be a file name")
    resolved = Path(path) if base is None or Path(path).is_absolute() else base / path
    return RootSpec(name, where, path=resolved)


def _statuses(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise _fail("$.tcb_statuses", "must be a non-empty list of TCB statuses")
    for i, s in enumerate(value):
        if s not in ACCEPTABLE_TCB_STATUSES:
            why = "is always refused" if s == "Revoked" else "is not a TCB status"
            known = ", ".join(ACCEPTABLE_TCB_STATUSES)
            raise _fail(f"$.tcb_statuses[{i}]", f"{s!r} {why} (accepted: {known})")
    return tuple(dict.fromkeys(value))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup is not None:
        raise PolicyError(f"policy: the member {dup!r} appears twice in one object")
    return dict(pairs)


def parse_policy(data: bytes, *, base: Path | None = None) -> Policy:
    """A policy from its JSON bytes; certificate file names are relative to ``base``."""
    if len(data) > MAX_POLICY:
        raise PolicyError(f"policy: {len(data)} bytes is larger than {MAX_POLICY}")
    try:
        doc = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise PolicyError(f"policy: not valid JSON ({e})") from None
    top = ("version", "id", "tcb_statuses", "allow_debug", "report_data", "trusted_roots", *TEES)
    doc = _object(doc, "$", top)
    if doc.get("version", 1) != 1:
        raise _fail("$.version", "must be 1")
    policy_id = doc.get("id", "sha256:" + hashlib.sha256(data).hexdigest())
    if not isinstance(policy_id, str) or not policy_id:
        raise _fail("$.id", "must be a non-empty string")
    allow_debug = doc.get("allow_debug", False)
    if not isinstance(allow_debug, bool):
        raise _fail("$.allow_debug", "must be true or false")
    report_data = None
    if "report_data" in doc:
        report_data = _hex(doc["report_data"], "$.report_data", None, largest=REPORT_DATA_MAX)
    roots = None
    if "trusted_roots" in doc:
        if not isinstance(doc["trusted_roots"], list) or not doc["trusted_roots"]:
            raise _fail("$.trusted_roots", "must be a non-empty list")
        roots = tuple(_root(r, f"$.trusted_roots[{i}]", base) for i, r in enumerate(doc["trusted_roots"]))
    statuses = _statuses(doc["tcb_statuses"]) if "tcb_statuses" in doc else DEFAULT_TCB_STATUSES
    refs = {tee: _references(tee, doc[tee]) for tee in TEES if tee in doc}
    return Policy(policy_id, statuses, allow_debug, report_data, roots, refs)


def load_policy(path: Path) -> Policy:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise PolicyError(f"policy {path}: cannot read it ({e.strerror})") from None
    try:
        return parse_policy(data, base=Path(path).parent)
    except PolicyError as e:
        raise PolicyError(f"{path}: {e}") from None


def is_simulation_root(subject: str) -> bool:
    """Whether ``subject`` (RFC 4514) names the Haven Simulation Root CA of some simulated platform."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from haven.tee.simulation import ORGANIZATION, ROOT_CA_NAME

    try:
        name = x509.Name.from_rfc4514_string(subject)
    except ValueError:
        return False
    cn = [a.value for a in name.get_attributes_for_oid(NameOID.COMMON_NAME)]
    org = [a.value for a in name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return cn == [ROOT_CA_NAME] and org == [ORGANIZATION]
