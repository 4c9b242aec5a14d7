"""TCB evaluation as Intel's Quote Verification Library specifies it.

Section numbers refer to Intel's *SGX/TDX DCAP Quote Verification Library* verification steps (the
"4.1.2.4.x" steps its sources cite):

- 4.1.2.4.9/.10  the TCB Info is for this TEE (id ``SGX``/``TDX``), this FMSPC and this PCE-ID;
- 4.1.2.4.11     TDX: the module's MRSIGNERSEAM and SEAM attributes are those TCB Info names
                 (``tdxModule``, or the ``tdxModuleIdentities`` entry ``TDX_%02X`` of its major version);
- 4.1.2.4.14/.15 the QE Identity is for this TEE (``QE``/``TD_QE``); the QE's MISCSELECT and ATTRIBUTES
                 under their masks, MRSIGNER and ISVPRODID match; its ISVSVN selects a QE TCB level;
- 4.1.2.4.17     the platform TCB level: the first level (newest first) whose 16 SGX components and
                 PCESVN the PCK certificate meets; for TDX also every TEE_TCB_SVN byte (bytes 0 and 1
                 — the module's own SVN and version — skipped when the module version is non-zero,
                 as the module is judged by its identity's levels instead); then the statuses are
                 merged: platform with TDX module, then with the QE, as `_converge` does.

A final status of ``Revoked`` is an error (kind ``revoked``). Advisory IDs are those of the platform
level, the TDX module level and the QE level, in that order, without repeats.
"""

from __future__ import annotations

from dataclasses import dataclass

from haven.attest.dcap.documents import EnclaveIdentity, IsvTcbLevel, TcbInfo, TcbLevel, TdxModule
from haven.attest.dcap.pck import PckExtension
from haven.attest.dcap.quote import BODY_TD15, DcapQuote, TdReport15
from haven.attest.errors import AttestationError

# QVL TcbLevelCheck: the statuses a QE or TDX-module "OutOfDate" turns each platform status into.
_OUT_OF_DATE_MERGE = {
    "UpToDate": "OutOfDate",
    "SWHardeningNeeded": "OutOfDate",
    "ConfigurationNeeded": "OutOfDateConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded": "OutOfDateConfigurationNeeded",
}
QE_ID = {"sgx": "QE", "tdx": "TD_QE"}


def _converge(status: str, other: str) -> str:
    """convergeTcbStatusWithQeTcbStatus / …WithTdxModuleStatus: merge a QE or module status in."""
    if other == "OutOfDate":
        return _OUT_OF_DATE_MERGE.get(status, status)
    if other == "Revoked":
        return "Revoked"
    return status


def _hex(b: bytes) -> str:
    return b.hex().upper()


def check_tcb_info_applies(info: TcbInfo, quote: DcapQuote, pck: PckExtension) -> None:
    """4.1.2.4.9/.10: the TCB Info is for this quote's TEE, FMSPC and PCE-ID (else collateral-mismatch)."""
    want = "TDX" if quote.tee == "tdx" else "SGX"
    if info.id != want or (quote.tee == "tdx" and info.version < 3):
        raise AttestationError(
            "collateral-mismatch", f"TCB Info is for {info.id} (version {info.version}), the quote is {want}"
        )
    if info.fmspc != pck.fmspc:
        raise AttestationError(
            "collateral-mismatch",
            f"TCB Info is for FMSPC {_hex(info.fmspc)}, the PCK certificate's is {_hex(pck.fmspc)}",
        )
    if info.pce_id != pck.pce_id:
        raise AttestationError(
            "collateral-mismatch",
            f"TCB Info is for PCE-ID {_hex(info.pce_id)}, the PCK certificate's is {_hex(pck.pce_id)}",
        )


@dataclass(frozen=True)
class QeTcb:
    """The QE identity check's outcome: the QE TCB level its ISVSVN selects."""

    status: str  # UpToDate, OutOfDate or Revoked
    advisory_ids: tuple[str, ...]
    isvsvn: int


def _isv_level(levels: tuple[IsvTcbLevel, ...], isvsvn: int) -> IsvTcbLevel | None:
    return next((lv for lv in levels if isvsvn >= lv.isvsvn), None)


def check_qe_identity(identity: EnclaveIdentity, quote: DcapQuote) -> QeTcb:
    """4.1.2.4.14/.15: the quoting enclave is the one the QE Identity describes; its TCB level."""
    report = quote.qe_report
    if identity.id != QE_ID[quote.tee]:
        raise AttestationError(
            "collateral-mismatch",
            f"QE Identity is for {identity.id}, a {quote.tee} quote needs {QE_ID[quote.tee]}",
        )
    if report.miscselect & identity.miscselect_mask != identity.miscselect:
        raise AttestationError("collateral-mismatch", "the QE's MISCSELECT does not match its QE Identity")
    attributes = report.attributes.to_bytes()
    masked = bytes(a & m for a, m in zip(attributes, identity.attributes_mask, strict=True))
    if masked != identity.attributes:
        raise AttestationError("collateral-mismatch", "the QE's ATTRIBUTES do not match its QE Identity")
    if report.mrsigner != identity.mrsigner:
        raise AttestationError(
            "collateral-mismatch", f"the QE's MRSIGNER {report.mrsigner.hex()} is not its QE Identity's"
        )
    if report.isvprodid != identity.isvprodid:
        raise AttestationError(
            "collateral-mismatch",
            f"the QE's ISVPRODID {report.isvprodid} is not its QE Identity's {identity.isvprodid}",
        )
    level = _isv_level(identity.levels, report.isvsvn)
    if level is None:
        raise AttestationError("tcb-no-match", f"no QE Identity TCB level covers QE ISVSVN {report.isvsvn}")
    return QeTcb(level.status, level.advisory_ids, report.isvsvn)


@dataclass(frozen=True)
class TcbVerdict:
    """The platform's TCB status, merged from every level that applies, with its advisories."""

    status: str
    advisory_ids: tuple[str, ...]
    level: TcbLevel  # the platform level (the TDX level for TDX)
    sgx_status: str
    qe_status: str
    tdx_module: str | None = None  # the TDX module identity used, e.g. "TDX_01"
    tdx_module_status: str | None = None
    relaunch_advised: bool = False


def _sgx_matches(level: TcbLevel, pck: PckExtension) -> bool:
    return pck.pcesvn >= level.pcesvn and all(
        p >= lv for p, lv in zip(pck.tcb_components, level.sgx_components, strict=True)
    )


def _tdx_matches(level: TcbLevel, tee_tcb_svn: bytes) -> bool:
    if level.tdx_components is None:
        return False
    start = 2 if tee_tcb_svn[1] > 0 else 0
    return all(tee_tcb_svn[i] >= level.tdx_components[i] for i in range(start, len(tee_tcb_svn)))


def _module_identity(info: TcbInfo, version: int) -> TdxModule | None:
    wanted = f"TDX_{version:02X}"
    return next((m for m in info.tdx_module_identities if m.id.upper() == wanted), None)


def _check_tdx_module(info: TcbInfo, quote: DcapQuote) -> tuple[str | None, str]:
    """4.1.2.4.11 and the module's TCB status (QVL TdxModuleCheck): (identity id, status)."""
    td = quote.td_report
    major, isvsvn = td.tee_tcb_svn[1], td.tee_tcb_svn[0]
    module = info.tdx_module
    ident: str | None = None
    if quote.version > 3 and major > 0:
        found = _module_identity(info, major)
        if found is None:
            raise AttestationError(
                "tcb-no-match", f"TCB Info has no TDX module identity TDX_{major:02X} for this TDX module"
            )
        module, ident = found, found.id
    if module is None:  # pragma: no cover - a TDX TCB Info always has tdxModule (checked when parsed)
        raise AttestationError("malformed", "TCB Info has no tdxModule")
    if td.mr_signer_seam != module.mrsigner:
        raise AttestationError(
            "tcb-no-match",
            f"the TDX module's MRSIGNERSEAM is not the signer TCB Info names ({ident or 'tdxModule'})",
        )
    # QVL 4.1.2.4.11.2 compares SEAM attributes unmasked and requires them zero.
    if any(td.seam_attributes) or td.seam_attributes != module.attributes:
        raise AttestationError(
            "tcb-no-match", "the TDX module's SEAM attributes are not zero as TCB Info requires"
        )
    if ident is None:
        return None, "UpToDate"
    level = _isv_level(module.levels, isvsvn)
    if level is None:
        raise AttestationError(
            "tcb-no-match", f"no TCB level of TDX module {ident} covers its ISVSVN {isvsvn}"
        )
    return ident, level.status


def _module_advisories(info: TcbInfo, ident: str | None, isvsvn: int) -> tuple[str, ...]:
    if ident is None:
        return ()
    module = next(m for m in info.tdx_module_identities if m.id == ident)
    level = _isv_level(module.levels, isvsvn)
    return level.advisory_ids if level else ()


def _relaunch_advised(info: TcbInfo, quote: DcapQuote, sgx: str, tdx: str, module: str, qe: str) -> bool:
    """QVL TDRelaunchCheck (TD 1.5 bodies): the platform is already patched — TEE_TCB_SVN2, the SVNs the
    TD would get if relaunched, reach the newest level — so relaunching the TD would bring it up to date."""
    body = quote.body
    if quote.body_type != BODY_TD15 or not isinstance(body, TdReport15):
        return False
    if qe in ("OutOfDate", "Revoked") or sgx not in _OUT_OF_DATE_MERGE:
        return False
    if tdx not in ("OutOfDate", "OutOfDateConfigurationNeeded") or module != "OutOfDate":
        return False
    svn2 = body.tee_tcb_svn2
    latest = info.levels[0].tdx_components
    if latest is None:
        return False
    if svn2[1] == 0:
        return svn2[0] >= latest[0] and svn2[2] >= latest[2]
    identity = _module_identity(info, svn2[1])
    if identity is None or not identity.levels:
        return False
    return svn2[0] >= identity.levels[0].isvsvn and svn2[2] >= latest[2]


def _merge_ids(*groups: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(a for g in groups for a in g))


def evaluate_tcb(info: TcbInfo, quote: DcapQuote, pck: PckExtension, qe: QeTcb) -> TcbVerdict:
    """4.1.2.4.17: the platform's TCB status (``tcb-no-match`` if no level applies; ``revoked``)."""
    sgx_level = next((lv for lv in info.levels if _sgx_matches(lv, pck)), None)
    if sgx_level is None:
        raise AttestationError(
            "tcb-no-match",
            f"no TCB level covers the platform (SGX TCB {list(pck.tcb_components)}, PCESVN {pck.pcesvn})",
        )
    if quote.tee == "sgx":
        status = _converge(sgx_level.status, qe.status)
        verdict = TcbVerdict(
            status,
            _merge_ids(sgx_level.advisory_ids, qe.advisory_ids),
            sgx_level,
            sgx_level.status,
            qe.status,
        )
    else:
        tee_tcb_svn = quote.td_report.tee_tcb_svn
        tdx_level = next(
            (lv for lv in info.levels if _sgx_matches(lv, pck) and _tdx_matches(lv, tee_tcb_svn)), None
        )
        if tdx_level is None:
            raise AttestationError(
                "tcb-no-match", f"no TDX TCB level covers the platform (TEE_TCB_SVN {tee_tcb_svn.hex()})"
            )
        ident, module_status = _check_tdx_module(info, quote)
        tdx_status = _converge(tdx_level.status, module_status)
        relaunch = _relaunch_advised(info, quote, sgx_level.status, tdx_status, module_status, qe.status)
        advisories = _merge_ids(
            tdx_level.advisory_ids, _module_advisories(info, ident, tee_tcb_svn[0]), qe.advisory_ids
        )
        status = _converge(tdx_status, qe.status)
        verdict = TcbVerdict(
            status, advisories, tdx_level, sgx_level.status, qe.status, ident, module_status, relaunch
        )
    if verdict.status == "Revoked":
        raise AttestationError("revoked", "the platform's TCB level is Revoked")
    return verdict
