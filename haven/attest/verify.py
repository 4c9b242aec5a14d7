"""One entry point for every kind of evidence: detect the TEE, verify with the right verifier.

Detection looks only at the first bytes (sans-I/O, no parsing beyond them):
- a DCAP quote starts with the 48-byte quote header (Intel's `sgx_quote_header_t`, LAYOUTS §1):
  version 3, 4 or 5, attestation key type 2 (ECDSA-256 with P-256), and a TEE type of 0 (SGX) or
  0x81 (TDX) — version 3 headers carry 0 there;
- an SEV-SNP ATTESTATION_REPORT is exactly 1184 bytes and starts with its version, 2 to 5, as a u32
  (AMD SEV-SNP ABI spec 56860, Table 23); its second u16 is therefore 0, never a DCAP key type;
- an AWS Nitro attestation document is a COSE_Sign1 (RFC 9052 §4.2): a CBOR array of four (0x84),
  or the same behind tag 18 (0xD2).

Roots: by default each verifier uses its pinned vendor roots (Intel SGX Root CA, AMD ARKs, AWS Nitro
root). ``roots`` replaces them for every verifier. The Haven Simulation Root CA is never among the
defaults; a policy trusts it only by name, with its certificate or fingerprint (:func:`resolve_roots`).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from haven.attest.chain import load_certificates
from haven.attest.encoding import decode_evidence
from haven.attest.errors import AttestationError
from haven.attest.policy import (
    SIMULATION_ROOT,
    VENDOR_ROOTS,
    Policy,
    PolicyError,
    RootSpec,
    is_simulation_root,
)
from haven.attest.result import Tee, VerifiedEvidence
from haven.errors import HavenError
from haven.structs import Struct, field_at
from haven.tee.sgx.quote import QuoteHeader

if TYPE_CHECKING:
    from haven.attest.dcap.collateral import Collateral

DCAP_VERSIONS = (3, 4, 5)
ATT_KEY_ECDSA_P256 = 2  # sgx_attestation_algorithm_id_t: SGX_QL_ALG_ECDSA_P256
TEE_TYPE_SGX, TEE_TYPE_TDX = 0x00000000, 0x00000081  # sgx_quote_4.h, tee_type
SNP_REPORT_SIZE = 0x4A0  # 56860 Table 23
SNP_VERSIONS = range(2, 6)
COSE_ARRAY_OF_FOUR, CBOR_TAG_COSE_SIGN1 = 0x84, 0xD2  # RFC 8949 major type 4 / tag 18 (RFC 9052)


class VerifyUsageError(HavenError):
    """The inputs given do not fit the evidence (collateral for an SNP report, no VCEK, ...)."""


@dataclass
class _SnpVersion(Struct):
    """The first field of ATTESTATION_REPORT (56860 Table 23): VERSION, u32."""

    SIZE: ClassVar[int] = 4
    version: int = field_at(0, "<I")


def detect_tee(evidence: bytes) -> Tee:
    """Which TEE produced ``evidence`` (raw bytes), from its header alone."""
    if len(evidence) >= QuoteHeader.SIZE:
        header = QuoteHeader.from_bytes(evidence[: QuoteHeader.SIZE])
        if header.version in DCAP_VERSIONS and header.att_key_type == ATT_KEY_ECDSA_P256:
            if header.att_key_data_0 == TEE_TYPE_SGX:
                return "sgx"
            if header.att_key_data_0 == TEE_TYPE_TDX and header.version >= 4:
                return "tdx"
            raise AttestationError(
                "malformed", f"DCAP quote v{header.version} with unknown TEE type 0x{header.att_key_data_0:x}"
            )
    if (
        len(evidence) == SNP_REPORT_SIZE
        and _SnpVersion.from_bytes(evidence[: _SnpVersion.SIZE]).version in SNP_VERSIONS
    ):
        return "snp"
    if evidence[:1] in (bytes([COSE_ARRAY_OF_FOUR]), bytes([CBOR_TAG_COSE_SIGN1])):
        return "nitro"
    raise AttestationError(
        "malformed",
        f"{len(evidence)} bytes that are neither a DCAP quote (v3-v5, ECDSA P-256), an SEV-SNP report "
        "(1184 bytes, v2-v5) nor a Nitro attestation document (COSE_Sign1)",
    )


def _refuse(given: bool, what: str, tee: Tee) -> None:
    if given:
        raise VerifyUsageError(f"{what} does not apply to {tee} evidence")


def verify_evidence(
    evidence: bytes,
    *,
    collateral: Collateral | None = None,
    vek: bytes | None = None,
    chain: bytes | None = None,
    crls: Sequence[bytes] = (),
    roots: Sequence[x509.Certificate] | None = None,
    now: datetime.datetime | None = None,
) -> VerifiedEvidence:
    """Verify ``evidence`` (raw, hex or base64) with the verifier of its TEE.

    DCAP quotes need ``collateral``; SNP reports need ``vek`` (the VCEK or VLEK certificate) and take
    ``chain`` (ASK/ASVK then ARK) and ``crls``; Nitro documents carry their chain. An input that does
    not apply to the evidence is refused rather than ignored, so a mistake does not go unnoticed.
    """
    raw = decode_evidence(evidence)
    tee = detect_tee(raw)
    if roots is not None and not roots:
        raise VerifyUsageError("an empty set of trusted roots trusts nothing")
    if tee in ("sgx", "tdx"):
        from haven.attest.dcap.verify import verify_dcap

        _refuse(vek is not None, "a VCEK/VLEK certificate (--vek)", tee)
        _refuse(chain is not None, "a certificate chain (--chain)", tee)
        _refuse(bool(crls), "CRLs (--crl; DCAP collateral carries its own)", tee)
        if collateral is None:
            raise VerifyUsageError(
                f"{tee} quotes are verified against collateral: "
                "give --collateral (dcap-qvl JSON or a PCS directory)"
            )
        return verify_dcap(raw, collateral, roots=roots, now=now)
    _refuse(collateral is not None, "DCAP collateral (--collateral)", tee)
    if tee == "snp":
        from haven.attest.snp import verify_snp

        if vek is None:
            raise VerifyUsageError(
                "SEV-SNP reports are verified with their VCEK or VLEK certificate: give --vek"
            )
        return verify_snp(raw, vcek=vek, chain=chain, crls=crls, roots=roots, now=now)
    from haven.attest.nitro import verify_nitro

    _refuse(vek is not None, "a VCEK/VLEK certificate (--vek)", tee)
    _refuse(chain is not None, "a certificate chain (--chain; Nitro documents carry their cabundle)", tee)
    _refuse(bool(crls), "CRLs (--crl)", tee)
    return verify_nitro(raw, roots=roots, now=now)


# -- trusted roots -------------------------------------------------------------------------------------


def fingerprint(cert: x509.Certificate) -> bytes:
    """SHA-256 of the certificate's DER encoding, the fingerprint a policy pins."""
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()


def _vendor_roots(name: str) -> list[x509.Certificate]:
    from haven.attest import roots

    if name == "intel-sgx":
        return [roots.intel_sgx_root()]
    if name == "aws-nitro":
        return [roots.aws_nitro_root()]
    products = ("Milan", "Genoa", "Turin") if name == "amd" else (name.removeprefix("amd-").capitalize(),)
    return [roots.amd_ark(p) for p in products]


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def _check_name(spec: RootSpec, cert: x509.Certificate) -> None:
    """The simulation root only under its own name, and that name only for a simulation root."""
    simulated = is_simulation_root(_subject(cert))
    if simulated and spec.name != SIMULATION_ROOT:
        raise PolicyError(
            f"policy {spec.where}: {_subject(cert)} is a Haven simulation root; trust it only as "
            f'{{"name": "{SIMULATION_ROOT}", ...}}'
        )
    if spec.name == SIMULATION_ROOT and not simulated:
        raise PolicyError(f"policy {spec.where}: {_subject(cert)} is not a Haven simulation root")


def _load_file(spec: RootSpec) -> list[x509.Certificate]:
    assert spec.path is not None
    try:
        data = spec.path.read_bytes()
    except OSError as e:
        why = f"cannot read {spec.path} ({e.strerror})"
        raise PolicyError(f"policy {spec.where}.certificate: {why}") from None
    try:
        certs = load_certificates(data, str(spec.path))
    except AttestationError as e:
        raise PolicyError(f"policy {spec.where}.certificate: {e}") from None
    for cert in certs:
        _check_name(spec, cert)
    return certs


def resolve_roots(policy: Policy, given: Sequence[x509.Certificate] = ()) -> list[x509.Certificate] | None:
    """The roots to verify with: ``given`` (the CLI's ``--root``) and the policy's ``trusted_roots``.

    - Neither: None, each verifier's pinned vendor roots (never the simulation root).
    - Only ``given``: exactly those (naming a root on the command line is trusting it).
    - Only the policy: its vendor roots and certificate files; fingerprints need the certificate
      given, so they resolve to nothing here.
    - Both: ``given``, each of which the policy must trust (as a vendor root, a certificate file or a
      fingerprint), else the evidence cannot chain to a trusted root (kind ``chain``).
    """
    if policy.trusted_roots is None:
        return list(given) or None
    trusted: list[x509.Certificate] = []
    pinned: list[tuple[RootSpec, bytes]] = []
    for spec in policy.trusted_roots:
        if spec.name in VENDOR_ROOTS:  # the policy parser allows these names only as plain strings
            trusted += _vendor_roots(spec.name)
        elif spec.path is not None:
            trusted += _load_file(spec)
        elif spec.sha256 is not None:
            pinned.append((spec, spec.sha256))
    if not given:
        if not trusted:
            raise PolicyError(
                "policy $.trusted_roots: only fingerprints, and no root given with --root to match them"
            )
        return trusted
    files = [fingerprint(c) for c in trusted]
    for cert in given:
        digest = fingerprint(cert)
        match = next((s for s, pin in pinned if hmac.compare_digest(pin, digest)), None)
        if match is not None:
            _check_name(match, cert)
        elif not any(hmac.compare_digest(f, digest) for f in files):
            raise AttestationError(
                "chain",
                f"root {_subject(cert)} (SHA-256 {digest.hex()}) is not among the policy's trusted roots",
            )
    return list(given)
