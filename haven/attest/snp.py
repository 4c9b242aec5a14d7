"""AMD SEV-SNP attestation reports: a strict parser and verification up to AMD's pinned roots.

Sources: "SEV Secure Nested Paging Firmware ABI Specification" (AMD pub. 56860; its ATTESTATION_REPORT,
TCB_VERSION, Guest Policy and ECDSA signature tables), and "Versioned Chip Endorsement Key (VCEK)
Certificate and KDS Interface Specification" (AMD pub. 57230; the VCEK/VLEK X.509 extensions).
Offsets are cross-checked in ``LAYOUTS.md`` §6 of the test vectors.

A report is signed (ECDSA P-384, SHA-384, over bytes 0x000..0x29F) by the chip's VCEK, or by a VLEK that
AMD issued to a cloud provider. The VCEK is certified by the product's ASK, a VLEK by its ASVK, and both
of those by the product's ARK, which is pinned. The VCEK also carries the TCB it was issued for and the
chip's ID: the report's REPORTED_TCB and CHIP_ID must match them.

Order of checks: parse (``malformed``), certificate chain (``chain`` and friends: it does not depend on
the report), report signature (``signature``), then what the now-authenticated report says against the
certificate (``collateral-mismatch``, ``tcb-no-match``). Any change to a signed byte therefore fails
either the parser or the signature, never a later check.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from haven.attest import roots as pinned
from haven.attest.chain import load_certificates, load_crl, utcnow, verify_chain
from haven.attest.encoding import decode_evidence
from haven.attest.errors import AttestationError
from haven.attest.result import VerifiedEvidence
from haven.errors import FormatError
from haven.structs import Struct, field_at

REPORT_SIZE = 0x4A0  # ABI spec, ATTESTATION_REPORT: 1184 bytes
SIGNED_SIZE = 0x2A0  # the signature covers every byte before the SIGNATURE field
SUPPORTED_VERSIONS = range(2, 6)  # 2 (Milan-era), 3 (+CPUID), 4, 5 (+mitigation vectors)
SIG_ALGO_ECDSA_P384_SHA384 = 1  # ABI spec, "Signature Algorithms" table

# Guest Policy (ABI spec, "Guest Policy Structure"): bits 0-7 ABI minor, 8-15 ABI major, then flags.
POLICY_FLAGS = {
    "smt": 16,
    "migrate_ma": 18,
    "debug": 19,
    "single_socket": 20,
    "cxl_allow": 21,
    "mem_aes_256_xts": 22,
    "rapl_dis": 23,
    "ciphertext_hiding": 24,
    "page_swap_disable": 25,
}
_POLICY_MBO = 1 << 17  # bit 17 is reserved and must be one
_POLICY_MBZ = ~((1 << 26) - 1) & ((1 << 64) - 1)  # bits 26-63 are reserved, must be zero

# SIGNING_KEY (bits 4:2 of the word at 0x48); 2-6 are reserved.
SIGNING_KEY_VCEK, SIGNING_KEY_VLEK, SIGNING_KEY_NONE = 0, 1, 7
_SIGNER_INFO_MBZ = ~0x1F & 0xFFFFFFFF  # bits 31:5 reserved
_MASK_CHIP_KEY = 1 << 1
_AUTHOR_KEY_EN = 1 << 0

# VMPL of the requester, 0-3; all ones when the hypervisor requested the report (SNP_HV_REPORT_REQ,
# ABI spec ATTESTATION_REPORT "VMPL"). The hypervisor then chose REPORT_DATA: such a report parses, but
# never verifies as the guest's evidence.
_VMPL_HOST = 0xFFFFFFFF

# CPUID Fn0000_0001_EAX family and model (extended + base, as report v3+ carries them) of the models
# that define each product line; other models of a line are not cross-checked.
_CPUID_PRODUCTS = {(0x19, 0x01): "Milan", (0x19, 0x11): "Genoa", (0x1A, 0x02): "Turin"}

# VCEK/VLEK extensions (KDS spec, "VCEK Certificate Extensions" table), under 1.3.6.1.4.1.3704.1.
_OID = "1.3.6.1.4.1.3704.1."
OID_PRODUCT_NAME = _OID + "2"
OID_HWID = _OID + "4"
_OID_SPL = {
    "bootloader": _OID + "3.1",
    "tee": _OID + "3.2",
    "snp": _OID + "3.3",
    "spl4": _OID + "3.4",
    "spl5": _OID + "3.5",
    "spl6": _OID + "3.6",
    "spl7": _OID + "3.7",
    "microcode": _OID + "3.8",
    "fmc": _OID + "3.9",
}

# TCB_VERSION byte order (ABI spec, "TCB_VERSION Structure"): Milan and Genoa put the bootloader in
# byte 0 and SNP in byte 6; Turin adds the FMC in byte 0 and packs the rest below it. splN are reserved.
_TCB_LAYOUT = {
    "Milan": ("bootloader", "tee", "spl4", "spl5", "spl6", "spl7", "snp", "microcode"),
    "Genoa": ("bootloader", "tee", "spl4", "spl5", "spl6", "spl7", "snp", "microcode"),
    "Turin": ("fmc", "bootloader", "tee", "snp", "spl5", "spl6", "spl7", "microcode"),
}
# KDS spec: Turin VCEKs carry the first 8 bytes of CHIP_ID as hwID; earlier products all 64.
_HWID_SIZE = {"Milan": 64, "Genoa": 64, "Turin": 8}


@dataclass
class EcdsaP384Signature(Struct):
    """ABI spec, "ECDSA Signature Format": R and S as 72-byte little-endian integers."""

    SIZE: ClassVar[int] = 0x200
    r: bytes = field_at(0x00, "72s")
    s: bytes = field_at(0x48, "72s")
    reserved: bytes = field_at(0x90, "368s", reserved=True)


@dataclass
class AttestationReport(Struct):
    """ABI spec, ATTESTATION_REPORT. TCB_VERSION fields stay raw: their byte order depends on the product."""

    SIZE: ClassVar[int] = REPORT_SIZE
    version: int = field_at(0x000, "<I")
    guest_svn: int = field_at(0x004, "<I")
    policy: int = field_at(0x008, "<Q")
    family_id: bytes = field_at(0x010, "16s")
    image_id: bytes = field_at(0x020, "16s")
    vmpl: int = field_at(0x030, "<I")
    signature_algo: int = field_at(0x034, "<I")
    current_tcb: bytes = field_at(0x038, "8s")
    platform_info: int = field_at(0x040, "<Q")
    signer_info: int = field_at(0x048, "<I")  # AUTHOR_KEY_EN, MASK_CHIP_KEY, SIGNING_KEY
    reserved0: bytes = field_at(0x04C, "4s", reserved=True)
    report_data: bytes = field_at(0x050, "64s")
    measurement: bytes = field_at(0x090, "48s")
    host_data: bytes = field_at(0x0C0, "32s")
    id_key_digest: bytes = field_at(0x0E0, "48s")
    author_key_digest: bytes = field_at(0x110, "48s")
    report_id: bytes = field_at(0x140, "32s")
    report_id_ma: bytes = field_at(0x160, "32s")
    reported_tcb: bytes = field_at(0x180, "8s")
    cpuid_fam_id: int = field_at(0x188, "<B")  # version 3 and later; zero before
    cpuid_mod_id: int = field_at(0x189, "<B")
    cpuid_step: int = field_at(0x18A, "<B")
    reserved1: bytes = field_at(0x18B, "21s", reserved=True)
    chip_id: bytes = field_at(0x1A0, "64s")
    committed_tcb: bytes = field_at(0x1E0, "8s")
    current_build: int = field_at(0x1E8, "<B")
    current_minor: int = field_at(0x1E9, "<B")
    current_major: int = field_at(0x1EA, "<B")
    reserved2: bytes = field_at(0x1EB, "1s", reserved=True)
    committed_build: int = field_at(0x1EC, "<B")
    committed_minor: int = field_at(0x1ED, "<B")
    committed_major: int = field_at(0x1EE, "<B")
    reserved3: bytes = field_at(0x1EF, "1s", reserved=True)
    launch_tcb: bytes = field_at(0x1F0, "8s")
    launch_mit_vector: int = field_at(0x1F8, "<Q")  # version 5 and later; zero before
    current_mit_vector: int = field_at(0x200, "<Q")
    reserved4: bytes = field_at(0x208, "152s", reserved=True)
    signature: EcdsaP384Signature = field_at(SIGNED_SIZE, EcdsaP384Signature)

    @property
    def signing_key(self) -> int:
        return (self.signer_info >> 2) & 0x7

    @property
    def mask_chip_key(self) -> bool:
        return bool(self.signer_info & _MASK_CHIP_KEY)

    @property
    def author_key_en(self) -> bool:
        return bool(self.signer_info & _AUTHOR_KEY_EN)

    @property
    def debug(self) -> bool:
        return bool(self.policy >> POLICY_FLAGS["debug"] & 1)

    def policy_claims(self) -> dict[str, Any]:
        flags = {name: bool(self.policy >> bit & 1) for name, bit in POLICY_FLAGS.items()}
        abi = {"abi_major": self.policy >> 8 & 0xFF, "abi_minor": self.policy & 0xFF}
        return {"value": self.policy, **abi, **flags}


def _malformed(message: str) -> AttestationError:
    return AttestationError("malformed", f"SEV-SNP report: {message}")


def parse_snp_report(data: bytes) -> AttestationReport:
    """Parse a report (raw, hex or base64), refusing any field the ABI spec does not allow."""
    return _parse_raw(decode_evidence(data))


def _parse_raw(raw: bytes) -> AttestationReport:
    if len(raw) != REPORT_SIZE:
        raise _malformed(f"{len(raw)} bytes, expected {REPORT_SIZE}")
    try:
        report = AttestationReport.from_bytes(raw)
    except FormatError as e:
        raise _malformed(str(e)) from None
    if report.version not in SUPPORTED_VERSIONS:
        raise _malformed(f"version {report.version} is not supported (2 to 5)")
    if not report.policy & _POLICY_MBO:
        raise _malformed("policy bit 17 is reserved and must be 1")
    if report.policy & _POLICY_MBZ:
        raise _malformed(f"policy {report.policy:#x} sets reserved bits 26-63")
    if report.vmpl > 3 and report.vmpl != _VMPL_HOST:
        raise _malformed(f"vmpl {report.vmpl} is not 0 to 3")
    if report.signature_algo != SIG_ALGO_ECDSA_P384_SHA384:
        raise _malformed(f"signature_algo {report.signature_algo} is not ECDSA P-384 with SHA-384 (1)")
    if report.signer_info & _SIGNER_INFO_MBZ:
        raise _malformed(f"signer_info {report.signer_info:#x} sets reserved bits 5-31")
    if report.signing_key not in (SIGNING_KEY_VCEK, SIGNING_KEY_VLEK, SIGNING_KEY_NONE):
        raise _malformed(f"signer_info: signing key {report.signing_key} is reserved")
    if report.version < 3 and (report.cpuid_fam_id or report.cpuid_mod_id or report.cpuid_step):
        raise _malformed(f"cpuid fields are reserved in version {report.version} and must be zero")
    if report.version < 5 and (report.launch_mit_vector or report.current_mit_vector):
        raise _malformed(f"mit_vector fields are reserved in version {report.version} and must be zero")
    return report


def decode_tcb(tcb: bytes, product: str) -> dict[str, int]:
    """A TCB_VERSION as security patch levels by name, in ``product``'s byte order (reserved ones omitted)."""
    names = _TCB_LAYOUT[pinned.amd_product(product)]
    return {name: value for name, value in zip(names, tcb, strict=True) if not name.startswith("spl")}


# ---- the VCEK / VLEK certificate ------------------------------------------------------------------


def _der_integer(value: bytes, what: str) -> int:
    # X.690 8.3: INTEGER, short-form length; an SPL is one octet, 0-255 (two octets when >= 128, the
    # first of them zero: DER's minimal two's complement, X.690 8.3.2).
    if len(value) not in (3, 4) or value[0] != 0x02 or value[1] != len(value) - 2:
        raise AttestationError("malformed", f"{what} is not a small DER INTEGER")
    if len(value) == 4 and (value[2] != 0 or value[3] < 0x80):
        raise AttestationError("malformed", f"{what} is not a minimal DER INTEGER")
    n = int.from_bytes(value[2:], "big", signed=True)
    if not 0 <= n <= 0xFF:
        raise AttestationError("malformed", f"{what} is {n}, not 0 to 255")
    return n


def _der_ia5(value: bytes, what: str) -> str:
    # X.690 8.23: IA5String (tag 0x16), short-form length.
    if len(value) < 2 or value[0] != 0x16 or value[1] != len(value) - 2 or value[1] >= 0x80:
        raise AttestationError("malformed", f"{what} is not a DER IA5String")
    try:
        return value[2:].decode("ascii")
    except UnicodeDecodeError:
        raise AttestationError("malformed", f"{what} is not ASCII") from None


def _extension(cert: x509.Certificate, oid: str) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid))
    except x509.ExtensionNotFound:
        return None
    except ValueError as e:  # duplicate or undecodable extensions
        raise AttestationError("malformed", f"VCEK extensions: {e}") from None
    value = ext.value
    return value.value if isinstance(value, x509.UnrecognizedExtension) else None


def _common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def certificate_product(cert: x509.Certificate) -> str | None:
    """The product line a VCEK/VLEK names in its productName extension (``"Milan-B0"`` → ``"Milan"``)."""
    raw = _extension(cert, OID_PRODUCT_NAME)
    if raw is None:
        return None
    name = _der_ia5(raw, "VCEK productName")
    try:
        return pinned.amd_product(name)
    except pinned.UnknownProductError:
        raise AttestationError("malformed", f"VCEK productName {name!r} is not a known product") from None


def certificate_tcb(cert: x509.Certificate, product: str) -> bytes:
    """The 8-byte TCB_VERSION a VCEK/VLEK was issued for, composed from its SPL extensions."""
    layout = _TCB_LAYOUT[pinned.amd_product(product)]
    out = bytearray()
    for name in layout:
        raw = _extension(cert, _OID_SPL[name])
        if raw is None:
            if not name.startswith("spl"):
                raise AttestationError("malformed", f"the {product} VCEK has no {name} SPL extension")
            out.append(0)
        else:
            out.append(_der_integer(raw, f"VCEK {name} SPL"))
    return bytes(out)


# ---- verification -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Signer:
    leaf: x509.Certificate
    vlek: bool
    pool: list[x509.Certificate]


def _load_signer(vcek: bytes, chain: bytes | None) -> _Signer:
    certs = load_certificates(vcek, "VCEK")
    leaf = certs[0]
    cn = _common_name(leaf.subject)
    if cn not in ("SEV-VCEK", "SEV-VLEK"):
        raise AttestationError("chain", f"the signing certificate is {cn!r}, not an AMD VCEK or VLEK")
    pool = certs[1:]
    if chain is not None:
        pool += load_certificates(chain, "AMD certificate chain")
    else:
        pool += pinned.amd_intermediates()
    return _Signer(leaf, cn == "SEV-VLEK", pool)


def _path(leaf: x509.Certificate, pool: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """Leaf first, then each issuer found in ``pool`` by name (the chain may come in any order)."""
    path = [leaf]
    while path[-1].issuer != path[-1].subject and len(path) <= len(pool):
        issuer = next((c for c in pool if c.subject == path[-1].issuer and c not in path), None)
        if issuer is None:
            break
        path.append(issuer)
    return path


def _choose_product(signer: _Signer, product: str | None) -> str | None:
    named = certificate_product(signer.leaf)
    if product is not None:
        try:
            wanted = pinned.amd_product(product)
        except pinned.UnknownProductError as e:
            raise AttestationError("malformed", str(e)) from None
        if named is not None and named != wanted:
            raise AttestationError("chain", f"the VCEK is for {named}, not {wanted}")
        return wanted
    return named


def _check_signature(report: AttestationReport, raw: bytes, leaf: x509.Certificate) -> None:
    if report.signing_key == SIGNING_KEY_NONE:
        raise AttestationError("signature", "SEV-SNP report: the report is not signed (signing key: none)")
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise AttestationError("signature", "SEV-SNP report: the VCEK's key is not ECDSA P-384")
    r = int.from_bytes(report.signature.r, "little")
    s = int.from_bytes(report.signature.s, "little")
    try:
        key.verify(encode_dss_signature(r, s), raw[:SIGNED_SIZE], ec.ECDSA(hashes.SHA384()))
    except (InvalidSignature, ValueError):
        raise AttestationError("signature", "SEV-SNP report: the signature does not verify") from None


def _check_against_certificate(report: AttestationReport, signer: _Signer, product: str) -> None:
    if report.vmpl == _VMPL_HOST:
        msg = "SEV-SNP report: requested by the hypervisor (VMPL 0xFFFFFFFF), which chose its REPORT_DATA"
        raise AttestationError("policy", msg)
    if report.signing_key != (SIGNING_KEY_VLEK if signer.vlek else SIGNING_KEY_VCEK):
        said = "VLEK" if report.signing_key == SIGNING_KEY_VLEK else "VCEK"
        given = "VLEK" if signer.vlek else "VCEK"
        raise AttestationError("collateral-mismatch", f"the report was signed by a {said}, not a {given}")
    if report.version >= 3:
        named = _CPUID_PRODUCTS.get((report.cpuid_fam_id, report.cpuid_mod_id))
        if named is not None and named != product:
            msg = f"the report comes from a {named} CPU, not {product}"
            raise AttestationError("collateral-mismatch", msg)
    expected = certificate_tcb(signer.leaf, product)
    if report.reported_tcb != expected:
        got, want = decode_tcb(report.reported_tcb, product), decode_tcb(expected, product)
        raise AttestationError("tcb-no-match", f"reported TCB {got} is not the VCEK's TCB {want}")
    if signer.vlek:
        return  # a VLEK is issued to a cloud provider, not to one chip: it has no hwID
    hwid = _extension(signer.leaf, OID_HWID)
    if hwid is None or len(hwid) != _HWID_SIZE[product]:
        raise AttestationError("malformed", f"the {product} VCEK has no {_HWID_SIZE[product]}-byte hwID")
    masked = report.mask_chip_key or not any(report.chip_id)  # MASK_CHIP_KEY / MASK_CHIP_ID: zeros
    if not masked and report.chip_id[: len(hwid)] != hwid:
        raise AttestationError("collateral-mismatch", "the report's CHIP_ID is not the VCEK's hwID")


def verify_snp(
    report: bytes,
    *,
    vcek: bytes,
    chain: bytes | None = None,
    crls: Sequence[bytes] = (),
    roots: Sequence[x509.Certificate] | None = None,
    product: str | None = None,
    now: datetime.datetime | None = None,
) -> VerifiedEvidence:
    """Verify an SEV-SNP report at ``now`` (default: the current time).

    ``vcek`` is the VCEK or VLEK certificate (PEM or DER; a PEM may go on with its ASK/ASVK and ARK).
    ``chain`` is AMD's ``cert_chain`` (ASK or ASVK, then ARK); without it the shipped intermediates
    are used. ``crls`` are DER or PEM CRLs (AMD's is signed by the ARK). ``roots`` replaces the pinned
    ARKs. ``product`` (``Milan``, ``Genoa``, ``Turin``) is otherwise read from the VCEK.
    A debug guest verifies, with ``debug=True``: refusing it is the appraisal policy's decision.
    """
    now = utcnow() if now is None else now
    if now.tzinfo is None:
        raise ValueError("verify_snp needs a timezone-aware time")
    raw = decode_evidence(report)
    parsed = _parse_raw(raw)
    signer = _load_signer(vcek, chain)
    chosen = _choose_product(signer, product)
    anchors = tuple(roots) if roots is not None else _default_roots(chosen)
    loaded = [load_crl(c, f"CRL {i + 1}") for i, c in enumerate(crls)]
    verified = verify_chain(_path(signer.leaf, signer.pool), anchors, now=now, crls=loaded, what="VCEK chain")
    _check_issuer_kind(verified.certificates, signer.vlek)
    if chosen is None:
        chosen = _product_of_root(verified.root)
    _check_signature(parsed, raw, signer.leaf)
    _check_against_certificate(parsed, signer, chosen)
    subjects = {c.subject for c in verified.certificates}
    used = [crl for crl in loaded if crl.issuer in subjects]
    valid_from = max([verified.not_before, *(c.last_update_utc for c in used)])
    valid_until = min([verified.not_after, *(c.next_update_utc for c in used if c.next_update_utc)])
    return VerifiedEvidence(
        tee="snp",
        tcb_status="UpToDate",
        advisory_ids=(),
        measurements={"measurement": parsed.measurement.hex()},
        report_data=parsed.report_data,
        debug=parsed.debug,
        valid_from=valid_from,
        valid_until=valid_until,
        root=verified.root.subject.rfc4514_string(),
        claims=_claims(parsed, chosen, signer.vlek),
    )


def _default_roots(product: str | None) -> tuple[x509.Certificate, ...]:
    return (pinned.amd_ark(product),) if product else pinned.amd_arks()


def _check_issuer_kind(path: Sequence[x509.Certificate], vlek: bool) -> None:
    # KDS spec: VLEKs are issued by the ASVK ("SEV-VLEK-<Product>"), VCEKs by the ASK ("SEV-<Product>").
    if len(path) < 2:
        return
    issuer = _common_name(path[1].subject)
    if issuer.startswith("SEV-VLEK-") != vlek:
        leaf = "VLEK" if vlek else "VCEK"
        raise AttestationError("chain", f"a {leaf} must not be issued by {issuer!r}")


def _product_of_root(root: x509.Certificate) -> str:
    cn = _common_name(root.subject)
    try:
        return pinned.amd_product(cn.removeprefix("ARK-"))
    except pinned.UnknownProductError:
        raise AttestationError("malformed", f"cannot tell the product of {cn!r}: pass product=") from None


def _claims(report: AttestationReport, product: str, vlek: bool) -> dict[str, Any]:
    claims = {
        "version": report.version,
        "product": product,
        "signing_key": "vlek" if vlek else "vcek",
        "guest_svn": report.guest_svn,
        "policy": report.policy_claims(),
        "vmpl": report.vmpl,
        "measurement": report.measurement.hex(),
        "host_data": report.host_data.hex(),
        "report_data": report.report_data.hex(),
        "family_id": report.family_id.hex(),
        "image_id": report.image_id.hex(),
        "id_key_digest": report.id_key_digest.hex(),
        "author_key_digest": report.author_key_digest.hex(),
        "author_key_en": report.author_key_en,
        "mask_chip_key": report.mask_chip_key,
        "report_id": report.report_id.hex(),
        "report_id_ma": report.report_id_ma.hex(),
        "chip_id": report.chip_id.hex(),
        "platform_info": report.platform_info,
        "reported_tcb": decode_tcb(report.reported_tcb, product),
        "current_tcb": decode_tcb(report.current_tcb, product),
        "committed_tcb": decode_tcb(report.committed_tcb, product),
        "launch_tcb": decode_tcb(report.launch_tcb, product),
        "current_firmware": f"{report.current_major}.{report.current_minor}.{report.current_build}",
        "committed_firmware": f"{report.committed_major}.{report.committed_minor}.{report.committed_build}",
    }
    if report.version >= 3:
        cpuid = (report.cpuid_fam_id, report.cpuid_mod_id, report.cpuid_step)
        claims["cpuid"] = dict(zip(("family", "model", "stepping"), cpuid, strict=True))
    if report.version >= 5:
        claims["launch_mit_vector"] = report.launch_mit_vector
        claims["current_mit_vector"] = report.current_mit_vector
    return claims
