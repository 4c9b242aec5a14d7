"""Collateral for the simulated platform, in Intel's formats: TCB Info, QE Identity and two CRLs.

What Intel's Provisioning Certification Service (PCS) serves for a real platform, the simulated
platform issues for itself, under its own root (see `haven.tee.sim.pki`):

- TCB Info, version 3 (PCS API v4 `GET /sgx/certification/v4/tcb`): the platform's TCB levels, newest
  first, each with its status and advisory IDs, signed by the TCB Signing key;
- QE Identity, version 2 (`GET /sgx/certification/v4/qe/identity`): what the quoting enclave's REPORT
  must show (MRSIGNER, ISVPRODID, MISCSELECT and ATTRIBUTES under masks) and its TCB levels;
- the PCK CRL (`/pckcrl?ca=platform`, issued by the Platform CA; it lists the PCK certificate when the
  platform is configured revoked) and the Root CA CRL.

TCB Info and QE Identity are signed with ECDSA-P256-SHA256 over the exact bytes of their JSON text
(raw r‖s signature, hex), so that text is produced once and never re-serialised. Two output forms:
dcap-qvl's `QuoteCollateralV3` JSON, and a directory of the raw files the PCS serves.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from haven.errors import FormatError
from haven.tee.sgx.quote import ecdsa_der_to_raw
from haven.tee.sgx.sigstruct import mrsigner_of
from haven.tee.sim import qe
from haven.tee.sim.pki import SimPki, pce_id_bytes, platform_pki

if TYPE_CHECKING:
    from haven.tee.sim.platform import SimPlatform

# PCS API v4: TCB Info "version": 3, QE Identity "version": 2, TCB Info "tcbType": 0 (the only type
# defined: the 16 SGX components and PCESVN compared one by one).
TCB_INFO_VERSION = 3
QE_IDENTITY_VERSION = 2
TCB_TYPE = 0
# Intel refreshes collateral monthly; "nextUpdate" is 30 days after issue, as in the real samples.
VALIDITY = datetime.timedelta(days=30)
# RFC 5280 5.3.1: the reason code recorded for a revoked PCK certificate.
PCK_REVOCATION_REASON = x509.ReasonFlags.key_compromise

# The raw PCS responses as files, in the names `write_pcs_dir` uses.
PCS_FILES = (
    "tcbInfo.json",
    "qeIdentity.json",
    "tcbInfoIssuerChain.pem",
    "qeIdentityIssuerChain.pem",
    "pckCrlIssuerChain.pem",
    "pckcrl.der",
    "rootcrl.der",
)


@dataclass(frozen=True)
class Collateral:
    """The collateral a verifier needs for this platform's quotes (field names as dcap-qvl's)."""

    pck_crl_issuer_chain: str
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info_issuer_chain: str
    tcb_info: str
    tcb_info_signature: bytes
    qe_identity_issuer_chain: str
    qe_identity: str
    qe_identity_signature: bytes

    def to_dcap_qvl_json(self) -> str:
        """dcap-qvl's `QuoteCollateralV3` JSON: PEM chains and JSON texts as strings, bytes as hex."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.hex() if isinstance(value, bytes) else value
        return json.dumps(out, indent=2) + "\n"

    @classmethod
    def from_dcap_qvl_json(cls, text: str) -> Collateral:
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise FormatError(f"collateral is not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise FormatError("collateral JSON is not an object")
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = doc.get(f.name)
            if not isinstance(value, str):
                raise FormatError(f"collateral field {f.name!r} is missing or not a string")
            if f.type == "bytes":
                try:
                    values[f.name] = bytes.fromhex(value)
                except ValueError:
                    raise FormatError(f"collateral field {f.name!r} is not hex") from None
            else:
                values[f.name] = value
        return cls(**values)

    def write_pcs_dir(self, path: Path) -> None:
        """Write the PCS's raw responses (file names in `PCS_FILES`) into directory ``path``."""
        path.mkdir(parents=True, exist_ok=True)
        # PCS bodies embed the signed JSON text verbatim: the signature covers exactly those bytes.
        contents = {
            "tcbInfo.json": f'{{"tcbInfo":{self.tcb_info},"signature":"{self.tcb_info_signature.hex()}"}}',
            "qeIdentity.json": (
                f'{{"enclaveIdentity":{self.qe_identity},"signature":"{self.qe_identity_signature.hex()}"}}'
            ),
            "tcbInfoIssuerChain.pem": self.tcb_info_issuer_chain,
            "qeIdentityIssuerChain.pem": self.qe_identity_issuer_chain,
            "pckCrlIssuerChain.pem": self.pck_crl_issuer_chain,
        }
        for name, text in contents.items():
            (path / name).write_text(text, encoding="utf-8")
        (path / "pckcrl.der").write_bytes(self.pck_crl)
        (path / "rootcrl.der").write_bytes(self.root_ca_crl)


def _iso(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _dumps(doc: dict[str, Any]) -> str:
    # Compact, keys in Intel's order: the text is signed as produced.
    return json.dumps(doc, separators=(",", ":"))


def _sign_text(key: ec.EllipticCurvePrivateKey, text: str) -> bytes:
    der = key.sign(text.encode("utf-8"), ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    return ecdsa_der_to_raw(der)


def tcb_info_json(platform: SimPlatform, issue: datetime.datetime) -> str:
    """TCB Info v3 for the platform's FMSPC, with its configured levels (newest first)."""
    config = platform.config
    levels = []
    for level in config.tcb_levels:
        entry: dict[str, Any] = {
            "tcb": {
                "sgxtcbcomponents": [{"svn": svn} for svn in level.sgx_components],
                "pcesvn": level.pcesvn,
            },
            "tcbDate": level.tcb_date,
            "tcbStatus": level.status,
        }
        if level.advisory_ids:  # Intel omits the key when a level has no advisories
            entry["advisoryIDs"] = list(level.advisory_ids)
        levels.append(entry)
    return _dumps(
        {
            "id": "SGX",
            "version": TCB_INFO_VERSION,
            "issueDate": _iso(issue),
            "nextUpdate": _iso(issue + VALIDITY),
            "fmspc": config.fmspc.hex().upper(),
            "pceId": pce_id_bytes(config.pce_id).hex().upper(),
            "tcbType": TCB_TYPE,
            "tcbEvaluationDataNumber": config.tcb_evaluation_data_number,
            "tcbLevels": levels,
        }
    )


def qe_identity_json(platform: SimPlatform, issue: datetime.datetime) -> str:
    """QE Identity v2 for the simulated quoting enclave (its values come from `haven.tee.sim.qe`)."""
    config = platform.config
    mrsigner = mrsigner_of(qe.qe_sigstruct(platform))
    tcb_date = config.tcb_levels[0].tcb_date if config.tcb_levels else _iso(platform.created)
    return _dumps(
        {
            "id": "QE",
            "version": QE_IDENTITY_VERSION,
            "issueDate": _iso(issue),
            "nextUpdate": _iso(issue + VALIDITY),
            "tcbEvaluationDataNumber": config.tcb_evaluation_data_number,
            # Hex of the little-endian bytes, as in Intel's QE Identity (MISCSELECT is a u32).
            "miscselect": qe.QE_MISCSELECT.to_bytes(4, "little").hex().upper(),
            "miscselectMask": qe.QE_MISCSELECT_MASK.to_bytes(4, "little").hex().upper(),
            "attributes": qe.QE_IDENTITY_ATTRIBUTES.to_bytes().hex().upper(),
            "attributesMask": qe.QE_IDENTITY_ATTRIBUTES_MASK.to_bytes().hex().upper(),
            "mrsigner": mrsigner.hex().upper(),
            "isvprodid": qe.QE_ISVPRODID,
            "tcbLevels": [
                {"tcb": {"isvsvn": config.qe_isvsvn}, "tcbDate": tcb_date, "tcbStatus": "UpToDate"}
            ],
        }
    )


def _crl(
    issuer: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    issue: datetime.datetime,
    revoked: list[int],
) -> bytes:
    # Intel's CRLs (see the test vectors): v2, CRL Number and Authority Key Identifier, no Issuing
    # Distribution Point, so the CRL covers every certificate of its issuer.
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(issue)
        .next_update(issue + VALIDITY)
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(issue)
            .add_extension(x509.CRLReason(PCK_REVOCATION_REASON), critical=False)
            .build()
        )
    crl = builder.sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    return crl.public_bytes(serialization.Encoding.DER)


def platform_collateral(
    platform: SimPlatform, now: datetime.datetime | None = None, *, pki: SimPki | None = None
) -> Collateral:
    """Issue the collateral for ``platform`` at ``now`` (default: the current time), valid 30 days."""
    if now is None:
        now = datetime.datetime.now(datetime.UTC)
    if now.tzinfo is None:
        raise ValueError("collateral time must be timezone-aware")
    issue = now.astimezone(datetime.UTC).replace(microsecond=0)
    pki = pki or platform_pki(platform)
    tcb_info = tcb_info_json(platform, issue)
    qe_identity = qe_identity_json(platform, issue)
    tcb_chain = pki.tcb_signing_chain_pem().decode("ascii")
    revoked = [pki.pck_cert.serial_number] if platform.config.pck_revoked else []
    return Collateral(
        pck_crl_issuer_chain=pki.platform_ca_chain_pem().decode("ascii"),
        root_ca_crl=_crl(pki.root_cert, pki.root_key, issue, []),
        pck_crl=_crl(pki.platform_ca_cert, pki.platform_ca_key, issue, revoked),
        tcb_info_issuer_chain=tcb_chain,
        tcb_info=tcb_info,
        tcb_info_signature=_sign_text(pki.tcb_signing_key, tcb_info),
        qe_identity_issuer_chain=tcb_chain,
        qe_identity=qe_identity,
        qe_identity_signature=_sign_text(pki.tcb_signing_key, qe_identity),
    )
