"""Intel DCAP quotes — SGX v3/v4, TDX v4/v5 — parsed into one view, `DcapQuote`.

Layouts, from Intel's DCAP headers and the *Intel SGX ECDSA Quote Library API* / *Intel TDX DCAP
Quoting Library API* appendices ("Quote Format")::

    v3 (sgx_quote_3.h)  header(48) ‖ sgx_report_body_t(384) ‖ u32 sig_len ‖ sgx_ql_ecdsa_sig_data_t
                        sig(64) ‖ attest_key(64) ‖ qe_report(384) ‖ qe_report_sig(64)
                        ‖ u16 auth_size ‖ auth ‖ u16 cert_type(5) ‖ u32 size ‖ PEM chain
    v4 (sgx_quote_4.h)  header(48) ‖ body (SGX 384 or TD report 1.0 584) ‖ u32 sig_len
                        ‖ sig(64) ‖ attest_key(64) ‖ u16 cert_type(6) ‖ u32 size ‖
                          [qe_report(384) ‖ qe_report_sig(64) ‖ u16 auth_size ‖ auth
                           ‖ u16 cert_type(5) ‖ u32 size ‖ PEM chain]
    v5 (sgx_quote_5.h)  header(48) ‖ u16 body_type ‖ u32 body_size ‖ body ‖ u32 sig_len ‖ (as v4)

The ISV signature covers everything before ``sig_len``. Real quotes may be followed by zero padding
(TDX quote relays pad to 8000 bytes); padding is tolerated, any non-zero byte after the signature data
is not. The parser is sans-I/O and only checks structure: every length must agree with the bytes
present, and the header fields that select a layout (version, key type, TEE type, body type and size,
QE vendor, certification data types). Report bodies are read without judging their reserved bytes:
they are signed, so the signature check speaks for them. Every failure is ``AttestationError
("malformed")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, TypeVar

from haven.attest.errors import AttestationError
from haven.errors import FormatError
from haven.structs import Struct, field_at
from haven.tee.sgx.quote import (
    ATT_KEY_TYPE_ECDSA_P256,
    CERT_TYPE_PCK_CERT_CHAIN,
    INTEL_QE_VENDOR_ID,
    MAX_QUOTE_SIZE,
    AuthDataHeader,
    CertificationDataHeader,
    EcdsaSigData,
    QuoteHeader,
)
from haven.tee.sgx.structs import ReportBody

# sgx_quote_4.h, "tee_type": the TEE that produced the report body.
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
# sgx_quote_5.h, sgx_quote5_t.type: SGX report body, TD report 1.0 (TDX 1.0), TD report 1.5 (TDX 1.5).
BODY_SGX = 1
BODY_TD10 = 2
BODY_TD15 = 3
# sgx_quote_4.h, sgx_ql_cert_key_type_t: QE_REPORT_CERT = 6, "QE report certification data".
CERT_TYPE_QE_REPORT = 6
QUOTE_VERSIONS = (3, 4, 5)

Tee = Literal["sgx", "tdx"]
_S = TypeVar("_S", bound=Struct)


@dataclass
class TdReport10(Struct):
    """`sgx_report2_body_t` (584 bytes), the TD report body of TDX 1.0 quotes (sgx_quote_4.h)."""

    SIZE: ClassVar[int] = 584
    tee_tcb_svn: bytes = field_at(0, "16s")  # [0] TDX module ISVSVN, [1] its major version
    mr_seam: bytes = field_at(16, "48s")
    mr_signer_seam: bytes = field_at(64, "48s")  # zero for Intel's TDX modules
    seam_attributes: bytes = field_at(112, "8s")
    td_attributes: bytes = field_at(120, "8s")  # bit 0: DEBUG (TUD), bit 28: SEPT_VE_DISABLE
    xfam: bytes = field_at(128, "8s")
    mr_td: bytes = field_at(136, "48s")
    mr_config_id: bytes = field_at(184, "48s")
    mr_owner: bytes = field_at(232, "48s")
    mr_owner_config: bytes = field_at(280, "48s")
    rtmr0: bytes = field_at(328, "48s")
    rtmr1: bytes = field_at(376, "48s")
    rtmr2: bytes = field_at(424, "48s")
    rtmr3: bytes = field_at(472, "48s")
    report_data: bytes = field_at(520, "64s")


@dataclass
class TdReport15(Struct):
    """`sgx_report2_body_v1_5_t` (648 bytes): TD report 1.0 ‖ tee_tcb_svn2 ‖ mr_servicetd (sgx_quote_5.h)."""

    SIZE: ClassVar[int] = 648
    base: TdReport10 = field_at(0, TdReport10)
    tee_tcb_svn2: bytes = field_at(584, "16s")
    mr_servicetd: bytes = field_at(600, "48s")


@dataclass
class BodyDescriptor(Struct):
    """sgx_quote5_t: the body's type and size, between the header and the body."""

    SIZE: ClassVar[int] = 6
    body_type: int = field_at(0, "<H")
    size: int = field_at(2, "<I")


@dataclass
class SignatureDataLength(Struct):
    """The u32 `signature_data_len` that follows the (signed) body in every version."""

    SIZE: ClassVar[int] = 4
    length: int = field_at(0, "<I")


@dataclass
class EcdsaSigDataV4(Struct):
    """`sgx_ecdsa_sig_data_v4_t` without its certification data (sgx_quote_4.h)."""

    SIZE: ClassVar[int] = 128
    sig: bytes = field_at(0, "64s")
    attest_pub_key: bytes = field_at(64, "64s")


@dataclass
class QeReportCertificationData(Struct):
    """`sgx_qe_report_certification_data_t` without its auth and certification data (sgx_quote_4.h)."""

    SIZE: ClassVar[int] = 448
    qe_report: ReportBody = field_at(0, ReportBody)
    qe_report_sig: bytes = field_at(384, "64s")


# Body type → (TEE, size, structure): the only combinations Intel defines.
_BODIES: dict[int, tuple[Tee, type[Struct]]] = {
    BODY_SGX: ("sgx", ReportBody),
    BODY_TD10: ("tdx", TdReport10),
    BODY_TD15: ("tdx", TdReport15),
}


@dataclass(frozen=True)
class DcapQuote:
    """A parsed DCAP quote: what was signed, by which key, and how that key is certified."""

    version: int
    tee: Tee
    header: QuoteHeader
    body_type: int  # BODY_SGX, BODY_TD10 or BODY_TD15 (v3/v4 imply it from the TEE type)
    body: ReportBody | TdReport10 | TdReport15
    signed_bytes: bytes  # what the ISV signature covers: everything before signature_data_len
    signature: bytes  # ECDSA-P256 by the attestation key, raw r‖s
    attest_pub_key: bytes  # raw x‖y
    qe_report: ReportBody
    qe_report_bytes: bytes  # the 384 bytes the PCK key signed
    qe_report_signature: bytes  # raw r‖s
    qe_auth_data: bytes
    pck_chain_pem: bytes  # certification data type 5: PCK leaf ‖ intermediate CA ‖ (root)
    padding: int  # zero bytes after the signature data

    @property
    def sgx_body(self) -> ReportBody:
        if not isinstance(self.body, ReportBody):
            raise AttestationError("malformed", "the quote's body is a TD report, not an SGX report")
        return self.body

    @property
    def td_report(self) -> TdReport10:
        """The TD report 1.0 fields (of a TD 1.5 body too)."""
        if isinstance(self.body, TdReport15):
            return self.body.base
        if isinstance(self.body, TdReport10):
            return self.body
        raise AttestationError("malformed", "the quote's body is an SGX report, not a TD report")

    @property
    def report_data(self) -> bytes:
        if isinstance(self.body, ReportBody):
            return self.body.reportdata
        return self.td_report.report_data


class _Reader:
    """A cursor over untrusted bytes: every read is bounds-checked, every failure is `malformed`."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.at = 0
        self.what = what

    @property
    def remaining(self) -> int:
        return len(self.data) - self.at

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise AttestationError(
                "malformed", f"{self.what}: {what} needs {n} bytes, only {self.remaining} remain"
            )
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def struct(self, cls: type[_S], what: str) -> _S:
        raw = self.take(cls.SIZE, what)
        try:
            return cls.from_bytes(raw, strict=False)
        except FormatError as e:  # pragma: no cover - sizes are checked above; kept for safety
            raise AttestationError("malformed", f"{self.what}: {what}: {e}") from None

    def end(self) -> None:
        if self.remaining:
            raise AttestationError(
                "malformed", f"{self.what}: {self.remaining} bytes left over after its last field"
            )


def _check_header(header: QuoteHeader) -> Tee:
    if header.version not in QUOTE_VERSIONS:
        raise AttestationError("malformed", f"quote version {header.version} is not 3, 4 or 5")
    if header.att_key_type != ATT_KEY_TYPE_ECDSA_P256:
        raise AttestationError(
            "malformed",
            f"attestation key type {header.att_key_type} is not {ATT_KEY_TYPE_ECDSA_P256} (ECDSA P-256)",
        )
    tee_type = header.att_key_data_0
    if header.version == 3 and tee_type != TEE_TYPE_SGX:
        raise AttestationError("malformed", f"a version 3 quote has TEE type {tee_type:#x}, not SGX (0)")
    if tee_type not in (TEE_TYPE_SGX, TEE_TYPE_TDX):
        raise AttestationError("malformed", f"TEE type {tee_type:#x} is neither SGX (0) nor TDX (0x81)")
    if header.qe_vendor_id != INTEL_QE_VENDOR_ID:
        raise AttestationError(
            "malformed", f"QE vendor ID {header.qe_vendor_id.hex()} is not Intel's quoting enclave"
        )
    return "tdx" if tee_type == TEE_TYPE_TDX else "sgx"


def _body_type(r: _Reader, version: int, tee: Tee) -> int:
    if version < 5:
        return BODY_SGX if tee == "sgx" else BODY_TD10
    desc = r.struct(BodyDescriptor, "body type and size")
    if desc.body_type not in _BODIES:
        raise AttestationError("malformed", f"quote body type {desc.body_type} is not 1, 2 or 3")
    body_tee, cls = _BODIES[desc.body_type]
    if body_tee != tee:
        raise AttestationError("malformed", f"quote body type {desc.body_type} does not fit TEE type {tee}")
    if desc.size != cls.SIZE:
        raise AttestationError(
            "malformed", f"quote body type {desc.body_type} has size {desc.size}, expected {cls.SIZE}"
        )
    return desc.body_type


def _pck_chain(r: _Reader) -> bytes:
    cert = r.struct(CertificationDataHeader, "certification data header")
    if cert.cert_key_type != CERT_TYPE_PCK_CERT_CHAIN:
        raise AttestationError(
            "malformed",
            f"certification data type {cert.cert_key_type} is not {CERT_TYPE_PCK_CERT_CHAIN} "
            "(a PCK certificate chain); other types cannot be verified without Intel's PCS",
        )
    data = r.take(cert.size, "PCK certificate chain")
    r.end()
    return data


def _auth_data(r: _Reader) -> bytes:
    size = r.struct(AuthDataHeader, "QE authentication data size").size
    return r.take(size, "QE authentication data")


def parse_quote(data: bytes) -> DcapQuote:
    """Parse an SGX (v3, v4) or TDX (v4, v5) DCAP quote from untrusted bytes."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"parse_quote needs bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_QUOTE_SIZE:
        raise AttestationError("malformed", f"quote of {len(data)} bytes exceeds {MAX_QUOTE_SIZE}")
    r = _Reader(data, "quote")
    header = r.struct(QuoteHeader, "header")
    tee = _check_header(header)
    body_type = _body_type(r, header.version, tee)
    body = r.struct(_BODIES[body_type][1], "report body")
    signed = data[: r.at]
    sig_len = r.struct(SignatureDataLength, "signature data length").length
    if sig_len > r.remaining:
        raise AttestationError(
            "malformed", f"signature data length {sig_len} exceeds the {r.remaining} bytes that follow"
        )
    sig = _Reader(r.take(sig_len, "signature data"), "signature data")
    tail = data[r.at :]
    if any(tail):
        raise AttestationError(
            "malformed", f"{len(tail)} bytes after the signature data are not zero padding"
        )
    if header.version == 3:
        ecdsa = sig.struct(EcdsaSigData, "ECDSA signature data")
        sig_bytes, key = ecdsa.sig, ecdsa.attest_pub_key
        qe_report, qe_sig = ecdsa.qe_report, ecdsa.qe_report_sig
        at = EcdsaSigData.offset_of("qe_report")
        qe_raw = sig.data[at : at + ReportBody.SIZE]
        auth = _auth_data(sig)
        chain = _pck_chain(sig)
    else:
        v4 = sig.struct(EcdsaSigDataV4, "ECDSA signature data")
        sig_bytes, key = v4.sig, v4.attest_pub_key
        outer = sig.struct(CertificationDataHeader, "certification data header")
        if outer.cert_key_type != CERT_TYPE_QE_REPORT:
            raise AttestationError(
                "malformed",
                f"certification data type {outer.cert_key_type} is not {CERT_TYPE_QE_REPORT} "
                "(QE report certification data)",
            )
        inner = _Reader(sig.take(outer.size, "QE report certification data"), "QE report certification data")
        sig.end()
        qe = inner.struct(QeReportCertificationData, "QE report")
        qe_report, qe_sig = qe.qe_report, qe.qe_report_sig
        qe_raw = inner.data[: ReportBody.SIZE]
        auth = _auth_data(inner)
        chain = _pck_chain(inner)
    return DcapQuote(
        version=header.version,
        tee=tee,
        header=header,
        body_type=body_type,
        body=body,  # type: ignore[arg-type]
        signed_bytes=signed,
        signature=sig_bytes,
        attest_pub_key=key,
        qe_report=qe_report,
        qe_report_bytes=qe_raw,
        qe_report_signature=qe_sig,
        qe_auth_data=auth,
        pck_chain_pem=chain,
        padding=len(tail),
    )
