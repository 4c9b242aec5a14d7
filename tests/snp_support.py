"""An AMD-shaped test PKI and report builder: ARK, ASK and ASVK (RSA-PSS), VCEKs and VLEKs (P-384)
with the KDS extensions, and SEV-SNP reports signed by them, for products and versions no real vector
covers."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any, ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from haven.attest.snp import SIGNED_SIZE, AttestationReport, EcdsaP384Signature
from haven.tee.sim import asn1

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
NOW = T0 + dt.timedelta(days=30)
PSS = padding.PSS(padding.MGF1(hashes.SHA384()), 48)  # as AMD signs: RSASSA-PSS, SHA-384, salt 48
OID = "1.3.6.1.4.1.3704.1."


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str, key, issuer: x509.Certificate | None, issuer_key) -> x509.Certificate:
    usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.subject if issuer else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0)
        .not_valid_after(T0 + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(usage, True)
        .sign(issuer_key or key, hashes.SHA384(), rsa_padding=PSS)
    )


class AmdPki:
    _cache: ClassVar[dict[str, tuple[Any, ...]]] = {}

    def __init__(self, product: str) -> None:
        if product not in self._cache:
            ark_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            ark = _ca(f"ARK-{product}", ark_key, None, None)
            ask_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            asvk_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            ask = _ca(f"SEV-{product}", ask_key, ark, ark_key)
            asvk = _ca(f"SEV-VLEK-{product}", asvk_key, ark, ark_key)
            self._cache[product] = (ark_key, ark, ask_key, ask, asvk_key, asvk)
        self.product = product
        self.ark_key, self.ark, self.ask_key, self.ask, self.asvk_key, self.asvk = self._cache[product]

    def chain(self, vlek: bool = False) -> bytes:
        signing_ca: x509.Certificate = self.asvk if vlek else self.ask
        root: x509.Certificate = self.ark
        return signing_ca.public_bytes(Encoding.PEM) + root.public_bytes(Encoding.PEM)

    def leaf(
        self,
        spl: dict[str, int],
        *,
        vlek: bool = False,
        hwid: bytes | None = None,
        product_name: str | None = "",
        key=None,
        issuer_vlek: bool | None = None,
    ):
        key = key or ec.generate_private_key(ec.SECP384R1())
        issuer_vlek = vlek if issuer_vlek is None else issuer_vlek
        issuer, issuer_key = (self.asvk, self.asvk_key) if issuer_vlek else (self.ask, self.ask_key)
        b = (
            x509.CertificateBuilder()
            .subject_name(_name("SEV-VLEK" if vlek else "SEV-VCEK"))
            .issuer_name(issuer.subject)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(T0)
            .not_valid_after(T0 + dt.timedelta(days=365))
        )
        name = self.product if product_name == "" else product_name
        if name is not None:
            b = b.add_extension(
                x509.UnrecognizedExtension(x509.ObjectIdentifier(OID + "2"), _ia5(name)), False
            )
        numbers = {"bootloader": 1, "tee": 2, "snp": 3, "spl4": 4, "spl5": 5, "spl6": 6, "spl7": 7}
        numbers |= {"microcode": 8, "fmc": 9}
        for field, value in spl.items():
            ext = x509.UnrecognizedExtension(
                x509.ObjectIdentifier(f"{OID}3.{numbers[field]}"), asn1.integer(value)
            )
            b = b.add_extension(ext, False)
        if hwid is not None:
            b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(OID + "4"), hwid), False)
        cert = b.sign(issuer_key, hashes.SHA384(), rsa_padding=PSS)
        return cert.public_bytes(Encoding.DER), key


def _ia5(text: str) -> bytes:
    return bytes([0x16, len(text)]) + text.encode("ascii")


GENOA_SPL = {"bootloader": 7, "tee": 0, "snp": 14, "microcode": 72}
GENOA_TCB = bytes([7, 0, 0, 0, 0, 0, 14, 72])  # bootloader, tee, 4 reserved, snp, microcode
TURIN_SPL = {"fmc": 1, "bootloader": 2, "tee": 3, "snp": 4, "microcode": 0xD1}
TURIN_TCB = bytes([1, 2, 3, 4, 0, 0, 0, 0xD1])  # fmc, bootloader, tee, snp, 3 reserved, microcode
CHIP = bytes(range(1, 65))


def make_report(
    key, *, version=3, tcb=GENOA_TCB, chip_id=CHIP, signer_info=0, policy=0x30000, **fields
) -> bytes:
    fields.setdefault("cpuid_fam_id", 0x19 if version >= 3 else 0)
    fields.setdefault("cpuid_mod_id", 0x11 if version >= 3 else 0)
    report = AttestationReport(
        version=version,
        policy=policy,
        signature_algo=1,
        current_tcb=tcb,
        reported_tcb=tcb,
        committed_tcb=tcb,
        launch_tcb=tcb,
        chip_id=chip_id,
        signer_info=signer_info,
        measurement=os.urandom(48),
        report_data=b"nonce".ljust(64, b"\0"),
        **fields,
    )
    r, s = decode_dss_signature(key.sign(report.to_bytes()[:SIGNED_SIZE], ec.ECDSA(hashes.SHA384())))
    signature = EcdsaP384Signature(r=r.to_bytes(72, "little"), s=s.to_bytes(72, "little"))
    return report.replace(signature=signature).to_bytes()
