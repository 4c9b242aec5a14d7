"""The simulated platform's certificate authorities and certificates, shaped like Intel's PCK PKI.

Intel's *SGX PCK Certificate and Certificate Revocation List Profile Specification* describes a
root CA, a PCK Platform (or Processor) CA under it, PCK certificates under that CA carrying the SGX
extension (OID 1.2.840.113741.1.13.1), and a TCB Signing certificate under the root that signs TCB Info
and QE Identity. The simulation mirrors it with Haven names:

    Haven Simulation Root CA ─┬─ Haven Simulation Platform CA ── Haven Simulation PCK Certificate
                              └─ Haven Simulation TCB Signing

Every key is derived from the platform's fused secret, and certificates are signed with
deterministic ECDSA (RFC 6979), so the same platform file yields byte-identical certificates on every
run and the file needs to hold nothing more. The PCK key is also bound to the platform's TCB (CPUSVN
and PCESVN), as Intel's PCE derives a PCK per TCB level: a TCB change gives a new PCK key and cert.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from haven.tee.sim import asn1

# The certificates' names are shared with verifiers, which must recognise simulated evidence.
from haven.tee.simulation import (
    ORGANIZATION,
    PCK_NAME,
    PLATFORM_CA_NAME,
    ROOT_CA_NAME,
    TCB_SIGNING_NAME,
)

if TYPE_CHECKING:
    from haven.tee.sim.platform import PlatformConfig, SimPlatform

# PCK Certificate and CRL Profile Spec, "SGX Extensions" (also dcap-qvl src/oids.rs).
SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
_PPID = SGX_EXTENSION_OID + ".1"
_TCB = SGX_EXTENSION_OID + ".2"  # .2.1-.2.16 component SVNs, .2.17 PCESVN, .2.18 CPUSVN
_PCESVN = _TCB + ".17"
_CPUSVN = _TCB + ".18"
_PCEID = SGX_EXTENSION_OID + ".3"
_FMSPC = SGX_EXTENSION_OID + ".4"
_SGX_TYPE = SGX_EXTENSION_OID + ".5"
SGX_TYPE_STANDARD = 0  # Profile Spec: SGX Type ENUMERATED { Standard (0), Scalable (1), ... }


# Labels for `SimPlatform.derive_secret`: one per key or identifier, never reused for another purpose.
LABEL_ROOT_CA = "haven/sim/pki/root-ca"
LABEL_PLATFORM_CA = "haven/sim/pki/platform-ca"
LABEL_TCB_SIGNING = "haven/sim/pki/tcb-signing"
LABEL_PCK = "haven/sim/pki/pck"
LABEL_PPID = "haven/sim/pki/ppid"

# Intel's root is valid until the end of 2049 and its PCK certificates for 7 years (see the real
# chains in the test vectors); certificates start a little before the platform was created so a
# verifier whose clock lags slightly still accepts them.
CA_NOT_AFTER = datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
LEAF_LIFETIME = datetime.timedelta(days=7 * 365)
BACKDATE = datetime.timedelta(hours=1)

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # SEC 2, secp256r1 n


def derive_ec_key(platform: SimPlatform, label: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 key from the platform secret: 48 derived bytes reduced into [1, n-1] (FIPS 186-5 A.2.1)."""
    secret = int.from_bytes(platform.derive_secret(label, 48), "big")
    return ec.derive_private_key(secret % (_P256_ORDER - 1) + 1, ec.SECP256R1())


def _serial(platform: SimPlatform, label: str) -> int:
    # RFC 5280 4.1.2.2: positive, at most 20 octets. 127 bits keeps it positive and unpredictable.
    return (int.from_bytes(platform.derive_secret(label + "/serial", 16), "big") >> 1) | 1


def pck_label(config: PlatformConfig) -> str:
    """The PCK key's label: per TCB, as the PCE derives a PCK key for each CPUSVN and PCESVN."""
    return f"{LABEL_PCK}/{config.cpusvn.hex()}/{config.pcesvn}"


def pck_extension_der(
    *,
    ppid: bytes,
    components: tuple[int, ...],
    pcesvn: int,
    cpusvn: bytes,
    pce_id: bytes,
    fmspc: bytes,
    sgx_type: int = SGX_TYPE_STANDARD,
) -> bytes:
    """The SGX extension's value: SEQUENCE OF SEQUENCE { OID, value } (Profile Spec, "SGX Extensions")."""
    if len(ppid) != 16 or len(cpusvn) != 16 or len(pce_id) != 2 or len(fmspc) != 6 or len(components) != 16:
        raise ValueError("PPID and CPUSVN take 16 bytes, PCE-ID 2, FMSPC 6, and the TCB 16 components")
    tcb = [
        asn1.sequence(asn1.object_identifier(f"{_TCB}.{i + 1}"), asn1.integer(svn))
        for i, svn in enumerate(components)
    ]
    tcb.append(asn1.sequence(asn1.object_identifier(_PCESVN), asn1.integer(pcesvn)))
    tcb.append(asn1.sequence(asn1.object_identifier(_CPUSVN), asn1.octet_string(cpusvn)))
    return asn1.sequence(
        asn1.sequence(asn1.object_identifier(_PPID), asn1.octet_string(ppid)),
        asn1.sequence(asn1.object_identifier(_TCB), asn1.sequence(*tcb)),
        asn1.sequence(asn1.object_identifier(_PCEID), asn1.octet_string(pce_id)),
        asn1.sequence(asn1.object_identifier(_FMSPC), asn1.octet_string(fmspc)),
        asn1.sequence(asn1.object_identifier(_SGX_TYPE), asn1.enumerated(sgx_type)),
    )


def pce_id_bytes(pce_id: int) -> bytes:
    """PCE-ID as Intel's PCS and PCK certificates carry it: the u16 in little-endian order."""
    return pce_id.to_bytes(2, "little")


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        ]
    )


_CA_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
# Intel's PCK and TCB Signing certificates: digitalSignature and nonRepudiation (contentCommitment).
_SIGNER_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=True,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True)
class _Issuer:
    name: x509.Name
    key: ec.EllipticCurvePrivateKey


def _certificate(
    *,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: _Issuer | None,
    serial: int,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    path_length: int | None,
    extra: x509.ExtensionType | None = None,
) -> x509.Certificate:
    """An X.509 v3 certificate as webpki wants it; ``path_length`` None means an end-entity certificate."""
    signer = issuer or _Issuer(subject, key)
    is_ca = path_length is not None
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer.name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.key.public_key()), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_CA_USAGE if is_ca else _SIGNER_USAGE, critical=True)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_length), critical=True)
    )
    if extra is not None:
        builder = builder.add_extension(extra, critical=False)
    return builder.sign(signer.key, hashes.SHA256(), ecdsa_deterministic=True)


@dataclass(frozen=True)
class SimPki:
    """The platform's keys and certificates (derived, never stored)."""

    root_key: ec.EllipticCurvePrivateKey
    root_cert: x509.Certificate
    platform_ca_key: ec.EllipticCurvePrivateKey
    platform_ca_cert: x509.Certificate
    tcb_signing_key: ec.EllipticCurvePrivateKey
    tcb_signing_cert: x509.Certificate
    pck_key: ec.EllipticCurvePrivateKey
    pck_cert: x509.Certificate
    ppid: bytes

    def root_der(self) -> bytes:
        return self.root_cert.public_bytes(serialization.Encoding.DER)

    def pck_chain_pem(self) -> bytes:
        """PCK ‖ Platform CA ‖ Root CA, as certification data type 5 carries it."""
        return _pem(self.pck_cert, self.platform_ca_cert, self.root_cert)

    def tcb_signing_chain_pem(self) -> bytes:
        """TCB Signing ‖ Root CA: the issuer chain of TCB Info and QE Identity."""
        return _pem(self.tcb_signing_cert, self.root_cert)

    def platform_ca_chain_pem(self) -> bytes:
        """Platform CA ‖ Root CA: the issuer chain of the PCK CRL."""
        return _pem(self.platform_ca_cert, self.root_cert)


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _start(platform: SimPlatform) -> datetime.datetime:
    return platform.created.astimezone(datetime.UTC).replace(microsecond=0) - BACKDATE


def _root(platform: SimPlatform) -> tuple[_Issuer, x509.Certificate]:
    root_key = derive_ec_key(platform, LABEL_ROOT_CA)
    root = _Issuer(_name(ROOT_CA_NAME), root_key)
    cert = _certificate(
        subject=root.name,
        key=root_key,
        issuer=None,
        serial=_serial(platform, LABEL_ROOT_CA),
        not_before=_start(platform),
        not_after=CA_NOT_AFTER,
        path_length=1,
    )
    return root, cert


def root_ca_certificate(platform: SimPlatform) -> x509.Certificate:
    """The platform's *Haven Simulation Root CA*: the trust anchor a verifier must be given explicitly."""
    return _root(platform)[1]


def platform_pki(platform: SimPlatform) -> SimPki:
    """Derive the platform's CAs, TCB signing certificate and PCK certificate."""
    config = platform.config
    start = _start(platform)
    root, root_cert = _root(platform)
    root_key = root.key
    ca_key = derive_ec_key(platform, LABEL_PLATFORM_CA)
    ca = _Issuer(_name(PLATFORM_CA_NAME), ca_key)
    ca_cert = _certificate(
        subject=ca.name,
        key=ca_key,
        issuer=root,
        serial=_serial(platform, LABEL_PLATFORM_CA),
        not_before=start,
        not_after=CA_NOT_AFTER,
        path_length=0,
    )
    tcb_key = derive_ec_key(platform, LABEL_TCB_SIGNING)
    tcb_cert = _certificate(
        subject=_name(TCB_SIGNING_NAME),
        key=tcb_key,
        issuer=root,
        serial=_serial(platform, LABEL_TCB_SIGNING),
        not_before=start,
        not_after=start + LEAF_LIFETIME,
        path_length=None,
    )
    ppid = platform.derive_secret(LABEL_PPID, 16)
    extension = pck_extension_der(
        ppid=ppid,
        components=tuple(config.tcb_components),
        pcesvn=config.pcesvn,
        cpusvn=config.cpusvn,
        pce_id=pce_id_bytes(config.pce_id),
        fmspc=config.fmspc,
    )
    label = pck_label(config)
    pck_key = derive_ec_key(platform, label)
    pck_cert = _certificate(
        subject=_name(PCK_NAME),
        key=pck_key,
        issuer=ca,
        serial=_serial(platform, label),
        not_before=start,
        not_after=start + LEAF_LIFETIME,
        path_length=None,
        extra=x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSION_OID), extension),
    )
    return SimPki(
        root_key=root_key,
        root_cert=root_cert,
        platform_ca_key=ca_key,
        platform_ca_cert=ca_cert,
        tcb_signing_key=tcb_key,
        tcb_signing_cert=tcb_cert,
        pck_key=pck_key,
        pck_cert=pck_cert,
        ppid=ppid,
    )
