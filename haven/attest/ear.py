"""Attestation results as EAR (EAT Attestation Results, IETF draft-ietf-rats-ear), signed as JWT ES256.

An EAR is a JSON object of claims (draft-ietf-rats-ear §3):

    {"eat_profile": "tag:github.com,2023:veraison/ear", "iat": ..., "exp": ...,
     "ear.verifier-id": {"developer": ..., "build": ...},
     "eat_nonce": ...,                                        (when the report data was the nonce)
     "submods": {"sgx": {"ear.status": "affirming" | "warning" | "contraindicated" | "none",
                         "ear.trustworthiness-vector": {"instance-identity": 2, ...},
                         "ear.appraisal-policy-id": ...,
                         "ear.veraison.annotated-evidence": {...}}}}

The trustworthiness vector holds AR4SI claims (draft-ietf-rats-ar4si §2.3); each value falls in a tier
(§2.3.1: -1..1 none, 2..31 affirming, 32..95 warning, 96..127 contraindicated, and the negative
ranges mirrored), and the status of an appraisal is the worst tier of its claims.

Signing is JWS compact serialisation (RFC 7515) with ES256 (RFC 7518 §3.4: ECDSA P-256 SHA-256, the
signature the fixed 64-byte R‖S). Keys travel as JWK Sets (RFC 7517) whose ``kid`` is the key's
RFC 7638 thumbprint. Verification accepts ES256 only: ``none``, HMAC and every other algorithm are
refused before any key is looked at, so a token cannot choose how it is checked.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from haven.attest.chain import utcnow
from haven.attest.errors import AttestationError
from haven.errors import KeyFileError

EAR_PROFILE = "tag:github.com,2023:veraison/ear"  # draft-ietf-rats-ear §3.1, the EAR profile
ALGORITHM = "ES256"  # RFC 7518 §3.1
DEFAULT_TTL = datetime.timedelta(hours=1)
MAX_TOKEN = 1 << 20
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")

Status = Literal["none", "affirming", "warning", "contraindicated"]
STATUSES: tuple[Status, ...] = ("none", "affirming", "warning", "contraindicated")  # best to worst

# AR4SI trustworthiness claims (draft-ietf-rats-ar4si §2.3), in the draft's order.
TRUST_CLAIMS = (
    "instance-identity",
    "configuration",
    "executables",
    "file-system",
    "hardware",
    "runtime-opaque",
    "storage-opaque",
    "sourced-data",
)

# AR4SI claim values used by Haven's appraisal (draft-ietf-rats-ar4si §2.3.3-§2.3.10).
NO_CLAIM = 0
TRUSTWORTHY_INSTANCE = 2  # instance-identity: recognized, not known to be compromised
APPROVED_CONFIG = 2  # configuration: a known and approved configuration
UNSAFE_CONFIG = 32  # configuration: includes or exposes known vulnerabilities
UNSUPPORTABLE_CONFIG = 96  # configuration: unacceptable vulnerabilities
APPROVED_RUNTIME = 2  # executables: only approved executables, during and after boot
APPROVED_BOOT = 3  # executables: only approved executables during boot
UNSAFE_RUNTIME = 32  # executables: recognized, but some have known vulnerabilities
CONTRAINDICATED_RUNTIME = 96  # executables: contraindicated executables in runtime memory
GENUINE_HARDWARE = 2  # hardware: genuine, supported
UNSAFE_HARDWARE = 32  # hardware: genuine, but with known security vulnerabilities
CONTRAINDICATED_HARDWARE = 96  # hardware: recognized, trustworthiness contraindicated
ENCRYPTED_MEMORY = 2  # runtime-opaque: encrypted memory inside a TEE
ISOLATED_MEMORY = 32  # runtime-opaque: isolated from other workloads, not encrypted
VISIBLE_MEMORY = 96  # runtime-opaque: memory visible to the host


def tier(value: int) -> Status:
    """The AR4SI tier of a claim value (draft-ietf-rats-ar4si §2.3.1)."""
    if -1 <= value <= 1:
        return "none"
    if -32 <= value < 32:
        return "affirming"
    if -96 <= value < 96:
        return "warning"
    return "contraindicated"


def worst(statuses: list[Status] | tuple[Status, ...]) -> Status:
    return max(statuses, key=STATUSES.index, default="none")


def status_of(vector: Mapping[str, int]) -> Status:
    """The status an appraisal with these claims has: the worst tier among them."""
    return worst([tier(v) for v in vector.values()])


# -- claims ------------------------------------------------------------------------------------------


def _epoch(t: datetime.datetime) -> int:
    return int(t.timestamp())


def ear_claims(
    submods: Mapping[str, Mapping[str, Any]],
    *,
    iat: datetime.datetime,
    exp: datetime.datetime | None = None,
    nonce: bytes | None = None,
    build: str | None = None,
) -> dict[str, Any]:
    """The EAR claims set for appraisals ``submods`` (name → the appraisal's EAR object)."""
    from haven import __version__

    if exp is not None and exp <= iat:
        raise ValueError("an attestation result must expire after it is issued")
    claims: dict[str, Any] = {
        "eat_profile": EAR_PROFILE,
        "iat": _epoch(iat),
        "ear.verifier-id": {"developer": "Haven", "build": build or f"haven {__version__}"},
        "submods": {name: dict(sub) for name, sub in submods.items()},
    }
    if exp is not None:
        claims["exp"] = _epoch(exp)
    # EAT (RFC 9711 §4.1) nonces are 8 to 64 bytes; in JSON a text string, here base64url.
    if nonce is not None and 8 <= len(nonce) <= 64:
        claims["eat_nonce"] = _b64(nonce)
    return claims


# -- JWS compact serialisation -------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str, what: str) -> bytes:
    # RFC 7515 §2: base64url without padding; a length of 1 mod 4 cannot be that.
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise AttestationError("malformed", f"{what} is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise AttestationError("malformed", f"{what} is not base64url") from None


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        dup = next((k for k in keys if keys.count(k) > 1), None)
        if dup is not None:
            raise AttestationError("malformed", f"{what} has the member {dup!r} twice")
        return dict(pairs)

    try:
        obj = json.loads(data.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise AttestationError("malformed", f"{what} is not JSON") from None
    if not isinstance(obj, dict):
        raise AttestationError("malformed", f"{what} is not a JSON object")
    return obj


def _compact(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def sign_ear(claims: Mapping[str, Any], key: ec.EllipticCurvePrivateKey) -> str:
    """The claims as a JWT signed with ES256 under ``key`` (whose thumbprint is the ``kid``)."""
    if not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(f"an ES256 key must be on P-256, not {key.curve.name}")
    header = {"alg": ALGORITHM, "typ": "JWT", "kid": thumbprint(key.public_key())}
    signing_input = f"{_b64(_compact(header))}.{_b64(_compact(claims))}".encode()
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return f"{signing_input.decode()}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


# -- keys ----------------------------------------------------------------------------------------------


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The public key as a JWK (RFC 7518 §6.2.1), with its thumbprint as ``kid``."""
    numbers = key.public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "x": _b64(numbers.x.to_bytes(32, "big"))}
    jwk["y"] = _b64(numbers.y.to_bytes(32, "big"))
    return {**jwk, "kid": thumbprint(key), "alg": ALGORITHM, "use": "sig"}


def thumbprint(key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 §3.2: SHA-256 over the required members (crv, kty, x, y) in lexicographic order."""
    numbers = key.public_numbers()
    required = {
        "crv": "P-256",
        "kty": "EC",
        "x": _b64(numbers.x.to_bytes(32, "big")),
        "y": _b64(numbers.y.to_bytes(32, "big")),
    }
    return _b64(hashlib.sha256(_compact(required)).digest())


def jwks_of(*keys: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    return {"keys": [public_jwk(k) for k in keys]}


def generate_ear_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def save_ear_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    """PKCS#8 PEM, mode 0600, never replacing an existing file."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        raise KeyFileError(f"EAR signing key {path}: already exists; not overwriting it") from None
    except OSError as e:
        raise KeyFileError(f"EAR signing key {path}: cannot write it ({e.strerror})") from None
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(pem)


def load_ear_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise KeyFileError(f"EAR signing key {path}: cannot read it ({e.strerror})") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"EAR signing key {path}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(f"EAR signing key {path}: not a P-256 EC key (ES256 needs one)")
    return key


def _coordinate(jwk: Mapping[str, Any], name: str, where: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise KeyFileError(f"{where}: member {name!r} is missing")
    try:
        raw = _unb64(value, f"{where}.{name}")
    except AttestationError:
        raise KeyFileError(f"{where}: member {name!r} is not base64url") from None
    if len(raw) != 32:
        raise KeyFileError(f"{where}: member {name!r} is {len(raw)} bytes, P-256 needs 32")
    return int.from_bytes(raw, "big")


def _jwk_key(jwk: Any, where: str) -> tuple[str, ec.EllipticCurvePublicKey]:
    if not isinstance(jwk, dict):
        raise KeyFileError(f"{where}: a JWK must be a JSON object")
    if "d" in jwk:
        raise KeyFileError(f"{where}: holds a private key; a key set for verification must not")
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise KeyFileError(f"{where}: not a P-256 EC key (kty {jwk.get('kty')!r}, crv {jwk.get('crv')!r})")
    if jwk.get("alg", ALGORITHM) != ALGORITHM or jwk.get("use", "sig") != "sig":
        raise KeyFileError(f"{where}: not a key for {ALGORITHM} signatures")
    x, y = _coordinate(jwk, "x", where), _coordinate(jwk, "y", where)
    try:
        key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    except ValueError:
        raise KeyFileError(f"{where}: the point is not on P-256") from None
    kid = jwk.get("kid", thumbprint(key))
    if not isinstance(kid, str):
        raise KeyFileError(f"{where}: kid must be a string")
    return kid, key


def parse_jwks(data: bytes, what: str = "key set") -> dict[str, ec.EllipticCurvePublicKey]:
    """A JWK Set (``{"keys": [...]}``) or a single JWK → keys by ``kid``."""
    try:
        doc = _json_object(data, what)
    except AttestationError as e:
        raise KeyFileError(str(e)) from None
    jwks = doc.get("keys", [doc])
    if not isinstance(jwks, list) or not jwks:
        raise KeyFileError(f"{what}: 'keys' must be a non-empty list of JWKs")
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    for i, jwk in enumerate(jwks):
        kid, key = _jwk_key(jwk, f"{what}: keys[{i}]")
        if kid in keys:
            raise KeyFileError(f"{what}: kid {kid!r} is used twice")
        keys[kid] = key
    return keys


# -- verification --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EarAppraisal:
    """One submodule's appraisal as a token carried it."""

    status: Status
    vector: dict[str, int]
    policy_id: str | None
    evidence: dict[str, Any] | None


@dataclass(frozen=True)
class EarResult:
    """A verified EAR token: its key, times and appraisals."""

    kid: str
    iat: datetime.datetime
    exp: datetime.datetime | None
    verifier: dict[str, str]
    submods: dict[str, EarAppraisal]
    nonce: str | None
    claims: dict[str, Any] = field(repr=False)

    @property
    def status(self) -> Status:
        """The worst status among the submodules."""
        return worst([s.status for s in self.submods.values()])


def _time_claim(claims: Mapping[str, Any], name: str) -> datetime.datetime | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AttestationError("malformed", f"EAR claim {name!r} is not a NumericDate")
    try:
        return datetime.datetime.fromtimestamp(value, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        raise AttestationError("malformed", f"EAR claim {name!r} is out of range") from None


def _appraisal(name: str, sub: Any) -> EarAppraisal:
    where = f"EAR submods.{name}"
    if not isinstance(sub, dict):
        raise AttestationError("malformed", f"{where} is not an object")
    status = sub.get("ear.status")
    if status not in STATUSES:
        known = ", ".join(STATUSES)
        raise AttestationError("malformed", f"{where}: ear.status {status!r} is not one of {known}")
    vector = sub.get("ear.trustworthiness-vector", {})
    if not isinstance(vector, dict):
        raise AttestationError("malformed", f"{where}: ear.trustworthiness-vector is not an object")
    for claim, value in vector.items():
        if claim not in TRUST_CLAIMS:
            raise AttestationError("malformed", f"{where}: {claim!r} is not an AR4SI claim")
        if isinstance(value, bool) or not isinstance(value, int) or not -128 <= value <= 127:
            raise AttestationError("malformed", f"{where}: {claim} must be an integer in -128..127")
    policy_id = sub.get("ear.appraisal-policy-id")
    if policy_id is not None and not isinstance(policy_id, str):
        raise AttestationError("malformed", f"{where}: ear.appraisal-policy-id is not a string")
    evidence = sub.get("ear.veraison.annotated-evidence")
    if evidence is not None and not isinstance(evidence, dict):
        raise AttestationError("malformed", f"{where}: ear.veraison.annotated-evidence is not an object")
    return EarAppraisal(status, dict(vector), policy_id, evidence)


def _check_claims(claims: dict[str, Any]) -> tuple[dict[str, str], dict[str, EarAppraisal]]:
    if claims.get("eat_profile") != EAR_PROFILE:
        profile = claims.get("eat_profile")
        raise AttestationError("malformed", f"EAR eat_profile is {profile!r}, not {EAR_PROFILE}")
    verifier = claims.get("ear.verifier-id")
    if not isinstance(verifier, dict) or not all(
        isinstance(verifier.get(k), str) for k in ("developer", "build")
    ):
        raise AttestationError("malformed", "EAR ear.verifier-id must hold the strings developer and build")
    submods = claims.get("submods")
    if not isinstance(submods, dict) or not submods:
        raise AttestationError("malformed", "EAR submods must be a non-empty object")
    return dict(verifier), {str(n): _appraisal(str(n), s) for n, s in submods.items()}


KeySet = Mapping[str, ec.EllipticCurvePublicKey] | Mapping[str, Any] | bytes | str


def _key_set(jwks: KeySet) -> dict[str, ec.EllipticCurvePublicKey]:
    """A JWK Set as JSON text or a parsed document, or keys by kid as :func:`parse_jwks` returns them."""
    if isinstance(jwks, (bytes, str)):
        return parse_jwks(jwks.encode() if isinstance(jwks, str) else jwks)
    if "keys" in jwks or "kty" in jwks:
        return parse_jwks(json.dumps(jwks).encode())
    keys = dict(jwks)
    if not all(isinstance(k, ec.EllipticCurvePublicKey) for k in keys.values()):
        raise KeyFileError("a key set maps key IDs to EC public keys")
    return keys


def verify_ear_token(
    token: str | bytes,
    jwks: KeySet,
    *,
    now: datetime.datetime | None = None,
    leeway: datetime.timedelta = datetime.timedelta(seconds=60),
    require_exp: bool = True,
) -> EarResult:
    """Check an EAR JWT: ES256 only, signed by a key of ``jwks`` (a JWK Set), and current at ``now``.

    Kinds: ``malformed`` (not a JWT or not an EAR), ``signature`` (algorithm, unknown key, bad
    signature), ``expired`` / ``not-yet-valid`` (``exp``, ``iat`` and ``nbf`` at ``now``, ± ``leeway``).
    """
    now = now or utcnow()
    keys = _key_set(jwks)
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError:
            raise AttestationError("malformed", "the token is not ASCII text") from None
    token = token.strip()
    if len(token) > MAX_TOKEN:
        raise AttestationError("malformed", f"the token is longer than {MAX_TOKEN} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise AttestationError("malformed", "not a JWS compact token (header.payload.signature)")
    header = _json_object(_unb64(parts[0], "the JWT header"), "the JWT header")
    alg = header.get("alg")
    if alg != ALGORITHM:
        # RFC 8725 §2.1, §3.1: the verifier, not the token, decides the algorithm.
        raise AttestationError("signature", f"JWT algorithm {alg!r} is refused; only {ALGORITHM} is accepted")
    if "crit" in header:
        raise AttestationError("malformed", "the JWT header has critical extensions Haven does not know")
    kid = header.get("kid")
    if kid is None and len(keys) == 1:
        kid = next(iter(keys))
    if not isinstance(kid, str) or kid not in keys:
        raise AttestationError("signature", f"the token's key {kid!r} is not in the key set")
    signature = _unb64(parts[2], "the JWT signature")
    if len(signature) != 64:
        raise AttestationError("signature", f"an {ALGORITHM} signature is 64 bytes, not {len(signature)}")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        keys[kid].verify(der, f"{parts[0]}.{parts[1]}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise AttestationError("signature", f"the token's signature does not verify under {kid}") from None
    claims = _json_object(_unb64(parts[1], "the JWT payload"), "the JWT payload")
    iat, exp, nbf = (_time_claim(claims, n) for n in ("iat", "exp", "nbf"))
    if iat is None:
        raise AttestationError("malformed", "the EAR has no iat (issued-at) claim")
    if exp is None and require_exp:
        raise AttestationError("malformed", "the EAR has no exp (expiry) claim")
    for start, name in ((iat, "issued at"), (nbf, "not valid before")):
        if start is not None and now + leeway < start:
            when = f"{_iso(start)}, later than {_iso(now)}"
            raise AttestationError("not-yet-valid", f"the token is {name} {when}")
    if exp is not None and now - leeway >= exp:
        raise AttestationError("expired", f"the token expired at {_iso(exp)}")
    verifier, submods = _check_claims(claims)
    nonce = claims.get("eat_nonce")
    if nonce is not None and not isinstance(nonce, str):
        raise AttestationError("malformed", "EAR eat_nonce is not a string")
    return EarResult(kid, iat, exp, verifier, submods, nonce, claims)


def _iso(t: datetime.datetime) -> str:
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
