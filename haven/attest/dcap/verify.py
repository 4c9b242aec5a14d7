"""Verify an SGX or TDX DCAP quote against its collateral, at a time the caller gives.

Check order (each step names its failure kind; see docs/attestation-dcap.md):

1. parse the quote (``malformed``);
2. collateral: the TCB Info, QE Identity and PCK CRL issuer chains to a trusted root, with the Root CA
   CRL (``chain``/``signature``/``revoked``); the TCB Info and QE Identity signatures over their exact
   JSON bytes, by an end-entity certificate the root issued directly (``chain``/``signature``), and the
   PCK CRL's signature; every certificate, CRL and document valid at ``now`` (``expired``/``not-yet-valid``);
3. the PCK CRL is the one of the PCK certificate's issuer (``collateral-mismatch``); the PCK chain in
   the quote, to the same root, with the Root CA and PCK CRLs; its SGX extension;
4. the TCB Info is for this TEE, FMSPC and PCE-ID (``collateral-mismatch``);
5. the QE report's signature by the PCK key, and its REPORTDATA = SHA-256(attestation key ‖ QE auth
   data) ‖ 0³² (``signature``);
6. the QE is the one the QE Identity describes (``collateral-mismatch``), its ISVSVN's QE TCB level;
7. the ISV signature by the attestation key over header ‖ body (``signature``);
8. the platform's TCB level and the merged status (``tcb-no-match``; ``revoked`` for Revoked).

Nothing about the quote's body is read before step 7, so a changed body byte is always reported as a
signature failure. Debug enclaves and TDs are reported (``debug=True``), not refused: refusing them is
the appraisal policy's decision.

Speed: a `Collateral` is parsed once; what does not depend on ``now`` is cached by content hash —
collateral signatures and chains, PCK chains with their extension, QE report signatures (per PCK
certificate and QE report), attestation keys — so a quote from a known platform costs one ECDSA
verification plus the time-window checks, which are redone on every call.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from haven.attest.chain import VerifiedChain, check_decodable, check_validity, utcnow, verify_chain
from haven.attest.dcap.cache import Lru
from haven.attest.dcap.collateral import Collateral
from haven.attest.dcap.pck import PckExtension, pck_extension_of
from haven.attest.dcap.quote import DcapQuote, TdReport15, parse_quote
from haven.attest.dcap.tcb import TcbVerdict, check_qe_identity, check_tcb_info_applies, evaluate_tcb
from haven.attest.errors import AttestationError
from haven.attest.result import VerifiedEvidence
from haven.errors import FormatError
from haven.tee.sgx.quote import attest_public_key, ecdsa_raw_to_der, qe_report_data
from haven.tee.sgx.structs import AttributeFlags

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
# TDX Module ABI, TDINFO_STRUCT / TD_ATTRIBUTES: bit 0 is DEBUG (TUD).
TD_ATTRIBUTES_DEBUG = 0x1


_COLLATERAL: Lru[tuple[bytes, tuple[bytes, ...]], _TrustedCollateral] = Lru(64)
_CHAINS: Lru[tuple[tuple[bytes, ...], tuple[bytes, ...], bytes], VerifiedChain] = Lru(1024)
_PCK: Lru[tuple[bytes, bytes, tuple[bytes, ...]], _TrustedPck] = Lru(1024)
_QE_SIGNATURES: Lru[bytes, bool] = Lru(4096)
_ATTEST_KEYS: Lru[bytes, ec.EllipticCurvePublicKey] = Lru(4096)


def _fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def _p256_key(cert: x509.Certificate, what: str) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise AttestationError("signature", f"{what}: the key is not ECDSA P-256")
    return key


def _verify_raw(key: ec.EllipticCurvePublicKey, raw: bytes, data: bytes) -> bool:
    try:
        key.verify(ecdsa_raw_to_der(raw), data, _ECDSA_SHA256)
    except (InvalidSignature, FormatError, ValueError):
        return False
    return True


def _iso(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_window(
    what: str, start: datetime.datetime, end: datetime.datetime | None, now: datetime.datetime
) -> None:
    if now < start:
        raise AttestationError("not-yet-valid", f"{what} is not valid before {_iso(start)}")
    if end is not None and now > end:
        raise AttestationError("expired", f"{what} expired at {_iso(end)}")


@dataclass(frozen=True)
class _TrustedCollateral:
    """What checking the collateral's signatures established; times are rechecked on every use."""

    chains: tuple[VerifiedChain, ...]
    root: x509.Certificate
    windows: tuple[tuple[str, datetime.datetime, datetime.datetime | None], ...]

    def check_times(self, now: datetime.datetime) -> None:
        for chain in self.chains:
            for cert in chain.certificates:
                check_validity(cert, now)
        for what, start, end in self.windows:
            _check_window(what, start, end, now)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _roots_key(roots: Sequence[x509.Certificate]) -> tuple[bytes, ...]:
    return tuple(_fingerprint(r) for r in roots)


def _check_carried_root(carried: x509.Certificate, anchor: x509.Certificate, what: str) -> None:
    """A chain may end with its own copy of the root; verification anchors at the pinned copy (same
    subject and key), so the carried copy must at least be a validly self-signed certificate."""
    if carried.subject != anchor.subject or _fingerprint(carried) == _fingerprint(anchor):
        return  # the chain ends below the root, or with the pinned copy itself
    try:
        carried.verify_directly_issued_by(carried)
    except (InvalidSignature, ValueError, TypeError):
        raise AttestationError(
            "signature", f"{what}: the copy of the root it carries is not validly self-signed"
        ) from None


def _verified_chain(
    certs: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    key: tuple[bytes, ...],
    collateral: Collateral,
    now: datetime.datetime,
    what: str,
) -> VerifiedChain:
    """`verify_chain` with both of the collateral's CRLs (each applies where its issuer is in the path),
    cached by the chain's, the roots' and the CRLs' content: a hit only rechecks validity at ``now``."""
    cache_key = (tuple(_fingerprint(c) for c in certs), key, collateral.crls_digest)
    cached = _CHAINS.get(cache_key)
    if cached is not None:
        for cert in cached.certificates:
            check_validity(cert, now)
        return cached
    crls = [collateral.root_ca_crl, collateral.pck_crl]
    try:
        chain = verify_chain(certs, roots, now=now, crls=crls, require_crls=True, what=what)
    except (ValueError, TypeError) as e:  # a CRL entry or extension cryptography decodes lazily
        raise AttestationError("malformed", f"{what}: a certificate or CRL cannot be decoded ({e})") from None
    _check_carried_root(certs[-1], chain.root, what)
    _CHAINS.put(cache_key, chain)
    return chain


def _trusted_collateral(
    collateral: Collateral, roots: Sequence[x509.Certificate], key: tuple[bytes, ...], now: datetime.datetime
) -> _TrustedCollateral:
    cached = _COLLATERAL.get((collateral.digest, key))
    if cached is not None:
        cached.check_times(now)
        return cached
    tcb_chain, qe_chain, crl_chain = chains = tuple(
        _verified_chain(chain, roots, key, collateral, now, what)
        for chain, what in (
            (collateral.tcb_info_issuer_chain, "TCB Info issuer chain"),
            (collateral.qe_identity_issuer_chain, "QE Identity issuer chain"),
            (collateral.pck_crl_issuer_chain, "PCK CRL issuer chain"),
        )
    )
    anchor = tcb_chain.root
    if any(_fingerprint(c.root) != _fingerprint(anchor) for c in chains):
        raise AttestationError("chain", "the collateral's issuer chains end at different roots")
    for chain, text, sig, what in (
        (tcb_chain, collateral.tcb_info_bytes, collateral.tcb_info_signature, "TCB Info"),
        (qe_chain, collateral.qe_identity_bytes, collateral.qe_identity_signature, "QE Identity"),
    ):
        # Intel's TCB Signing certificate is an end entity the root issues directly (QVL expects a
        # chain of two). Any longer chain would let a PCK key — one per platform, so the likeliest
        # to leak — sign TCB Info for every platform.
        if len(chain.certificates) != 2 or _is_ca(chain.leaf):
            raise AttestationError(
                "chain", f"{what} must be signed by an end-entity certificate the root issued directly"
            )
        if not _verify_raw(_p256_key(chain.leaf, f"{what} signer"), sig, text):
            raise AttestationError("signature", f"the {what} signature does not verify over its JSON text")
    pck_crl, root_crl = collateral.pck_crl, collateral.root_ca_crl
    # With its issuer in the path, verify_chain has checked the PCK CRL's signature and window.
    if pck_crl.issuer != crl_chain.leaf.subject:
        raise AttestationError("chain", "the PCK CRL is not issued by the PCK CRL issuer chain's leaf")
    info, identity = collateral.tcb_info, collateral.qe_identity
    trusted = _TrustedCollateral(
        chains=chains,
        root=anchor,
        windows=(
            ("TCB Info", info.issue_date, info.next_update),
            ("QE Identity", identity.issue_date, identity.next_update),
            ("the PCK CRL", pck_crl.last_update_utc, pck_crl.next_update_utc),
            ("the Root CA CRL", root_crl.last_update_utc, root_crl.next_update_utc),
        ),
    )
    trusted.check_times(now)
    _COLLATERAL.put((collateral.digest, key), trusted)
    return trusted


@dataclass(frozen=True)
class _TrustedPck:
    chain: VerifiedChain
    extension: PckExtension
    key: ec.EllipticCurvePublicKey
    fingerprint: bytes


def load_pck_chain(pem: bytes) -> list[x509.Certificate]:
    """The certificates of certification data type 5, in the canonical PEM form Intel's QE writes
    (64-column base64, LF line ends, an optional trailing NUL): any other byte there is refused."""
    text = pem[:-1] if pem.endswith(b"\0") else pem
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cryptography's deprecation warnings about odd serials
            certs = x509.load_pem_x509_certificates(text)
    except (ValueError, x509.InvalidVersion) as e:
        raise AttestationError("malformed", f"PCK certificate chain does not parse ({e})") from None
    for cert in certs:
        check_decodable(cert, "PCK certificate chain")
    if b"".join(c.public_bytes(Encoding.PEM) for c in certs) != text:
        raise AttestationError("malformed", "PCK certificate chain is not in canonical PEM form")
    return certs


def _trusted_pck(
    quote: DcapQuote,
    collateral: Collateral,
    trusted: _TrustedCollateral,
    roots: Sequence[x509.Certificate],
    key: tuple[bytes, ...],
    now: datetime.datetime,
) -> _TrustedPck:
    cache_key = (hashlib.sha256(quote.pck_chain_pem).digest(), collateral.crls_digest, key)
    cached = _PCK.get(cache_key)
    if cached is not None:
        for cert in cached.chain.certificates:
            check_validity(cert, now)
        if _fingerprint(cached.chain.root) != _fingerprint(trusted.root):
            raise AttestationError(
                "collateral-mismatch", "the PCK chain and the collateral end at different roots"
            )
        return cached
    certs = load_pck_chain(quote.pck_chain_pem)
    issuer = certs[1].subject if len(certs) > 1 else None
    if certs[0].issuer == issuer and issuer != collateral.pck_crl.issuer:
        # Intel's PCS serves one PCK CRL per CA (?ca=processor|platform): this one is another CA's.
        # (A chain that does not hang together is left to verify_chain to report.)
        raise AttestationError(
            "collateral-mismatch",
            f"the PCK CRL is {collateral.pck_crl.issuer.rfc4514_string()}'s, "
            f"the PCK certificate is issued by {certs[0].issuer.rfc4514_string()}",
        )
    chain = _verified_chain(certs, roots, key, collateral, now, "PCK certificate chain")
    if _fingerprint(chain.root) != _fingerprint(trusted.root):
        raise AttestationError(
            "collateral-mismatch", "the PCK chain and the collateral end at different roots"
        )
    result = _TrustedPck(
        chain,
        pck_extension_of(chain.leaf),
        _p256_key(chain.leaf, "PCK certificate"),
        _fingerprint(chain.leaf),
    )
    _PCK.put(cache_key, result)
    return result


def _attestation_key(raw: bytes) -> ec.EllipticCurvePublicKey:
    key: ec.EllipticCurvePublicKey | None = _ATTEST_KEYS.get(raw)
    if key is None:
        try:
            key = attest_public_key(raw)
        except FormatError:
            raise AttestationError("signature", "the attestation key is not a point on P-256") from None
        _ATTEST_KEYS.put(raw, key)
    return key


def _check_qe_report(quote: DcapQuote, pck_key: ec.EllipticCurvePublicKey, pck_fingerprint: bytes) -> None:
    cache_key = hashlib.sha256(pck_fingerprint + quote.qe_report_bytes + quote.qe_report_signature).digest()
    if _QE_SIGNATURES.get(cache_key) is None:
        if not _verify_raw(pck_key, quote.qe_report_signature, quote.qe_report_bytes):
            raise AttestationError("signature", "the QE report's signature does not verify under the PCK key")
        _QE_SIGNATURES.put(cache_key, True)
    expected = qe_report_data(quote.attest_pub_key, quote.qe_auth_data)
    if not hmac.compare_digest(quote.qe_report.reportdata, expected):
        raise AttestationError(
            "signature", "the QE report does not bind the attestation key (REPORTDATA is not its hash)"
        )


def _check_isv_signature(quote: DcapQuote) -> None:
    if not _verify_raw(_attestation_key(quote.attest_pub_key), quote.signature, quote.signed_bytes):
        raise AttestationError("signature", "the quote's signature does not verify under the attestation key")


def check_quote_signatures(quote: DcapQuote, pck_leaf: x509.Certificate) -> None:
    """Only the quote's own signatures: QE report by ``pck_leaf``, the key binding, the ISV signature.
    (The PCK chain itself is `verify_chain`'s business; collateral and TCB are not looked at.)"""
    _check_qe_report(quote, _p256_key(pck_leaf, "PCK certificate"), _fingerprint(pck_leaf))
    _check_isv_signature(quote)


def default_roots() -> tuple[x509.Certificate, ...]:
    """Intel's SGX Root CA only: simulated evidence is trusted only where a caller names its root."""
    from haven.attest.roots import intel_sgx_root

    return (intel_sgx_root(),)


def _window(
    chains: Iterable[VerifiedChain], trusted: _TrustedCollateral
) -> tuple[datetime.datetime, datetime.datetime]:
    starts = [c.not_before for c in chains] + [w[1] for w in trusted.windows]
    ends = [c.not_after for c in chains] + [w[2] for w in trusted.windows if w[2] is not None]
    return max(starts), min(ends)


def verify_dcap(
    quote: bytes,
    collateral: Collateral,
    *,
    roots: Sequence[x509.Certificate] | None = None,
    now: datetime.datetime | None = None,
) -> VerifiedEvidence:
    """Verify a DCAP quote (SGX v3/v4, TDX v4/v5) with ``collateral`` at ``now`` (default: current time)."""
    if now is None:
        now = utcnow()
    elif now.tzinfo is None:
        raise ValueError("verify_dcap needs a timezone-aware time")
    roots = default_roots() if roots is None else tuple(roots)
    parsed = parse_quote(quote)
    key = _roots_key(roots)
    trusted = _trusted_collateral(collateral, roots, key, now)
    pck = _trusted_pck(parsed, collateral, trusted, roots, key, now)
    check_tcb_info_applies(collateral.tcb_info, parsed, pck.extension)
    _check_qe_report(parsed, pck.key, pck.fingerprint)
    qe = check_qe_identity(collateral.qe_identity, parsed)
    _check_isv_signature(parsed)
    verdict = evaluate_tcb(collateral.tcb_info, parsed, pck.extension, qe)
    valid_from, valid_until = _window((*trusted.chains, pck.chain), trusted)
    return _evidence(parsed, collateral, pck.extension, verdict, trusted.root, valid_from, valid_until)


def _evidence(
    quote: DcapQuote,
    collateral: Collateral,
    pck: PckExtension,
    verdict: TcbVerdict,
    root: x509.Certificate,
    valid_from: datetime.datetime,
    valid_until: datetime.datetime,
) -> VerifiedEvidence:
    claims: dict[str, Any] = {
        "quote_version": quote.version,
        "fmspc": pck.fmspc.hex(),
        "pce_id": pck.pce_id.hex(),
        "pcesvn": pck.pcesvn,
        "pck_cpusvn": pck.cpusvn.hex(),
        "sgx_type": pck.sgx_type,
        "qe_tcb_status": verdict.qe_status,
        "tcb_date": _iso(verdict.level.tcb_date),
        "tcb_evaluation_data_number": collateral.tcb_info.tcb_evaluation_data_number,
    }
    if quote.tee == "sgx":
        body = quote.sgx_body
        measurements = {"mrenclave": body.mrenclave.hex(), "mrsigner": body.mrsigner.hex()}
        claims |= {
            "isvprodid": body.isvprodid,
            "isvsvn": body.isvsvn,
            "attributes": body.attributes.to_bytes().hex(),
            "miscselect": body.miscselect,
            "configid": body.configid.hex(),
            "configsvn": body.configsvn,
            "isvextprodid": body.isvextprodid.hex(),
            "isvfamilyid": body.isvfamilyid.hex(),
            "cpusvn": body.cpusvn.hex(),
        }
        debug = bool(body.attributes.flags & AttributeFlags.DEBUG)
    else:
        td = quote.td_report
        measurements = {
            "mrtd": td.mr_td.hex(),
            "rtmr0": td.rtmr0.hex(),
            "rtmr1": td.rtmr1.hex(),
            "rtmr2": td.rtmr2.hex(),
            "rtmr3": td.rtmr3.hex(),
            "mrseam": td.mr_seam.hex(),
            "mrsignerseam": td.mr_signer_seam.hex(),
            "mrconfigid": td.mr_config_id.hex(),
            "mrowner": td.mr_owner.hex(),
            "mrownerconfig": td.mr_owner_config.hex(),
        }
        claims |= {
            "td_attributes": td.td_attributes.hex(),
            "xfam": td.xfam.hex(),
            "seam_attributes": td.seam_attributes.hex(),
            "tee_tcb_svn": td.tee_tcb_svn.hex(),
            "tdx_module": verdict.tdx_module,
            "tdx_module_status": verdict.tdx_module_status,
            "sgx_tcb_status": verdict.sgx_status,
            "td_relaunch_advised": verdict.relaunch_advised,
        }
        if isinstance(quote.body, TdReport15):
            measurements["mrservicetd"] = quote.body.mr_servicetd.hex()
            claims["tee_tcb_svn2"] = quote.body.tee_tcb_svn2.hex()
        debug = bool(int.from_bytes(td.td_attributes, "little") & TD_ATTRIBUTES_DEBUG)
    return VerifiedEvidence(
        tee=quote.tee,
        tcb_status=verdict.status,
        advisory_ids=verdict.advisory_ids,
        measurements=measurements,
        report_data=quote.report_data,
        debug=debug,
        valid_from=valid_from,
        valid_until=valid_until,
        root=root.subject.rfc4514_string(),
        claims=claims,
    )
