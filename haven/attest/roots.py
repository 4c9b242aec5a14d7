"""Pinned vendor certificates, shipped as package data in ``haven/attest/roots/``.

Trust anchors (self-signed roots that evidence must chain to):

- AMD ARK (AMD Root Key), one per product line, as AMD's Key Distribution Service serves them at
  ``https://kdsintf.amd.com/vcek/v1/<Product>/cert_chain`` (AMD "Versioned Chip Endorsement Key (VCEK)
  Certificate and KDS Interface Specification", pub. 57230). The VCEK and VLEK chains of a product
  carry a byte-identical ARK.
- AWS Nitro Enclaves Root G1, as AWS publishes it in ``AWS_NitroEnclaves_Root-G1.zip`` (AWS Nitro
  Enclaves User Guide, "Verifying the root of trust").
- Intel SGX Root CA, as Intel's PCS serves it (``Intel_SGX_Provisioning_Certification_RootCA``).

AMD's intermediates are shipped too — ASK (signs VCEKs) and ASVK (signs VLEKs) per product — so that a
report can be checked with its VCEK alone. They are not anchors: a chain through them is still
verified up to the pinned ARK.

Every file is checked against the SHA-256 fingerprint of its DER encoding below when it is loaded, so a
swapped or damaged file fails loudly instead of silently re-anchoring trust. The fingerprints were
checked against independent published copies (AMD KDS chains as served to go-sev-guest and virtee/sev;
AWS's published zip, whose SHA-256 is 8cf60e2b2efca96c6a9e71e851d00c1b6991cc09eadbe64a6a1d1b1eb9faff7c;
Intel's PCS download).
"""

from __future__ import annotations

import functools
import hmac
from importlib import resources

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from haven.errors import HavenError

# AMD product lines with SEV-SNP, as KDS names them (the first word of the VCEK productName extension).
AMD_PRODUCTS = ("Milan", "Genoa", "Turin")

# SHA-256 over the DER certificate, lower-case hex.
_FINGERPRINTS = {
    # AMD ARK-Milan, 2020-10-22 .. 2045-10-22, RSA-4096, RSASSA-PSS SHA-384.
    "amd_ark_milan.pem": "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
    # AMD ARK-Genoa, 2022-01-26 .. 2047-01-26.
    "amd_ark_genoa.pem": "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
    # AMD ARK-Turin, 2023-05-15 .. 2048-05-15.
    "amd_ark_turin.pem": "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
    # AMD SEV-Milan (ASK), SEV-Genoa, SEV-Turin: issuers of VCEKs.
    "amd_ask_milan.pem": "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b",
    "amd_ask_genoa.pem": "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521",
    "amd_ask_turin.pem": "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185",
    # AMD SEV-VLEK-Milan (ASVK), SEV-VLEK-Genoa, SEV-VLEK-Turin: issuers of VLEKs.
    "amd_asvk_milan.pem": "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5",
    "amd_asvk_genoa.pem": "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372",
    "amd_asvk_turin.pem": "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c",
    # CN=aws.nitro-enclaves, 2019-10-28 .. 2049-10-28, EC P-384.
    "aws_nitro_enclaves_root_g1.pem": "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b",
    # CN=Intel SGX Root CA, 2018-05-21 .. 2049-12-31, EC P-256.
    "intel_sgx_root_ca.pem": "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3",
}


class RootStoreError(HavenError):
    """A pinned certificate shipped with Haven is missing or is not the one pinned."""


class UnknownProductError(HavenError, LookupError):
    """A product name that is not one of :data:`AMD_PRODUCTS`."""


@functools.cache
def _load(name: str) -> x509.Certificate:
    try:
        data = resources.files("haven.attest").joinpath("roots", name).read_bytes()
        cert = x509.load_pem_x509_certificate(data)
    except (OSError, ValueError) as e:
        raise RootStoreError(f"pinned certificate {name} cannot be loaded ({e})") from None
    got = cert.fingerprint(hashes.SHA256()).hex()
    if not hmac.compare_digest(got, _FINGERPRINTS[name]):
        raise RootStoreError(f"pinned certificate {name} has fingerprint {got}, not the one pinned")
    return cert


def amd_product(name: str) -> str:
    """The product line of a KDS product name: ``"Milan-B0"`` and ``"milan"`` are ``"Milan"``."""
    family = name.strip().split("-", 1)[0].capitalize()
    if family not in AMD_PRODUCTS:
        raise UnknownProductError(f"unknown AMD product {name!r} (known: {', '.join(AMD_PRODUCTS)})")
    return family


def amd_ark(product: str) -> x509.Certificate:
    """AMD's root key for ``product`` (``Milan``, ``Genoa`` or ``Turin``; a stepping suffix is ignored)."""
    return _load(f"amd_ark_{amd_product(product).lower()}.pem")


def amd_arks() -> tuple[x509.Certificate, ...]:
    return tuple(amd_ark(p) for p in AMD_PRODUCTS)


def amd_signing_ca(product: str, *, vlek: bool = False) -> x509.Certificate:
    """The ASK (issuer of VCEKs) or, with ``vlek``, the ASVK (issuer of VLEKs) of ``product``."""
    kind = "asvk" if vlek else "ask"
    return _load(f"amd_{kind}_{amd_product(product).lower()}.pem")


def amd_intermediates() -> tuple[x509.Certificate, ...]:
    return tuple(amd_signing_ca(p, vlek=v) for p in AMD_PRODUCTS for v in (False, True))


def aws_nitro_root() -> x509.Certificate:
    return _load("aws_nitro_enclaves_root_g1.pem")


def intel_sgx_root() -> x509.Certificate:
    return _load("intel_sgx_root_ca.pem")
