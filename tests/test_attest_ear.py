"""EAR attestation results: AR4SI tiers, the claims set, ES256 JWT signing, every way a token is refused."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from haven.attest import ear
from haven.attest.errors import AttestationError
from haven.errors import KeyFileError

T0 = datetime.datetime(2025, 7, 19, 10, 1, 17, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ear.generate_ear_key()


@pytest.fixture(scope="module")
def jwks(key: ec.EllipticCurvePrivateKey) -> dict[str, ec.EllipticCurvePublicKey]:
    return ear.parse_jwks(json.dumps(ear.jwks_of(key.public_key())).encode())


def _submod(status: ear.Status = "affirming") -> dict[str, Any]:
    return {
        "ear.status": status,
        "ear.trustworthiness-vector": {"instance-identity": 2, "hardware": 2},
        "ear.appraisal-policy-id": "policy:test",
        "ear.veraison.annotated-evidence": {"tee": "sgx", "mrenclave": "00" * 32},
    }


def _claims(**kw: Any) -> dict[str, Any]:
    kw.setdefault("iat", T0)
    kw.setdefault("exp", T0 + HOUR)
    return ear.ear_claims({"sgx": _submod()}, **kw)


def _forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes) -> str:
    h = _b64(json.dumps(header).encode())
    p = _b64(json.dumps(claims).encode())
    return f"{h}.{p}.{_b64(signature)}"


def _es256(key: ec.EllipticCurvePrivateKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A token signed properly over arbitrary header and claims (to test the claim checks)."""
    h = _b64(json.dumps(header).encode())
    p = _b64(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(f"{h}.{p}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{h}.{p}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _refused(kind: str, message: str, token: str, jwks: Any, **kw: Any) -> None:
    kw.setdefault("now", T0 + datetime.timedelta(minutes=5))
    with pytest.raises(AttestationError) as e:
        ear.verify_ear_token(token, jwks, **kw)
    assert e.value.kind == kind, str(e.value)
    assert message in str(e.value)


# -- AR4SI tiers and status -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "tier"),
    [
        (0, "none"),
        (1, "none"),
        (-1, "none"),
        (2, "affirming"),
        (3, "affirming"),
        (31, "affirming"),
        (-2, "affirming"),
        (-32, "affirming"),
        (32, "warning"),
        (33, "warning"),
        (95, "warning"),
        (-33, "warning"),
        (-96, "warning"),
        (96, "contraindicated"),
        (97, "contraindicated"),
        (127, "contraindicated"),
        (-97, "contraindicated"),
    ],
)
def test_tiers(value: int, tier: str) -> None:
    assert ear.tier(value) == tier


def test_status_is_the_worst_tier() -> None:
    assert ear.status_of({}) == "none"
    assert ear.status_of({"configuration": 0}) == "none"
    assert ear.status_of({"instance-identity": 2, "hardware": 2}) == "affirming"
    assert ear.status_of({"instance-identity": 2, "hardware": 32}) == "warning"
    assert ear.status_of({"instance-identity": 2, "hardware": 32, "executables": 96}) == "contraindicated"


# -- claims -----------------------------------------------------------------------------------------------


def test_claims_follow_the_ear_profile() -> None:
    claims = _claims(nonce=b"\x01" * 32)
    assert claims["eat_profile"] == "tag:github.com,2023:veraison/ear"
    assert claims["iat"] == 1752919277 and claims["exp"] == 1752919277 + 3600
    assert claims["ear.verifier-id"]["developer"] == "Haven"
    assert claims["ear.verifier-id"]["build"].startswith("haven ")
    assert claims["submods"]["sgx"]["ear.status"] == "affirming"
    assert _unb64(claims["eat_nonce"]) == b"\x01" * 32


def test_nonce_only_within_eat_bounds() -> None:
    # RFC 9711: a nonce is 8 to 64 bytes; report data outside that is not presented as one.
    assert "eat_nonce" not in _claims(nonce=b"\x01" * 7)
    assert "eat_nonce" in _claims(nonce=b"\x01" * 8)
    assert "eat_nonce" in _claims(nonce=b"\x01" * 64)
    assert "eat_nonce" not in _claims()


def test_claims_must_expire_after_issue() -> None:
    with pytest.raises(ValueError, match="expire after"):
        _claims(exp=T0)


# -- sign and verify --------------------------------------------------------------------------------------


def test_round_trip(key: ec.EllipticCurvePrivateKey, jwks: dict[str, ec.EllipticCurvePublicKey]) -> None:
    token = ear.sign_ear(_claims(nonce=b"n" * 16), key)
    header = json.loads(_unb64(token.split(".")[0]))
    assert header == {"alg": "ES256", "typ": "JWT", "kid": ear.thumbprint(key.public_key())}
    result = ear.verify_ear_token(token, jwks, now=T0 + datetime.timedelta(minutes=30))
    assert result.status == "affirming"
    assert result.kid == header["kid"]
    assert result.iat == T0 and result.exp == T0 + HOUR
    assert result.submods["sgx"].vector == {"instance-identity": 2, "hardware": 2}
    assert result.submods["sgx"].policy_id == "policy:test"
    assert result.submods["sgx"].evidence == {"tee": "sgx", "mrenclave": "00" * 32}
    assert result.nonce == _b64(b"n" * 16)
    assert result.claims["submods"]["sgx"]["ear.status"] == "affirming"
    # bytes and surrounding whitespace are accepted as well
    assert ear.verify_ear_token(f"  {token}\n".encode(), jwks, now=T0).kid == result.kid


def test_key_set_forms(key: ec.EllipticCurvePrivateKey) -> None:
    token = ear.sign_ear(_claims(), key)
    doc = ear.jwks_of(key.public_key())
    kid = ear.thumbprint(key.public_key())
    for form in (doc, json.dumps(doc), json.dumps(doc).encode(), doc["keys"][0], {kid: key.public_key()}):
        assert ear.verify_ear_token(token, form, now=T0).kid == kid
    with pytest.raises(KeyFileError, match="maps key IDs to EC public keys"):
        ear.verify_ear_token(token, {kid: "not a key"}, now=T0)


def test_worst_submod_is_the_token_status(key: ec.EllipticCurvePrivateKey, jwks: Any) -> None:
    claims = ear.ear_claims({"a": _submod("affirming"), "b": _submod("warning")}, iat=T0, exp=T0 + HOUR)
    assert ear.verify_ear_token(ear.sign_ear(claims, key), jwks, now=T0).status == "warning"


def test_kid_is_the_rfc7638_thumbprint(key: ec.EllipticCurvePrivateKey) -> None:
    jwk = ear.public_jwk(key.public_key())
    canonical = json.dumps(
        {k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True
    )
    assert jwk["kid"] == _b64(hashlib.sha256(canonical.encode()).digest())
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("EC", "P-256", "ES256", "sig")
    assert "d" not in jwk


def test_sign_needs_p256() -> None:
    with pytest.raises(KeyFileError, match="P-256"):
        ear.sign_ear(_claims(), ec.generate_private_key(ec.SECP384R1()))


def test_tampered_payload(key: ec.EllipticCurvePrivateKey, jwks: Any) -> None:
    token = ear.sign_ear(_claims(), key)
    h, p, s = token.split(".")
    claims = json.loads(_unb64(p))
    claims["submods"]["sgx"]["ear.status"] = "affirming"
    claims["submods"]["sgx"]["ear.trustworthiness-vector"]["executables"] = 2
    forged = f"{h}.{_b64(json.dumps(claims).encode())}.{s}"
    _refused("signature", "does not verify", forged, jwks)


@pytest.mark.parametrize("part", [0, 1, 2])
def test_any_flipped_character_is_refused(key: ec.EllipticCurvePrivateKey, jwks: Any, part: int) -> None:
    token = ear.sign_ear(_claims(), key)
    parts = token.split(".")
    for i in range(0, len(parts[part]), 7):
        changed = list(parts)
        c = changed[part][i]
        changed[part] = changed[part][:i] + ("A" if c != "A" else "B") + changed[part][i + 1 :]
        with pytest.raises(AttestationError) as e:
            ear.verify_ear_token(".".join(changed), jwks, now=T0)
        assert e.value.kind in ("signature", "malformed")


def test_wrong_key(key: ec.EllipticCurvePrivateKey) -> None:
    other = ear.generate_ear_key()
    token = ear.sign_ear(_claims(), other)
    jwks = ear.parse_jwks(json.dumps(ear.jwks_of(key.public_key())).encode())
    _refused("signature", "not in the key set", token, jwks)
    # The same token, relabelled with the trusted key's kid, fails the signature instead.
    _, p, s = token.split(".")
    header = {"alg": "ES256", "typ": "JWT", "kid": ear.thumbprint(key.public_key())}
    _refused("signature", "does not verify", f"{_b64(json.dumps(header).encode())}.{p}.{s}", jwks)


def test_alg_none_is_refused(jwks: Any) -> None:
    token = _forge({"alg": "none", "typ": "JWT"}, _claims(), b"")
    _refused("signature", "'none' is refused", token, jwks)
    _refused("signature", "'none' is refused", token[: token.rindex(".") + 1], jwks)


@pytest.mark.parametrize("alg", ["HS256", "RS256", "ES384", "PS256", "EdDSA", None, 1])
def test_other_algorithms_are_refused(key: ec.EllipticCurvePrivateKey, jwks: Any, alg: Any) -> None:
    header = {"typ": "JWT", "kid": ear.thumbprint(key.public_key())}
    if alg is not None:
        header["alg"] = alg
    _refused("signature", "only ES256", _es256(key, header, _claims()), jwks)


def test_hmac_key_confusion_is_refused(key: ec.EllipticCurvePrivateKey, jwks: Any) -> None:
    # The classic attack: HS256 keyed with the verifier's public key, which the attacker knows.
    public = json.dumps(ear.public_jwk(key.public_key())).encode()
    h = _b64(json.dumps({"alg": "HS256", "kid": ear.thumbprint(key.public_key())}).encode())
    p = _b64(json.dumps(_claims()).encode())
    mac = hmac.new(public, f"{h}.{p}".encode(), "sha256").digest()
    _refused("signature", "only ES256", f"{h}.{p}.{_b64(mac)}", jwks)


def test_expired(key: ec.EllipticCurvePrivateKey, jwks: Any) -> None:
    token = ear.sign_ear(_claims(), key)
    ear.verify_ear_token(token, jwks, now=T0 + HOUR)  # within the 60 s leeway
    _refused(
        "expired",
        "expired at 2025-07-19T11:01:17Z",
        token,
        jwks,
        now=T0 + HOUR + datetime.timedelta(seconds=61),
    )
    _refused("expired", "expired", token, jwks, now=T0 + HOUR, leeway=datetime.timedelta(0))


def test_issued_in_the_future(key: ec.EllipticCurvePrivateKey, jwks: Any) -> None:
    token = ear.sign_ear(_claims(), key)
    _refused(
        "not-yet-valid", "issued at 2025-07-19T10:01:17Z", token, jwks, now=T0 - datetime.timedelta(minutes=2)
    )
    ear.verify_ear_token(token, jwks, now=T0 - datetime.timedelta(seconds=30))


def test_not_before(key: ec.EllipticCurvePrivateKey, jwks: Any) -> None:
    claims = {**_claims(), "nbf": int((T0 + HOUR / 2).timestamp())}
    token = ear.sign_ear(claims, key)
    _refused("not-yet-valid", "not valid before", token, jwks, now=T0)
    ear.verify_ear_token(token, jwks, now=T0 + HOUR / 2)


def test_times_are_required_and_typed(key: ec.EllipticCurvePrivateKey, jwks: Any) -> None:
    no_exp = ear.ear_claims({"sgx": _submod()}, iat=T0)
    _refused("malformed", "no exp", ear.sign_ear(no_exp, key), jwks)
    assert ear.verify_ear_token(ear.sign_ear(no_exp, key), jwks, now=T0, require_exp=False).exp is None
    no_iat = {k: v for k, v in _claims().items() if k != "iat"}
    _refused("malformed", "no iat", ear.sign_ear(no_iat, key), jwks)
    for bad in ("2025-07-19", True, [1], 1e300):
        _refused("malformed", "'iat'", ear.sign_ear({**_claims(), "iat": bad}, key), jwks)


def test_kid_selection(key: ec.EllipticCurvePrivateKey) -> None:
    other = ear.generate_ear_key()
    token = ear.sign_ear(_claims(), key)
    h, p, _ = token.split(".")
    no_kid = _es256(key, {"alg": "ES256"}, json.loads(_unb64(p)))
    one = ear.parse_jwks(json.dumps(ear.jwks_of(key.public_key())).encode())
    two = ear.parse_jwks(json.dumps(ear.jwks_of(other.public_key(), key.public_key())).encode())
    assert ear.verify_ear_token(token, two, now=T0).kid == ear.thumbprint(key.public_key())
    assert ear.verify_ear_token(no_kid, one, now=T0).kid == ear.thumbprint(key.public_key())
    _refused("signature", "None is not in the key set", no_kid, two)
    assert h  # the header was signed as produced


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("abc", "compact"),
        ("a.b", "compact"),
        ("a.b.c.d", "compact"),
        ("!!!.e30.AAAA", "base64url"),
        ("e30=.e30.AAAA", "base64url"),
        ("A.e30.AAAA", "base64url"),
        (_b64(b"not json") + ".e30.AAAA", "not JSON"),
        (_b64(b"[1, 2]") + ".e30.AAAA", "not a JSON object"),
        (_b64(b'{"alg": "ES256", "alg": "none"}') + ".e30.AAAA", "twice"),
        (_b64(b'{"alg": "ES256", "crit": ["x"]}') + ".e30.AAAA", "critical"),
        ("\u00e9.e30.AAAA", "base64url"),
    ],
)
def test_malformed_tokens(jwks: Any, token: str, message: str) -> None:
    _refused("malformed", message, token, jwks)


def test_non_ascii_bytes(jwks: Any) -> None:
    _refused("malformed", "not ASCII", b"\xff.\xfe.\xfd", jwks)  # type: ignore[arg-type]


def test_oversized_token(jwks: Any) -> None:
    _refused("malformed", "longer than", "a" * (ear.MAX_TOKEN + 1), jwks)


def test_signature_length(key: ec.EllipticCurvePrivateKey, jwks: Any) -> None:
    h, p, s = ear.sign_ear(_claims(), key).split(".")
    _refused("signature", "64 bytes, not 63", f"{h}.{p}.{_b64(_unb64(s)[:63])}", jwks)
    # DER instead of the fixed R||S form (a common encoding mistake) is refused too.
    der = key.sign(f"{h}.{p}".encode(), ec.ECDSA(hashes.SHA256()))
    _refused("signature", "64 bytes", f"{h}.{p}.{_b64(der)}", jwks)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"eat_profile": "tag:example.com,2023:other"}, "eat_profile"),
        ({"ear.verifier-id": "haven"}, "verifier-id"),
        ({"ear.verifier-id": {"developer": "Haven"}}, "verifier-id"),
        ({"submods": {}}, "submods"),
        ({"submods": []}, "submods"),
        ({"submods": {"sgx": "affirming"}}, "not an object"),
        ({"submods": {"sgx": {"ear.status": "fine"}}}, "ear.status 'fine'"),
        ({"submods": {"sgx": {"ear.status": "affirming", "ear.trustworthiness-vector": []}}}, "vector"),
        (
            {"submods": {"sgx": {"ear.status": "affirming", "ear.trustworthiness-vector": {"cpu": 2}}}},
            "'cpu'",
        ),
        (
            {
                "submods": {
                    "sgx": {"ear.status": "affirming", "ear.trustworthiness-vector": {"hardware": 200}}
                }
            },
            "-128..127",
        ),
        (
            {
                "submods": {
                    "sgx": {"ear.status": "affirming", "ear.trustworthiness-vector": {"hardware": True}}
                }
            },
            "integer",
        ),
        ({"submods": {"sgx": {"ear.status": "none", "ear.appraisal-policy-id": 7}}}, "policy-id"),
        ({"submods": {"sgx": {"ear.status": "none", "ear.veraison.annotated-evidence": "x"}}}, "annotated"),
        ({"eat_nonce": 5}, "eat_nonce"),
    ],
)
def test_claim_checks(
    key: ec.EllipticCurvePrivateKey, jwks: Any, change: dict[str, Any], message: str
) -> None:
    token = _es256(key, {"alg": "ES256", "kid": ear.thumbprint(key.public_key())}, {**_claims(), **change})
    _refused("malformed", message, token, jwks)


# -- key sets and key files -------------------------------------------------------------------------------


def test_jwks_accepts_a_single_jwk(key: ec.EllipticCurvePrivateKey) -> None:
    jwk = ear.public_jwk(key.public_key())
    assert list(ear.parse_jwks(json.dumps(jwk).encode())) == [jwk["kid"]]
    bare = {k: jwk[k] for k in ("kty", "crv", "x", "y")}  # no kid: the thumbprint is used
    assert list(ear.parse_jwks(json.dumps(bare).encode())) == [jwk["kid"]]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda j: {**j, "d": "AAAA"}, "private key"),
        (lambda j: {**j, "kty": "RSA"}, "not a P-256 EC key"),
        (lambda j: {**j, "crv": "P-384"}, "not a P-256 EC key"),
        (lambda j: {**j, "alg": "ES384"}, "ES256"),
        (lambda j: {**j, "use": "enc"}, "ES256"),
        (lambda j: {k: v for k, v in j.items() if k != "y"}, "'y' is missing"),
        (lambda j: {**j, "x": "!!"}, "not base64url"),
        (lambda j: {**j, "x": _b64(b"\x01" * 31)}, "31 bytes"),
        (lambda j: {**j, "y": _b64(b"\x01" * 32)}, "not on P-256"),
        (lambda j: {**j, "kid": 7}, "kid must be a string"),
        (lambda j: [j], "JSON object"),
    ],
)
def test_bad_jwks(key: ec.EllipticCurvePrivateKey, mutate: Any, message: str) -> None:
    jwk = ear.public_jwk(key.public_key())
    with pytest.raises(KeyFileError, match=message):
        ear.parse_jwks(json.dumps({"keys": [mutate(jwk)]}).encode())


def test_bad_jwks_documents(key: ec.EllipticCurvePrivateKey) -> None:
    jwk = ear.public_jwk(key.public_key())
    for doc, message in (
        (b"{", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"keys": []}', "non-empty"),
        (b'{"keys": {}}', "non-empty"),
        (json.dumps({"keys": [jwk, jwk]}).encode(), "used twice"),
    ):
        with pytest.raises(KeyFileError, match=message):
            ear.parse_jwks(doc)


def test_key_files(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path = tmp_path / "ear.pem"
    ear.save_ear_key(key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ear.load_ear_key(path).private_numbers() == key.private_numbers()
    with pytest.raises(KeyFileError, match="already exists"):
        ear.save_ear_key(key, path)
    with pytest.raises(KeyFileError, match="cannot write"):
        ear.save_ear_key(key, tmp_path / "missing" / "k.pem")


def test_bad_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        ear.load_ear_key(tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(KeyFileError, match="not an unencrypted PEM"):
        ear.load_ear_key(tmp_path / "junk.pem")
    for name, other in (
        ("p384.pem", ec.generate_private_key(ec.SECP384R1())),
        ("rsa.pem", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    ):
        (tmp_path / name).write_bytes(
            other.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        with pytest.raises(KeyFileError, match="not a P-256 EC key"):
            ear.load_ear_key(tmp_path / name)
