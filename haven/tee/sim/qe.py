"""The simulated quoting enclave (QE): local attestation in, a DCAP quote version 3 out.

As Intel's ECDSA quoting enclave (QE3) does, it
1. checks the application's REPORT by local attestation — the REPORT must be MACed for the QE
   (EREPORT with the QE's TARGETINFO), which proves it came from an enclave on this platform;
2. signs header ‖ report body with its attestation key (ECDSA-P256);
3. attaches its own REPORT, whose REPORTDATA binds the attestation key, signed by the platform's PCK
   key (Intel's PCE does this at QE start-up), and the PCK certificate chain (certification data 5).

The QE is a real simulated enclave: a small fixed image signed with the platform's QE signing key,
ISVPRODID 1, production (no DEBUG), with PROVISIONKEY like Intel's QE. Its own REPORT and the PCK
signature over it depend only on the attestation key and are made once, so each quote costs one
REPORT MAC check and one ECDSA signature.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from haven.errors import FormatError, QuoteError, ReportError
from haven.tee.sgx.image import EnclaveImage, PageRun, enclave_size_for, pad_to_pages
from haven.tee.sgx.quote import (
    ATT_KEY_TYPE_ECDSA_P256,
    CERT_TYPE_PCK_CERT_CHAIN,
    INTEL_QE_VENDOR_ID,
    QUOTE_VERSION_3,
    EcdsaSigData,
    Quote3,
    QuoteHeader,
    QuoteV3,
    attest_key_bytes,
    ecdsa_der_to_raw,
    encode_quote_v3,
    qe_report_data,
)
from haven.tee.sgx.sigstruct import sign_enclave
from haven.tee.sgx.structs import (
    PAGE_SIZE,
    XFRM_LEGACY,
    AttributeFlags,
    Attributes,
    PageType,
    Report,
    ReportBody,
    Secinfo,
    SecinfoFlags,
    Sigstruct,
    TargetInfo,
    Tcs,
)
from haven.tee.sim.pki import SimPki, derive_ec_key, platform_pki

if TYPE_CHECKING:
    from haven.tee.sim.cpu import SimEnclave
    from haven.tee.sim.platform import SimPlatform

QE_ISVPRODID = 1  # Intel's QE Identity: "isvprodid": 1
QE_MISCSELECT = 0
QE_MISCSELECT_MASK = 0xFFFFFFFF
# The QE's SIGSTRUCT: 64-bit, PROVISIONKEY (it is certified by the provisioning infrastructure),
# never DEBUG; the mask pins every flag but INIT (which EINIT sets) and the legacy XFRM.
QE_ATTRIBUTES = Attributes(flags=AttributeFlags.MODE64BIT | AttributeFlags.PROVISIONKEY, xfrm=XFRM_LEGACY)
QE_ATTRIBUTE_MASK = Attributes(flags=0xFFFF_FFFF_FFFF_FFFF & ~AttributeFlags.INIT, xfrm=0xFFFF_FFFF_FFFF_FFFF)
# What QE Identity tells verifiers to expect, exactly as Intel's: flags INIT|PROVISIONKEY under a mask
# that ignores MODE64BIT (0xFB), XFRM not compared ("attributes": "1100…", "attributesMask": "FBFF…FF00…").
QE_IDENTITY_ATTRIBUTES = Attributes(flags=AttributeFlags.INIT | AttributeFlags.PROVISIONKEY, xfrm=0)
QE_IDENTITY_ATTRIBUTES_MASK = Attributes(flags=0xFFFF_FFFF_FFFF_FFFB, xfrm=0)

# Intel's QE3 sends 32 bytes 00 01 .. 1F as QE authentication data (see the real quotes).
QE_AUTH_DATA = bytes(range(32))
QE_PAYLOAD = b"Haven simulated quoting enclave\0"

LABEL_ATTESTATION_KEY = "haven/sim/qe/attestation-key"
LABEL_QE_ID = "haven/sim/qe/id"

# Where the quote's variable parts sit (sgx_quote3_t, sgx_ql_ecdsa_sig_data_t).
_BODY_AT = Quote3.offset_of("report_body")
_BODY_END = _BODY_AT + ReportBody.SIZE
_SIG_AT = Quote3.SIZE + EcdsaSigData.offset_of("sig")

# The image: code page, TCS, one SSA frame. Fixed, so MRENCLAVE is the same on every platform.
_CODE_AT, _TCS_AT, _SSA_AT = 0, PAGE_SIZE, 2 * PAGE_SIZE


def qe_image() -> EnclaveImage:
    """The quoting enclave's pages (a fixed payload; the simulation runs no enclave code)."""
    tcs = Tcs(ossa=_SSA_AT, nssa=1, oentry=_CODE_AT)
    runs = (
        PageRun(
            _CODE_AT,
            pad_to_pages(QE_PAYLOAD),
            Secinfo.for_page(PageType.PT_REG, SecinfoFlags.R | SecinfoFlags.X),
            name="code",
        ),
        PageRun(_TCS_AT, tcs.to_bytes(), Secinfo.for_page(PageType.PT_TCS), name="tcs"),
        PageRun(
            _SSA_AT,
            bytes(PAGE_SIZE),
            Secinfo.for_page(PageType.PT_REG, SecinfoFlags.R | SecinfoFlags.W),
            name="ssa",
        ),
    )
    return EnclaveImage(size=enclave_size_for(_SSA_AT + PAGE_SIZE), ssaframesize=1, runs=runs)


def qe_sigstruct(platform: SimPlatform, image: EnclaveImage | None = None) -> Sigstruct:
    """The QE's SIGSTRUCT, signed with the platform's QE signing key (its MRSIGNER is in QE Identity)."""
    return sign_enclave(
        platform.qe_signing_key(),
        enclavehash=(image or qe_image()).mrenclave(),
        attributes=QE_ATTRIBUTES,
        attributemask=QE_ATTRIBUTE_MASK,
        miscselect=QE_MISCSELECT,
        miscmask=QE_MISCSELECT_MASK,
        isvprodid=QE_ISVPRODID,
        isvsvn=platform.config.qe_isvsvn,
        date=platform.created.date(),
    )


class QuotingEnclave:
    """`QuotingEnclave(platform)`: `.target_info()` for the application's EREPORT, `.quote(report)`."""

    def __init__(self, platform: SimPlatform, *, pki: SimPki | None = None) -> None:
        self.platform = platform
        self.pki = pki or platform_pki(platform)
        image = qe_image()
        self.enclave: SimEnclave = platform.load_enclave(image, qe_sigstruct(platform, image))
        self._attestation_key = derive_ec_key(platform, LABEL_ATTESTATION_KEY)
        self.attestation_public_key = attest_key_bytes(self._attestation_key.public_key())
        # The QE's REPORT for the PCE; only its body travels in the quote, so the target is immaterial.
        report = self.enclave.ereport(TargetInfo(), qe_report_data(self.attestation_public_key, QE_AUTH_DATA))
        self.qe_report_body: ReportBody = report.body
        self.qe_report_signature = ecdsa_der_to_raw(
            self.pki.pck_key.sign(report.body.to_bytes(), ec.ECDSA(hashes.SHA256()))
        )
        self.header = QuoteHeader(
            version=QUOTE_VERSION_3,
            att_key_type=ATT_KEY_TYPE_ECDSA_P256,
            att_key_data_0=0,
            qe_svn=self.enclave.secs.isvsvn,
            pce_svn=platform.config.pcesvn,
            qe_vendor_id=INTEL_QE_VENDOR_ID,
            # sgx_quote_3.h: user_data[0:16] is the QE ID, the platform's identifier for this QE.
            user_data=platform.derive_secret(LABEL_QE_ID, 16) + bytes(4),
        )
        # Everything but the report body and the ISV signature is the same in every quote: lay it out
        # once with encode_quote_v3 and splice the two in at the offsets of Intel's layout.
        self._template = encode_quote_v3(
            QuoteV3(
                header=self.header,
                report_body=ReportBody(),
                signature=bytes(64),
                attest_pub_key=self.attestation_public_key,
                qe_report_body=self.qe_report_body,
                qe_report_signature=self.qe_report_signature,
                qe_auth_data=QE_AUTH_DATA,
                certification_data_type=CERT_TYPE_PCK_CERT_CHAIN,
                certification_data=self.pki.pck_chain_pem(),
            )
        )

    def target_info(self) -> TargetInfo:
        return self.enclave.target_info()

    def quote(self, report: Report) -> bytes:
        """Check ``report`` by local attestation and return a signed DCAP quote v3 for its body."""
        if not isinstance(report, Report):
            raise QuoteError(f"the quoting enclave takes a REPORT, not {type(report).__name__}")
        try:
            body = self.enclave.verify_report(report)
        except (ReportError, FormatError) as e:
            raise QuoteError(f"REPORT refused by local attestation: {e}") from None
        t = self._template
        signed = t[:_BODY_AT] + body.to_bytes()
        signature = ecdsa_der_to_raw(self._attestation_key.sign(signed, ec.ECDSA(hashes.SHA256())))
        return signed + t[_BODY_END:_SIG_AT] + signature + t[_SIG_AT + len(signature) :]
