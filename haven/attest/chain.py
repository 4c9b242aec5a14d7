"""X.509 certificate chains and CRLs, checked at a time the caller gives.

Every evidence format ends in a chain to a vendor root: Intel's PCK and TCB Signing chains, AMD's
VCEK/VLEK → ASK/ASVK → ARK, AWS Nitro's cabundle. One checker serves them all (RFC 5280 path
validation, reduced to what these PKIs use): each certificate is signed by the next, issuers are CAs
within their path length, every certificate is valid at ``now``, the chain ends at a pinned root
(matched by subject and public key, so a root re-issued with new dates still anchors), and where CRLs
are given each is signed by its issuer, current at ``now``, and does not list the certificate.
"""

from __future__ import annotations

import datetime
import itertools
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from haven.attest.errors import AttestationError

MAX_CHAIN = 8


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _iso(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(no subject)"


def load_certificates(data: bytes, what: str) -> list[x509.Certificate]:
    """Certificates from PEM (one or more, possibly NUL-terminated) or a single DER certificate."""
    try:
        with warnings.catch_warnings():
            # AMD's VCEK and VLEK certificates have serial number 0, which cryptography warns about.
            warnings.simplefilter("ignore")
            if b"-----BEGIN" in data:
                # Only PEM is trimmed: a DER certificate may end in any byte, NUL and 0x0A included.
                certs = x509.load_pem_x509_certificates(data.rstrip(b"\0 \r\n\t"))
            else:
                certs = [x509.load_der_x509_certificate(data)]
    except (ValueError, x509.InvalidVersion) as e:
        raise AttestationError("malformed", f"{what}: not a certificate ({e})") from None
    if not certs:
        raise AttestationError("malformed", f"{what}: no certificate")
    for cert in certs:
        check_decodable(cert, what)
    return certs


_UNDECODABLE = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def check_decodable(cert: x509.Certificate, what: str) -> None:
    """Decode now what `cryptography` decodes lazily, so that a hostile certificate fails as malformed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Each of these is parsed on first use, and raises there if it cannot be.
            for part in ("subject", "issuer", "extensions", "not_valid_before_utc", "not_valid_after_utc"):
                getattr(cert, part)
            cert.public_key()
            cert.signature_hash_algorithm  # noqa: B018
            cert.signature_algorithm_parameters  # noqa: B018
            cert.serial_number  # noqa: B018
            _name(cert)
    except _UNDECODABLE as e:
        raise AttestationError("malformed", f"{what}: a certificate cannot be decoded ({e})") from None


def load_crl(data: bytes, what: str) -> x509.CertificateRevocationList:
    try:
        crl = x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
        # Parsed on first use, like a certificate's parts: make a hostile CRL fail here, as malformed.
        parts = ("issuer", "last_update_utc", "next_update_utc", "extensions", "signature_hash_algorithm")
        for part in parts:
            getattr(crl, part)
        for entry in crl:
            entry.serial_number  # noqa: B018
            entry.extensions  # noqa: B018
    except (*_UNDECODABLE, x509.InvalidVersion) as e:
        raise AttestationError("malformed", f"{what}: not a CRL ({e})") from None
    return crl


def check_validity(cert: x509.Certificate, now: datetime.datetime) -> None:
    if now < cert.not_valid_before_utc:
        when = _iso(cert.not_valid_before_utc)
        raise AttestationError("not-yet-valid", f"certificate {_name(cert)} is not valid before {when}")
    if now > cert.not_valid_after_utc:
        when = _iso(cert.not_valid_after_utc)
        raise AttestationError("expired", f"certificate {_name(cert)} expired at {when}")


def _check_issued_by(cert: x509.Certificate, issuer: x509.Certificate, depth: int) -> None:
    if cert.issuer != issuer.subject:
        raise AttestationError("chain", f"certificate {_name(cert)} is not issued by {_name(issuer)}")
    try:
        bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise AttestationError("chain", f"issuer {_name(issuer)} is not a certificate authority")
    if bc.path_length is not None and depth > bc.path_length:
        raise AttestationError("chain", f"issuer {_name(issuer)} exceeds its path length constraint")
    try:
        ku = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.key_cert_sign:
            raise AttestationError("chain", f"issuer {_name(issuer)} may not sign certificates")
    except x509.ExtensionNotFound:
        pass
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError) as e:
        msg = f"certificate {_name(cert)}: signature by {_name(issuer)} does not verify"
        raise AttestationError("signature", msg) from e


@dataclass(frozen=True)
class VerifiedChain:
    """A chain that checked out: leaf first, the trusted root last."""

    certificates: tuple[x509.Certificate, ...]

    @property
    def leaf(self) -> x509.Certificate:
        return self.certificates[0]

    @property
    def root(self) -> x509.Certificate:
        return self.certificates[-1]

    @property
    def not_before(self) -> datetime.datetime:
        return max(c.not_valid_before_utc for c in self.certificates)

    @property
    def not_after(self) -> datetime.datetime:
        return min(c.not_valid_after_utc for c in self.certificates)


def verify_chain(
    chain: Sequence[x509.Certificate],
    roots: Iterable[x509.Certificate],
    *,
    now: datetime.datetime,
    crls: Sequence[x509.CertificateRevocationList] = (),
    require_crls: bool = False,
    what: str = "certificate chain",
) -> VerifiedChain:
    """Check ``chain`` (leaf first, each certificate followed by its issuer) up to one of ``roots``.

    The chain may end with the root itself or with a certificate a root issued. With ``require_crls``,
    every certificate below the root must be covered by a CRL from its issuer (Intel's DCAP rule).
    """
    if not chain:
        raise AttestationError("malformed", f"{what}: no certificates")
    if len(chain) > MAX_CHAIN:
        raise AttestationError("malformed", f"{what}: {len(chain)} certificates is more than {MAX_CHAIN}")
    pinned = [(r.subject, _spki(r)) for r in roots]
    if not pinned:
        raise AttestationError("chain", f"{what}: no trusted root given")
    path = list(chain)
    last = path[-1]
    anchor = next((r for r in roots if r.subject == last.subject and _spki(r) == _spki(last)), None)
    if anchor is None:
        anchor = next((r for r in roots if r.subject == last.issuer), None)
        if anchor is None:
            raise AttestationError("chain", f"{what}: ends at {_name(last)}, which no trusted root issued")
        path.append(anchor)
    else:
        path[-1] = anchor  # trust the pinned copy, not the one the evidence carried
        # A self-signed root must verify under its own key.
        _check_issued_by(anchor, anchor, 0)
    for depth, (cert, issuer) in enumerate(itertools.pairwise(path)):
        _check_issued_by(cert, issuer, depth)
    for cert in path:
        check_validity(cert, now)
    check_crls(path, crls, now=now, require=require_crls, what=what)
    return VerifiedChain(tuple(path))


def check_crls(
    path: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList],
    *,
    now: datetime.datetime,
    require: bool,
    what: str,
) -> None:
    """Each certificate (the root too, against its own CRL) is checked against the CRL of its issuer."""
    by_subject = {c.subject: c for c in path}
    for crl in crls:
        issuer = by_subject.get(crl.issuer)
        if issuer is None:
            continue  # a CRL of another CA of the same vendor: not about this chain
        who = crl.issuer.rfc4514_string()
        if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            raise AttestationError("signature", f"CRL of {who}: signature does not verify")
        if now < crl.last_update_utc:
            when = _iso(crl.last_update_utc)
            raise AttestationError("not-yet-valid", f"CRL of {who} is not valid before {when}")
        if crl.next_update_utc is not None and now > crl.next_update_utc:
            raise AttestationError("expired", f"CRL of {who} expired at {_iso(crl.next_update_utc)}")
    for i, cert in enumerate(path):
        issuer_cert = path[i + 1] if i + 1 < len(path) else cert
        covering = [crl for crl in crls if crl.issuer == issuer_cert.subject]
        if not covering:
            if require and i + 1 < len(path):
                msg = f"{what}: no CRL given for certificates issued by {_name(issuer_cert)}"
                raise AttestationError("chain", msg)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # AMD VCEK/VLEK serial number 0 (see load_certificates)
            serial = cert.serial_number
        for crl in covering:
            if crl.get_revoked_certificate_by_serial_number(serial) is not None:
                raise AttestationError("revoked", f"certificate {_name(cert)} is revoked by its issuer's CRL")
