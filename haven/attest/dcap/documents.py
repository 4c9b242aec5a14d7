"""TCB Info (v2, v3) and QE Identity (v2) documents, parsed strictly from Intel's JSON.

Formats: Intel PCS API v3/v4 documentation, "TCB Info V2/V3" and "Enclave Identity V2" (the JSON the
PCS serves at ``/sgx/certification/v4/tcb``, ``/tdx/certification/v4/tcb`` and ``…/qe/identity``).
These are values only; `haven.attest.dcap.collateral` finds the exact signed bytes and checks the
signatures, `haven.attest.dcap.tcb` matches a platform against them.

Parsing is strict where a lax reading could change a verdict: duplicate keys are refused (two parsers
could pick different copies of a signed value), integers must be integers (not booleans or floats) in
their ranges, hex fields have their exact length, statuses are Intel's. Keys Intel may add later are
ignored. Every failure is ``AttestationError("malformed")``.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from typing import Any

from haven.attest.errors import AttestationError
from haven.tee.sgx.tcb import TCB_STATUSES

# PCS API, "tcbStatus" of a TCB level (TCB Info v3) — and the statuses a verdict can carry.
TCB_LEVEL_STATUSES = frozenset(TCB_STATUSES)
# PCS API, Enclave Identity V2 and TDX module identity "tcbStatus": only these three.
ISV_LEVEL_STATUSES = frozenset({"UpToDate", "OutOfDate", "Revoked"})
TCB_INFO_VERSIONS = (2, 3)
ENCLAVE_IDENTITY_VERSION = 2
TCB_COMPONENTS = 16
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?Z")
_HEX = re.compile(r"[0-9A-Fa-f]*")
_ADVISORY = re.compile(r"[A-Z0-9][A-Z0-9-]{0,63}")


def _bad(what: str, message: str) -> AttestationError:
    return AttestationError("malformed", f"{what}: {message}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def loads_strict(text: str, what: str) -> Any:
    """JSON with duplicate keys refused and no NaN/Infinity."""

    def _constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_constant)
    except (ValueError, RecursionError) as e:
        raise _bad(what, f"not valid JSON ({e})") from None


class _Obj:
    """Typed access to a JSON object, naming the document and path in every error."""

    def __init__(self, value: Any, what: str) -> None:
        if not isinstance(value, dict):
            raise _bad(what, "is not a JSON object")
        self.d: dict[str, Any] = value
        self.what = what

    def get(self, key: str) -> Any:
        if key not in self.d:
            raise _bad(self.what, f"{key!r} is missing")
        return self.d[key]

    def integer(self, key: str, maximum: int) -> int:
        v = self.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= maximum:
            raise _bad(self.what, f"{key!r} must be an integer in 0..{maximum}")
        return v

    def string(self, key: str) -> str:
        v = self.get(key)
        if not isinstance(v, str):
            raise _bad(self.what, f"{key!r} must be a string")
        return v

    def hexbytes(self, key: str, size: int) -> bytes:
        v = self.string(key)
        if len(v) != 2 * size or not _HEX.fullmatch(v):
            raise _bad(self.what, f"{key!r} must be {size} bytes of hex")
        return bytes.fromhex(v)

    def time(self, key: str) -> datetime.datetime:
        v = self.string(key)
        if not _TIME.fullmatch(v):
            raise _bad(self.what, f"{key!r} is not a UTC time like 2025-01-01T00:00:00Z")
        try:
            return datetime.datetime.fromisoformat(v[:19]).replace(tzinfo=datetime.UTC)
        except ValueError:
            raise _bad(self.what, f"{key!r} is not a valid date") from None

    def array(self, key: str) -> list[Any]:
        v = self.get(key)
        if not isinstance(v, list):
            raise _bad(self.what, f"{key!r} must be a list")
        return v

    def status(self, allowed: frozenset[str]) -> str:
        v = self.string("tcbStatus")
        if v not in allowed:
            raise _bad(self.what, f"TCB status {v!r} is not one of {', '.join(sorted(allowed))}")
        return v

    def advisories(self) -> tuple[str, ...]:
        if "advisoryIDs" not in self.d:
            return ()
        ids = self.array("advisoryIDs")
        if not all(isinstance(a, str) and _ADVISORY.fullmatch(a) for a in ids):
            raise _bad(self.what, "advisoryIDs must be identifiers like INTEL-SA-00615")
        return tuple(ids)


@dataclass(frozen=True)
class IsvTcbLevel:
    """A TCB level of an enclave identity or a TDX module identity: ISVSVN → status."""

    isvsvn: int
    tcb_date: datetime.datetime
    status: str
    advisory_ids: tuple[str, ...]


def _isv_levels(raw: list[Any], what: str) -> tuple[IsvTcbLevel, ...]:
    levels = []
    for i, item in enumerate(raw):
        lv = _Obj(item, f"{what} tcbLevels[{i}]")
        tcb = _Obj(lv.get("tcb"), f"{lv.what}.tcb")
        levels.append(
            IsvTcbLevel(
                tcb.integer("isvsvn", 0xFFFF),
                lv.time("tcbDate"),
                lv.status(ISV_LEVEL_STATUSES),
                lv.advisories(),
            )
        )
    if not levels:
        raise _bad(what, "has no TCB levels")
    return tuple(levels)


@dataclass(frozen=True)
class TcbLevel:
    """A platform TCB level of TCB Info: minimum SVNs, and the status of a platform at or above them."""

    sgx_components: tuple[int, ...]
    pcesvn: int
    tdx_components: tuple[int, ...] | None  # TDX TCB Info only
    tcb_date: datetime.datetime
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class TdxModule:
    """`tdxModule` / an entry of `tdxModuleIdentities`: who signs the TDX module, and its levels."""

    id: str
    mrsigner: bytes  # 48 bytes
    attributes: bytes  # 8 bytes
    attributes_mask: bytes
    levels: tuple[IsvTcbLevel, ...] = ()


@dataclass(frozen=True)
class TcbInfo:
    id: str  # "SGX" or "TDX" ("SGX" for version 2, which has no id)
    version: int
    issue_date: datetime.datetime
    next_update: datetime.datetime
    fmspc: bytes
    pce_id: bytes
    tcb_type: int
    tcb_evaluation_data_number: int
    levels: tuple[TcbLevel, ...]
    tdx_module: TdxModule | None = None
    tdx_module_identities: tuple[TdxModule, ...] = ()


def _components(raw: Any, what: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or len(raw) != TCB_COMPONENTS:
        raise _bad(what, f"must list {TCB_COMPONENTS} components")
    out = []
    for i, item in enumerate(raw):
        # The hot loop of TCB Info parsing (16 components × every level), kept flat.
        svn = item.get("svn") if isinstance(item, dict) else None
        if type(svn) is not int or not 0 <= svn <= 255:
            raise _bad(f"{what}[{i}]", "'svn' must be an integer in 0..255")
        out.append(svn)
    return tuple(out)


def _tcb_level(item: Any, what: str, version: int, tdx: bool) -> TcbLevel:
    lv = _Obj(item, what)
    tcb = _Obj(lv.get("tcb"), f"{what}.tcb")
    if version == 2:
        # TCB Info v2: "sgxtcbcomp01svn" … "sgxtcbcomp16svn" and "pcesvn" side by side.
        sgx = tuple(tcb.integer(f"sgxtcbcomp{i:02d}svn", 255) for i in range(1, TCB_COMPONENTS + 1))
        tdx_comps = None
    else:
        sgx = _components(tcb.get("sgxtcbcomponents"), f"{tcb.what}.sgxtcbcomponents")
        tdx_comps = _components(tcb.get("tdxtcbcomponents"), f"{tcb.what}.tdxtcbcomponents") if tdx else None
    return TcbLevel(
        sgx_components=sgx,
        pcesvn=tcb.integer("pcesvn", 0xFFFF),
        tdx_components=tdx_comps,
        tcb_date=lv.time("tcbDate"),
        status=lv.status(TCB_LEVEL_STATUSES),
        advisory_ids=lv.advisories(),
    )


def _tdx_module(raw: Any, what: str, *, with_levels: bool) -> TdxModule:
    m = _Obj(raw, what)
    return TdxModule(
        id=m.string("id") if with_levels else "",
        mrsigner=m.hexbytes("mrsigner", 48),
        attributes=m.hexbytes("attributes", 8),
        attributes_mask=m.hexbytes("attributesMask", 8),
        levels=_isv_levels(m.array("tcbLevels"), what) if with_levels else (),
    )


def parse_tcb_info(doc: Any) -> TcbInfo:
    """The inner ``tcbInfo`` object (already JSON-decoded)."""
    o = _Obj(doc, "TCB Info")
    version = o.integer("version", 0xFFFF)
    if version not in TCB_INFO_VERSIONS:
        raise _bad("TCB Info", f"version {version} is not 2 or 3")
    ident = "SGX" if version == 2 else o.string("id")
    if ident not in ("SGX", "TDX"):
        raise _bad("TCB Info", f"id {ident!r} is neither SGX nor TDX")
    tdx = ident == "TDX"
    tcb_type = o.integer("tcbType", 0xFFFF)
    if tcb_type != 0:  # PCS API: 0 is the only TCB type (components compared one by one)
        raise _bad("TCB Info", f"tcbType {tcb_type} is not 0")
    levels = tuple(
        _tcb_level(item, f"TCB Info tcbLevels[{i}]", version, tdx)
        for i, item in enumerate(o.array("tcbLevels"))
    )
    if not levels:
        raise _bad("TCB Info", "has no TCB levels")
    module = None
    identities: tuple[TdxModule, ...] = ()
    if tdx:
        module = _tdx_module(o.get("tdxModule"), "TCB Info tdxModule", with_levels=False)
        if "tdxModuleIdentities" in o.d:
            identities = tuple(
                _tdx_module(item, f"TCB Info tdxModuleIdentities[{i}]", with_levels=True)
                for i, item in enumerate(o.array("tdxModuleIdentities"))
            )
    info = TcbInfo(
        id=ident,
        version=version,
        issue_date=o.time("issueDate"),
        next_update=o.time("nextUpdate"),
        fmspc=o.hexbytes("fmspc", 6),
        pce_id=o.hexbytes("pceId", 2),
        tcb_type=tcb_type,
        tcb_evaluation_data_number=o.integer("tcbEvaluationDataNumber", 0xFFFFFFFF),
        levels=levels,
        tdx_module=module,
        tdx_module_identities=identities,
    )
    if info.next_update < info.issue_date:
        raise _bad("TCB Info", "nextUpdate is before issueDate")
    return info


@dataclass(frozen=True)
class EnclaveIdentity:
    """QE Identity v2: what the quoting enclave's REPORT must show, and its TCB levels."""

    id: str  # "QE" (SGX), "TD_QE" (TDX), "QVE"
    version: int
    issue_date: datetime.datetime
    next_update: datetime.datetime
    tcb_evaluation_data_number: int
    miscselect: int
    miscselect_mask: int
    attributes: bytes  # 16 bytes, as the REPORT's ATTRIBUTES
    attributes_mask: bytes
    mrsigner: bytes
    isvprodid: int
    levels: tuple[IsvTcbLevel, ...]


def parse_enclave_identity(doc: Any) -> EnclaveIdentity:
    """The inner ``enclaveIdentity`` object (already JSON-decoded)."""
    o = _Obj(doc, "QE Identity")
    version = o.integer("version", 0xFFFF)
    if version != ENCLAVE_IDENTITY_VERSION:
        raise _bad("QE Identity", f"version {version} is not {ENCLAVE_IDENTITY_VERSION}")
    ident = o.string("id")
    if ident not in ("QE", "TD_QE", "QVE"):
        raise _bad("QE Identity", f"id {ident!r} is not QE, TD_QE or QVE")
    identity = EnclaveIdentity(
        id=ident,
        version=version,
        issue_date=o.time("issueDate"),
        next_update=o.time("nextUpdate"),
        tcb_evaluation_data_number=o.integer("tcbEvaluationDataNumber", 0xFFFFFFFF),
        # MISCSELECT is a u32; Intel writes the hex of its little-endian bytes.
        miscselect=int.from_bytes(o.hexbytes("miscselect", 4), "little"),
        miscselect_mask=int.from_bytes(o.hexbytes("miscselectMask", 4), "little"),
        attributes=o.hexbytes("attributes", 16),
        attributes_mask=o.hexbytes("attributesMask", 16),
        mrsigner=o.hexbytes("mrsigner", 32),
        isvprodid=o.integer("isvprodid", 0xFFFF),
        levels=_isv_levels(o.array("tcbLevels"), "QE Identity"),
    )
    if identity.next_update < identity.issue_date:
        raise _bad("QE Identity", "nextUpdate is before issueDate")
    return identity
