"""DCAP collateral: TCB Info, QE Identity, their issuer chains, and the PCK and Root CA CRLs.

Two forms are read, both as Intel's PCS serves the pieces:

- dcap-qvl's ``QuoteCollateralV3`` JSON: ``tcb_info`` and ``qe_identity`` hold the signed JSON text,
  ``*_signature``, ``pck_crl`` and ``root_ca_crl`` are hex, ``*_issuer_chain`` are PEM;
- a directory of the PCS's raw responses, under these names (the first that exists is used):

  ==========================  ================================================================
  TCB Info                    ``tcbInfo.json``, ``sample_tcbInfo_response``
                              (``{"tcbInfo": {…}, "signature": "<hex>"}``)
  QE Identity                 ``qeIdentity.json``, ``sample_qeIdentity_response``
                              (``{"enclaveIdentity": {…}, "signature": "<hex>"}``)
  TCB Info issuer chain       ``tcbInfoIssuerChain.pem``
  QE Identity issuer chain    ``qeIdentityIssuerChain.pem``
  PCK CRL issuer chain        ``pckCrlIssuerChain.pem``
  PCK CRL                     ``pckcrl.der``, ``pckcrl`` (DER or PEM)
  Root CA CRL                 ``rootcrl.der`` (DER or PEM)
  ==========================  ================================================================

  Issuer chains are PEM, or PEM URL-encoded as the PCS sends them in its ``*-Issuer-Chain`` headers.

TCB Info and QE Identity are signed over the exact bytes of their JSON object as served. From a PCS
body those bytes are located in the raw text — the span of the ``tcbInfo`` / ``enclaveIdentity``
value — and never re-serialised, so a pretty-printed copy fails its signature as it must.

A `Collateral` is parsed once and reused for any number of quotes; its ``digest`` (SHA-256 over every
raw piece) keys the verifier's caches. Parsing checks form only; signatures, chains, CRLs and validity
windows are checked by `haven.attest.dcap.verify`.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from haven.attest.chain import load_certificates, load_crl
from haven.attest.dcap.cache import Lru
from haven.attest.dcap.documents import (
    EnclaveIdentity,
    TcbInfo,
    loads_strict,
    parse_enclave_identity,
    parse_tcb_info,
)
from haven.attest.errors import AttestationError
from haven.fileio import read_bounded

# Names in a PCS directory, in order of preference (the second ones are go-tdx-guest's test data).
TCB_INFO_FILES = ("tcbInfo.json", "sample_tcbInfo_response")
QE_IDENTITY_FILES = ("qeIdentity.json", "sample_qeIdentity_response")
TCB_INFO_CHAIN_FILES = ("tcbInfoIssuerChain.pem",)
QE_IDENTITY_CHAIN_FILES = ("qeIdentityIssuerChain.pem",)
PCK_CRL_CHAIN_FILES = ("pckCrlIssuerChain.pem",)
PCK_CRL_FILES = ("pckcrl.der", "pckcrl")
ROOT_CRL_FILES = ("rootcrl.der",)
# dcap-qvl QuoteCollateralV3 fields.
JSON_FIELDS = (
    "pck_crl_issuer_chain",
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "tcb_info",
    "tcb_info_signature",
    "qe_identity_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
)
# Larger than any real piece (Intel's processor-CA CRL is the largest, some hundred KiB).
MAX_FILE = 8 << 20
# PCS API: the documents' signatures are ECDSA-P256 r‖s, 64 bytes, hex-encoded.
SIGNATURE_SIZE = 64


def _bad(message: str) -> AttestationError:
    return AttestationError("malformed", f"collateral: {message}")


class _MalformedCollateral(AttestationError):
    """A collateral file that cannot be read (the error class `read_bounded` raises)."""

    def __init__(self, message: str) -> None:
        super().__init__("malformed", f"collateral: {message}")


@dataclass(frozen=True, eq=False)
class Collateral:
    """Parsed collateral, reusable across quotes; ``digest`` identifies its exact content."""

    tcb_info: TcbInfo
    tcb_info_bytes: bytes  # the exact signed JSON text
    tcb_info_signature: bytes  # raw r‖s
    tcb_info_issuer_chain: tuple[x509.Certificate, ...]
    qe_identity: EnclaveIdentity
    qe_identity_bytes: bytes
    qe_identity_signature: bytes
    qe_identity_issuer_chain: tuple[x509.Certificate, ...]
    pck_crl_issuer_chain: tuple[x509.Certificate, ...]
    pck_crl: x509.CertificateRevocationList
    root_ca_crl: x509.CertificateRevocationList
    crls_digest: bytes  # SHA-256 over the two CRLs: keys cached chain checks that used them
    digest: bytes  # SHA-256 over every piece


def _signature(value: bytes | str, what: str) -> bytes:
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value)
        except ValueError:
            raise _bad(f"{what} is not hex") from None
    if len(value) != SIGNATURE_SIZE:
        raise _bad(f"{what} has {len(value)} bytes, expected {SIGNATURE_SIZE} (ECDSA-P256 r‖s)")
    return value


def _chain(data: bytes, what: str) -> tuple[x509.Certificate, ...]:
    text = data.strip()
    if not text.startswith(b"-----BEGIN CERTIFICATE-----") and b"%" in text:
        # The PCS sends issuer chains URL-encoded in HTTP headers; accept them as saved.
        text = urllib.parse.unquote_to_bytes(text)
    if b"-----BEGIN CERTIFICATE-----" not in text:
        raise _bad(f"{what} is not a PEM certificate chain")
    try:
        return tuple(load_certificates(text, f"collateral {what}"))
    except x509.InvalidVersion as e:  # not a ValueError: load_certificates lets it through
        raise _bad(f"{what}: not a certificate ({e})") from None


def _document(text: bytes, what: str) -> str:
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(f"{what} is not UTF-8") from None
    if decoded.startswith("\ufeff"):
        raise _bad(f"{what} starts with a byte-order mark")
    return decoded


# Parsed collateral by digest: a `Collateral` is immutable, so equal content can share one.
_PARSED: Lru[bytes, Collateral] = Lru(64)


def collateral_from_parts(
    *,
    tcb_info: bytes,
    tcb_info_signature: bytes | str,
    tcb_info_issuer_chain: bytes,
    qe_identity: bytes,
    qe_identity_signature: bytes | str,
    qe_identity_issuer_chain: bytes,
    pck_crl_issuer_chain: bytes,
    pck_crl: bytes,
    root_ca_crl: bytes,
) -> Collateral:
    """Build a `Collateral` from raw pieces: ``tcb_info`` and ``qe_identity`` are the signed JSON bytes."""
    tcb_sig = _signature(tcb_info_signature, "TCB Info signature")
    qe_sig = _signature(qe_identity_signature, "QE Identity signature")
    crls = hashlib.sha256(len(root_ca_crl).to_bytes(8, "big") + root_ca_crl + pck_crl).digest()
    h = hashlib.sha256()
    for part in (
        tcb_info,
        tcb_sig,
        tcb_info_issuer_chain,
        qe_identity,
        qe_sig,
        qe_identity_issuer_chain,
        pck_crl_issuer_chain,
        crls,
    ):
        h.update(len(part).to_bytes(8, "big") + part)
    digest = h.digest()
    cached = _PARSED.get(digest)
    if cached is not None:
        return cached
    tcb_text = _document(tcb_info, "TCB Info")
    qe_text = _document(qe_identity, "QE Identity")
    collateral = Collateral(
        tcb_info=parse_tcb_info(loads_strict(tcb_text, "TCB Info")),
        tcb_info_bytes=tcb_info,
        tcb_info_signature=tcb_sig,
        tcb_info_issuer_chain=_chain(tcb_info_issuer_chain, "TCB Info issuer chain"),
        qe_identity=parse_enclave_identity(loads_strict(qe_text, "QE Identity")),
        qe_identity_bytes=qe_identity,
        qe_identity_signature=qe_sig,
        qe_identity_issuer_chain=_chain(qe_identity_issuer_chain, "QE Identity issuer chain"),
        pck_crl_issuer_chain=_chain(pck_crl_issuer_chain, "PCK CRL issuer chain"),
        pck_crl=load_crl(pck_crl, "collateral PCK CRL"),
        root_ca_crl=load_crl(root_ca_crl, "collateral Root CA CRL"),
        crls_digest=crls,
        digest=digest,
    )
    _PARSED.put(digest, collateral)
    return collateral


def parse_collateral_json(text: str | bytes) -> Collateral:
    """dcap-qvl's ``QuoteCollateralV3`` JSON (unknown extra fields are ignored)."""
    if isinstance(text, bytes):
        text = _document(text, "collateral JSON")
    doc = loads_strict(text, "collateral JSON")
    if not isinstance(doc, dict):
        raise _bad("the JSON is not an object")
    values: dict[str, str] = {}
    for name in JSON_FIELDS:
        value = doc.get(name)
        if not isinstance(value, str):
            raise _bad(f"field {name!r} is missing or not a string")
        values[name] = value

    def unhex(name: str) -> bytes:
        try:
            return bytes.fromhex(values[name])
        except ValueError:
            raise _bad(f"field {name!r} is not hex") from None

    return collateral_from_parts(
        tcb_info=values["tcb_info"].encode("utf-8"),
        tcb_info_signature=values["tcb_info_signature"],
        tcb_info_issuer_chain=values["tcb_info_issuer_chain"].encode("utf-8"),
        qe_identity=values["qe_identity"].encode("utf-8"),
        qe_identity_signature=values["qe_identity_signature"],
        qe_identity_issuer_chain=values["qe_identity_issuer_chain"].encode("utf-8"),
        pck_crl_issuer_chain=values["pck_crl_issuer_chain"].encode("utf-8"),
        pck_crl=unhex("pck_crl"),
        root_ca_crl=unhex("root_ca_crl"),
    )


def to_dcap_qvl_json(collateral: Collateral) -> str:
    """The collateral as dcap-qvl's ``QuoteCollateralV3`` JSON (chains re-encoded as canonical PEM)."""

    def pem(chain: tuple[x509.Certificate, ...]) -> str:
        return b"".join(c.public_bytes(Encoding.PEM) for c in chain).decode("ascii")

    return json.dumps(
        {
            "pck_crl_issuer_chain": pem(collateral.pck_crl_issuer_chain),
            "root_ca_crl": collateral.root_ca_crl.public_bytes(Encoding.DER).hex(),
            "pck_crl": collateral.pck_crl.public_bytes(Encoding.DER).hex(),
            "tcb_info_issuer_chain": pem(collateral.tcb_info_issuer_chain),
            "tcb_info": collateral.tcb_info_bytes.decode("utf-8"),
            "tcb_info_signature": collateral.tcb_info_signature.hex(),
            "qe_identity_issuer_chain": pem(collateral.qe_identity_issuer_chain),
            "qe_identity": collateral.qe_identity_bytes.decode("utf-8"),
            "qe_identity_signature": collateral.qe_identity_signature.hex(),
        },
        indent=2,
    )


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def split_signed_body(body: bytes, key: str, what: str) -> tuple[bytes, str]:
    """From a PCS body ``{"<key>": {…}, "signature": "<hex>"}``: the exact bytes of the inner object
    as served, and the signature hex. Found by scanning the raw text, never by re-serialising."""
    text = _document(body, what)
    decoder = json.JSONDecoder()
    members: dict[str, tuple[int, int, Any]] = {}
    i = _skip_ws(text, 0)
    if not text.startswith("{", i):
        raise _bad(f"{what} is not a JSON object")
    i = _skip_ws(text, i + 1)
    try:
        while not text.startswith("}", i):
            name, i = decoder.raw_decode(text, i)
            if not isinstance(name, str):
                raise ValueError("object key is not a string")
            i = _skip_ws(text, i)
            if not text.startswith(":", i):
                raise ValueError("':' expected")
            start = _skip_ws(text, i + 1)
            value, end = decoder.raw_decode(text, start)
            if name in members:
                raise ValueError(f"duplicate key {name!r}")
            members[name] = (start, end, value)
            i = _skip_ws(text, end)
            if text.startswith(",", i):
                i = _skip_ws(text, i + 1)
            elif not text.startswith("}", i):
                raise ValueError("',' or '}' expected")
    except (ValueError, RecursionError) as e:
        raise _bad(f"{what} is not valid JSON ({e})") from None
    if _skip_ws(text, i + 1) != len(text):
        raise _bad(f"{what} has bytes after its JSON object")
    if key not in members or "signature" not in members:
        raise _bad(f"{what} lacks {key!r} or 'signature'")
    start, end, value = members[key]
    signature = members["signature"][2]
    if not isinstance(value, dict) or not isinstance(signature, str):
        raise _bad(f"{what}: {key!r} must be an object and 'signature' a string")
    return text[start:end].encode("utf-8"), signature


def _read(directory: Path, names: tuple[str, ...], what: str) -> bytes:
    for name in names:
        path = directory / name
        if path.is_file():
            return read_bounded(path, MAX_FILE, error=_MalformedCollateral)
    raise _bad(f"{what} not found in {directory} (looked for {', '.join(names)})")


def load_pcs_directory(directory: Path) -> Collateral:
    """Collateral from a directory of PCS responses (file names in this module's docstring)."""
    tcb_info, tcb_sig = split_signed_body(_read(directory, TCB_INFO_FILES, "TCB Info"), "tcbInfo", "TCB Info")
    qe, qe_sig = split_signed_body(
        _read(directory, QE_IDENTITY_FILES, "QE Identity"), "enclaveIdentity", "QE Identity"
    )
    return collateral_from_parts(
        tcb_info=tcb_info,
        tcb_info_signature=tcb_sig,
        tcb_info_issuer_chain=_read(directory, TCB_INFO_CHAIN_FILES, "TCB Info issuer chain"),
        qe_identity=qe,
        qe_identity_signature=qe_sig,
        qe_identity_issuer_chain=_read(directory, QE_IDENTITY_CHAIN_FILES, "QE Identity issuer chain"),
        pck_crl_issuer_chain=_read(directory, PCK_CRL_CHAIN_FILES, "PCK CRL issuer chain"),
        pck_crl=_read(directory, PCK_CRL_FILES, "PCK CRL"),
        root_ca_crl=_read(directory, ROOT_CRL_FILES, "Root CA CRL"),
    )


def load_collateral(path: Path) -> Collateral:
    """A dcap-qvl collateral JSON file, or a directory of PCS responses."""
    path = Path(path)
    if path.is_dir():
        return load_pcs_directory(path)
    return parse_collateral_json(read_bounded(path, MAX_FILE, error=_MalformedCollateral))
