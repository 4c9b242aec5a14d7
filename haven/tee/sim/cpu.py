"""The enclave instructions of the simulated processor: ECREATE, EADD/EEXTEND, EINIT, EREPORT, EGETKEY.

Each follows the pseudo-code of its page in the Intel SDM Vol. 3D (chapter "Intel SGX Instruction
References"), keeping the checks that decide what an enclave is and what it may obtain:

- ECREATE refuses attributes the processor does not support, ATTRIBUTES.INIT, a 32-bit enclave, an
  XFRM that is not a legal XCR0, and KSS configuration fields without the KSS attribute.
- EADD refuses page types other than PT_REG and PT_TCS, reserved SECINFO bits, write-only pages,
  and malformed TCS pages; EADD/EEXTEND extend MRENCLAVE (``haven.tee.sgx.measure``).
- EINIT checks the SIGSTRUCT signature, MRENCLAVE against ENCLAVEHASH, ATTRIBUTES and MISCSELECT
  under their masks, and who may have PROVISIONKEY; then it fills in the enclave's identity.
- EREPORT MACs a REPORT for a target enclave; EGETKEY derives seal, report and provisioning keys
  (``haven.tee.sim.keys``).
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from haven.errors import EnclaveInitError, FormatError, KeyRequestError, ReportError
from haven.tee.sgx.image import EnclaveImage, PageRun
from haven.tee.sgx.measure import Measurement
from haven.tee.sgx.sigstruct import mrsigner_of, verify_sigstruct
from haven.tee.sgx.structs import (
    PAGE_SIZE,
    XFRM_LEGACY,
    AttributeFlags,
    Attributes,
    KeyName,
    KeyPolicy,
    KeyRequest,
    MiscSelect,
    PageType,
    Report,
    ReportBody,
    Secinfo,
    SecinfoFlags,
    Secs,
    Sigstruct,
    TargetInfo,
    Tcs,
)
from haven.tee.sim.keys import (
    EnclaveIdentity,
    cmac,
    derive_key,
    report_dependencies,
    sealing_dependencies,
)
from haven.tee.sim.platform import FuseKey

if TYPE_CHECKING:
    from haven.tee.sim.platform import SimPlatform

# What the simulated processor supports (its CPUID leaf 12H, sub-leaf 1, would report these).
SUPPORTED_FLAGS = int(
    AttributeFlags.DEBUG
    | AttributeFlags.MODE64BIT
    | AttributeFlags.PROVISIONKEY
    | AttributeFlags.EINITTOKEN_KEY
    | AttributeFlags.KSS
    | AttributeFlags.AEXNOTIFY
)
# XCR0 of a Xeon with AVX-512 and protection keys: x87, SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM, PKRU
# (SDM Vol. 1, "XSAVE-Supported Features and State-Component Bitmaps").
SUPPORTED_XFRM = 0x2E7
_XFRM_AVX = 1 << 2
_XFRM_AVX512 = 0b111 << 5
SUPPORTED_MISCSELECT = int(MiscSelect.EXINFO | MiscSelect.CPINFO)
# KEYPOLICY bits 15:6 are reserved; the KSS bits need SECS.ATTRIBUTES.KSS (SDM Vol. 3D, KEYPOLICY).
_POLICY_DEFINED = 0x3F
_POLICY_KSS = int(KeyPolicy.NOISVPRODID | KeyPolicy.CONFIGID | KeyPolicy.ISVFAMILYID | KeyPolicy.ISVEXTPRODID)
# SECINFO.FLAGS: R, W, X and PAGE_TYPE (bits 15:8) are the caller's; the rest are reserved for EADD.
_SECINFO_EADD_BITS = int(SecinfoFlags.R | SecinfoFlags.W | SecinfoFlags.X) | 0xFF00
_ZERO_RESERVED1, _ZERO_RESERVED2 = bytes(2), bytes(434)  # KEYREQUEST's reserved fields
_TCS_FLAGS_DEFINED = 0x1  # TCS.FLAGS.DBGOPTIN (SDM Vol. 3D, "Layout of Thread Control Structure")


def _flag_names(bits: int) -> str:
    names = [f.name for f in AttributeFlags if f.name and bits & f]
    other = bits & ~sum(int(f) for f in AttributeFlags)
    if other:
        names.append(f"{other:#x}")
    return "|".join(names) or "0"


# -- ECREATE, EADD, EEXTEND -------------------------------------------------------------------------


def _ecreate(
    image: EnclaveImage, attributes: Attributes, miscselect: int, configid: bytes, configsvn: int
) -> Secs:
    try:
        Measurement(image.size, image.ssaframesize)  # SIZE a power of two, SSAFRAMESIZE in range
        attributes.to_bytes()
    except FormatError as e:
        raise EnclaveInitError(f"ECREATE: {e}") from None
    flags, xfrm = attributes.flags, attributes.xfrm
    if flags & AttributeFlags.INIT:
        raise EnclaveInitError("ECREATE: ATTRIBUTES.INIT must be clear (EINIT sets it)")
    if flags & ~SUPPORTED_FLAGS:
        bad = _flag_names(flags & ~SUPPORTED_FLAGS)
        raise EnclaveInitError(f"ECREATE: unsupported or reserved attribute bits {bad}")
    if not flags & AttributeFlags.MODE64BIT:
        raise EnclaveInitError("ECREATE: ATTRIBUTES.MODE64BIT is clear; Haven runs only 64-bit enclaves")
    if xfrm & XFRM_LEGACY != XFRM_LEGACY:
        raise EnclaveInitError(f"ECREATE: XFRM {xfrm:#x} must enable x87 and SSE (bits 1:0 = 11b)")
    if xfrm & ~SUPPORTED_XFRM:
        raise EnclaveInitError(f"ECREATE: XFRM {xfrm:#x} enables state this processor lacks")
    if xfrm & _XFRM_AVX512 and (xfrm & _XFRM_AVX512 != _XFRM_AVX512 or not xfrm & _XFRM_AVX):
        raise EnclaveInitError(f"ECREATE: XFRM {xfrm:#x} is not a legal XCR0 (AVX-512 bits 7:5 need AVX)")
    if not isinstance(miscselect, int) or not 0 <= miscselect < 2**32 or miscselect & ~SUPPORTED_MISCSELECT:
        raise EnclaveInitError(f"ECREATE: unsupported MISCSELECT {miscselect!r}")
    if not isinstance(configid, bytes) or len(configid) != 64:
        raise EnclaveInitError("ECREATE: CONFIGID must be 64 bytes")
    if not isinstance(configsvn, int) or not 0 <= configsvn <= 0xFFFF:
        raise EnclaveInitError("ECREATE: CONFIGSVN must be 0..65535")
    if (any(configid) or configsvn) and not flags & AttributeFlags.KSS:
        raise EnclaveInitError("ECREATE: CONFIGID and CONFIGSVN need the KSS attribute")
    return Secs(
        size=image.size,
        ssaframesize=image.ssaframesize,
        miscselect=miscselect,
        attributes=Attributes(flags=flags, xfrm=xfrm),
        configid=configid,
        configsvn=configsvn,
    )


def _check_eadd(run: PageRun) -> None:
    where = f"EADD of page run {run.name or hex(run.offset)}"
    secinfo = run.secinfo
    if not isinstance(secinfo, Secinfo) or any(secinfo.reserved):
        raise EnclaveInitError(f"{where}: SECINFO has reserved bytes set")
    if secinfo.flags & ~_SECINFO_EADD_BITS:
        raise EnclaveInitError(f"{where}: SECINFO.FLAGS {secinfo.flags:#x} has reserved bits set")
    perms = secinfo.flags & 0x7
    page_type = secinfo.page_type
    if page_type == PageType.PT_REG:
        if perms & SecinfoFlags.W and not perms & SecinfoFlags.R:
            raise EnclaveInitError(f"{where}: a page cannot be writable but not readable")
    elif page_type == PageType.PT_TCS:
        if perms:
            raise EnclaveInitError(f"{where}: a TCS page must have no R/W/X permissions")
        for at in range(0, len(run.data), PAGE_SIZE):
            try:
                tcs = Tcs.from_bytes(run.data[at : at + PAGE_SIZE])
            except FormatError as e:
                raise EnclaveInitError(f"{where}: invalid TCS: {e}") from None
            if tcs.flags & ~_TCS_FLAGS_DEFINED:
                raise EnclaveInitError(f"{where}: TCS.FLAGS has reserved bits set")
            if (tcs.ossa | tcs.ofsbase | tcs.ogsbase) & (PAGE_SIZE - 1):
                raise EnclaveInitError(f"{where}: TCS OSSA, OFSBASE and OGSBASE must be page-aligned")
    else:
        raise EnclaveInitError(f"{where}: EADD cannot add a page of type {page_type}")


def _measure(image: EnclaveImage) -> bytes:
    for run in image.runs:
        _check_eadd(run)
    try:
        return image.mrenclave()
    except FormatError as e:
        raise EnclaveInitError(f"EADD: {e}") from None


# -- EINIT ------------------------------------------------------------------------------------------


def _einit(
    platform: SimPlatform, secs: Secs, mrenclave: bytes, image: EnclaveImage, sig: Sigstruct
) -> SimEnclave:
    try:
        verify_sigstruct(sig)  # raises EnclaveInitError naming the defect
        mrsigner = mrsigner_of(sig)
    except FormatError as e:
        raise EnclaveInitError(f"EINIT: malformed SIGSTRUCT: {e}") from None
    if not hmac.compare_digest(mrenclave, sig.enclavehash):
        raise EnclaveInitError(
            f"EINIT: the enclave's MRENCLAVE {mrenclave.hex()} does not match SIGSTRUCT.ENCLAVEHASH "
            f"{sig.enclavehash.hex()}: the image was changed after signing"
        )
    mine, mask, want = secs.attributes, sig.attributemask, sig.attributes
    diff = (mine.flags ^ want.flags) & mask.flags
    if diff:
        raise EnclaveInitError(
            f"EINIT: ATTRIBUTES differ from the SIGSTRUCT's under its mask ({_flag_names(diff)})"
        )
    if (mine.xfrm ^ want.xfrm) & mask.xfrm:
        raise EnclaveInitError(f"EINIT: XFRM {mine.xfrm:#x} differs from the SIGSTRUCT's under its mask")
    if (secs.miscselect ^ sig.miscselect) & sig.miscmask:
        raise EnclaveInitError(
            f"EINIT: MISCSELECT {secs.miscselect:#x} differs from the SIGSTRUCT's under MISCMASK"
        )
    if mine.flags & AttributeFlags.EINITTOKEN_KEY:
        raise EnclaveInitError(
            "EINIT: EINITTOKEN_KEY is for a launch enclave, and this platform (flexible launch control) "
            "has none"
        )
    # Launch policy: only the platform's own quoting enclave may hold the provisioning keys
    # (SDM Vol. 3D, "Launch Control"; Intel's platforms grant PROVISIONKEY to Intel-signed enclaves).
    if mine.flags & AttributeFlags.PROVISIONKEY and not hmac.compare_digest(mrsigner, platform.qe_mrsigner()):
        raise EnclaveInitError("EINIT: PROVISIONKEY is granted only to the platform's quoting enclave")
    kss = bool(mine.flags & AttributeFlags.KSS)
    final = secs.replace(
        mrenclave=mrenclave,
        mrsigner=mrsigner,
        isvprodid=sig.isvprodid,
        isvsvn=sig.isvsvn,
        attributes=Attributes(flags=mine.flags | AttributeFlags.INIT, xfrm=mine.xfrm),
    )
    return SimEnclave(
        platform,
        final,
        image,
        isvfamilyid=sig.isvfamilyid if kss else bytes(16),
        isvextprodid=sig.isvextprodid if kss else bytes(16),
    )


def build_enclave(
    platform: SimPlatform,
    image: EnclaveImage,
    sigstruct: Sigstruct,
    *,
    attributes: Attributes | None = None,
    miscselect: int | None = None,
    configid: bytes = bytes(64),
    configsvn: int = 0,
) -> SimEnclave:
    """ECREATE, EADD/EEXTEND of every run, then EINIT (see ``SimPlatform.load_enclave``)."""
    if not isinstance(image, EnclaveImage) or not isinstance(sigstruct, Sigstruct):
        raise EnclaveInitError("EINIT needs an EnclaveImage and a Sigstruct")
    if attributes is None:
        attributes = sigstruct.attributes
    secs = _ecreate(
        image,
        Attributes(flags=attributes.flags, xfrm=attributes.xfrm),
        sigstruct.miscselect if miscselect is None else miscselect,
        configid,
        configsvn,
    )
    return _einit(platform, secs, _measure(image), image, sigstruct)


# -- a running enclave: EREPORT and EGETKEY ---------------------------------------------------------


class SimEnclave:
    """An initialised enclave on a simulated platform."""

    def __init__(
        self,
        platform: SimPlatform,
        secs: Secs,
        image: EnclaveImage,
        *,
        isvfamilyid: bytes = bytes(16),
        isvextprodid: bytes = bytes(16),
    ) -> None:
        self.platform = platform
        self.image = image
        self._secs_raw = secs.to_bytes()
        self._secs = Secs.from_bytes(self._secs_raw)
        self._who = EnclaveIdentity(self._secs, isvfamilyid, isvextprodid)

    def __repr__(self) -> str:
        return f"SimEnclave(mrenclave={self._secs.mrenclave.hex()}, mrsigner={self._secs.mrsigner.hex()})"

    @property
    def secs(self) -> Secs:
        """A copy of the SECS: the processor's, which nobody can change after EINIT."""
        return Secs.from_bytes(self._secs_raw)

    @property
    def mrenclave(self) -> bytes:
        return self._secs.mrenclave

    @property
    def mrsigner(self) -> bytes:
        return self._secs.mrsigner

    @property
    def isvprodid(self) -> int:
        return int(self._secs.isvprodid)

    @property
    def isvsvn(self) -> int:
        return int(self._secs.isvsvn)

    @property
    def configsvn(self) -> int:
        return int(self._secs.configsvn)

    def target_info(self) -> TargetInfo:
        """TARGETINFO naming this enclave, for another enclave's EREPORT."""
        s = self._secs
        return TargetInfo(
            measurement=s.mrenclave,
            attributes=Attributes(flags=s.attributes.flags, xfrm=s.attributes.xfrm),
            configsvn=s.configsvn,
            miscselect=s.miscselect,
            configid=s.configid,
        )

    def _report_key(
        self,
        *,
        mrenclave: bytes,
        attributes: Attributes,
        miscselect: int,
        configid: bytes,
        configsvn: int,
        keyid: bytes,
    ) -> bytes:
        cfg = self.platform.config
        deps = report_dependencies(
            mrenclave=mrenclave,
            attributes=attributes,
            miscselect=miscselect,
            configid=configid,
            configsvn=configsvn,
            cpusvn=cfg.cpusvn,
            keyid=keyid,
            ownerepoch=cfg.owner_epoch,
        )
        return derive_key(self.platform.fuse_key(FuseKey.REPORT), deps)

    def _own_report_key(self, keyid: bytes) -> bytes:
        s = self._secs
        return self._report_key(
            mrenclave=s.mrenclave,
            attributes=s.attributes,
            miscselect=s.miscselect,
            configid=s.configid,
            configsvn=s.configsvn,
            keyid=keyid,
        )

    def ereport(self, target: TargetInfo, reportdata: bytes = bytes(64)) -> Report:
        """EREPORT: this enclave's identity and ``reportdata``, MACed with the target's report key."""
        if not isinstance(reportdata, (bytes, bytearray)) or len(reportdata) != 64:
            raise ReportError("EREPORT: REPORTDATA must be exactly 64 bytes")
        if not isinstance(target, TargetInfo):
            raise ReportError("EREPORT: the target must be a TARGETINFO")
        try:
            target = TargetInfo.from_bytes(target.to_bytes())
        except FormatError as e:
            raise ReportError(f"EREPORT: invalid TARGETINFO: {e}") from None
        s, who = self._secs, self._who
        body = ReportBody(
            cpusvn=self.platform.config.cpusvn,
            miscselect=s.miscselect,
            isvextprodid=who.isvextprodid,
            attributes=Attributes(flags=s.attributes.flags, xfrm=s.attributes.xfrm),
            mrenclave=s.mrenclave,
            mrsigner=s.mrsigner,
            configid=s.configid,
            isvprodid=s.isvprodid,
            isvsvn=s.isvsvn,
            configsvn=s.configsvn,
            isvfamilyid=who.isvfamilyid,
            reportdata=bytes(reportdata),
        )
        keyid = self.platform.report_keyid
        key = self._report_key(
            mrenclave=target.measurement,
            attributes=target.attributes,
            miscselect=target.miscselect,
            configid=target.configid,
            configsvn=target.configsvn,
            keyid=keyid,
        )
        return Report(body=body, keyid=keyid, mac=cmac(key, body.to_bytes()))

    def verify_report(self, report: Report) -> ReportBody:
        """Local attestation: check a REPORT targeted at this enclave (as ``sgx_verify_report`` does)."""
        if not isinstance(report, Report):
            raise ReportError("not a REPORT")
        try:
            raw = report.to_bytes()
        except FormatError as e:
            raise ReportError(f"malformed REPORT: {e}") from None
        parsed = Report.from_bytes(raw, strict=False)
        key = self._own_report_key(parsed.keyid)
        if not hmac.compare_digest(cmac(key, parsed.body.to_bytes()), parsed.mac):
            raise ReportError(
                "REPORT MAC does not verify: the report was changed, or was made for another enclave "
                "or on another platform"
            )
        return parsed.body

    def egetkey(self, request: KeyRequest) -> bytes:
        """EGETKEY: a 128-bit key, or KeyRequestError with the reason the processor would give."""
        if not isinstance(request, KeyRequest):
            raise KeyRequestError("EGETKEY needs a KEYREQUEST")
        try:
            req = KeyRequest.from_bytes(request.to_bytes(), strict=False)
        except FormatError as e:
            raise KeyRequestError(f"EGETKEY: malformed KEYREQUEST: {e}") from None
        s = self._secs
        if req.reserved1 != _ZERO_RESERVED1 or req.reserved2 != _ZERO_RESERVED2:
            raise KeyRequestError("EGETKEY: KEYREQUEST reserved fields must be zero")
        if req.keypolicy & ~_POLICY_DEFINED:
            raise KeyRequestError(f"EGETKEY: KEYPOLICY {req.keypolicy:#x} has reserved bits set")
        if req.keypolicy & _POLICY_KSS and not s.attributes.flags & AttributeFlags.KSS:
            raise KeyRequestError("EGETKEY: KEYPOLICY NOISVPRODID/CONFIGID/ISVFAMILYID/ISVEXTPRODID need KSS")
        name = req.keyname
        if name == KeyName.REPORT_KEY:
            return self._own_report_key(req.keyid)
        if name == KeyName.EINITTOKEN_KEY:
            raise KeyRequestError("EGETKEY: EINITTOKEN_KEY is only for a launch enclave")
        if name not in (KeyName.SEAL_KEY, KeyName.PROVISION_KEY, KeyName.PROVISION_SEAL_KEY):
            raise KeyRequestError(f"EGETKEY: unknown KEYNAME {name}")
        if name != KeyName.SEAL_KEY and not s.attributes.flags & AttributeFlags.PROVISIONKEY:
            raise KeyRequestError(f"EGETKEY: {KeyName(name).name} needs the PROVISIONKEY attribute")
        cfg = self.platform.config
        # The processor derives keys only for TCBs it has reached: any component above the current
        # CPUSVN is refused (SDM EGETKEY: SGX_INVALID_CPUSVN); older ones stay derivable.
        if any(r > c for r, c in zip(req.cpusvn, cfg.cpusvn, strict=True)):
            raise KeyRequestError(
                f"EGETKEY: requested CPUSVN {req.cpusvn.hex()} is above the platform's {cfg.cpusvn.hex()}"
            )
        if req.isvsvn > s.isvsvn:
            raise KeyRequestError(
                f"EGETKEY: requested ISVSVN {req.isvsvn} is above the enclave's ISVSVN {s.isvsvn}"
            )
        if req.configsvn > s.configsvn:
            raise KeyRequestError(
                f"EGETKEY: requested CONFIGSVN {req.configsvn} is above the enclave's CONFIGSVN {s.configsvn}"
            )
        # OWNEREPOCH is in the seal key, so a change of platform owner makes old sealed data unreadable;
        # the provisioning keys leave it out (SDM EGETKEY, "Key Derivation").
        epoch = cfg.owner_epoch if name == KeyName.SEAL_KEY else bytes(16)
        base = FuseKey.PROVISION if name == KeyName.PROVISION_KEY else FuseKey.SEAL
        return derive_key(self.platform.fuse_key(base), sealing_dependencies(self._who, req, epoch))
