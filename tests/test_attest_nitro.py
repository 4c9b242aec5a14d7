"""AWS Nitro attestation documents: real documents, a Nitro-shaped test PKI, mutations, fuzzing."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from haven.attest.errors import AttestationError
from haven.attest.nitro import parse_nitro_document, verify_nitro
from tests.conftest import VECTORS

DOC_TIME = dt.datetime(2024, 9, 7, 14, 37, 39, 545000, tzinfo=dt.UTC)
DEBUG_TIME = dt.datetime(2024, 9, 7, 14, 38, 6, 508000, tzinfo=dt.UTC)


def _vector(name: str) -> bytes:
    path = VECTORS / "nitro" / "blocky-nitrite" / name
    if not path.is_file():
        pytest.skip(f"attestation vectors not found at {VECTORS}")
    return path.read_bytes()


@pytest.fixture(scope="module")
def doc_b64() -> bytes:
    return _vector("nitro_attestation.b64")


@pytest.fixture(scope="module")
def doc_raw(doc_b64) -> bytes:
    return base64.b64decode(doc_b64)


def refused(document: bytes, **kw) -> AttestationError:
    with pytest.raises(AttestationError) as e:
        verify_nitro(document, **kw)
    return e.value


# ---- the README's sets -------------------------------------------------------------------------------


def test_real_document(doc_b64, doc_raw):
    ev = verify_nitro(doc_b64, now=DOC_TIME)
    assert ev.tee == "nitro" and ev.tcb_status == "UpToDate" and ev.advisory_ids == ()
    assert ev.root == "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US"
    assert ev.debug is False
    assert sorted(ev.measurements) == sorted(f"pcr{i}" for i in range(16))
    assert ev.measurements["pcr0"].startswith("e72a46ca80a260fb044a")
    assert ev.measurements["pcr3"] == "00" * 48
    assert ev.claims["module_id"] == "i-0a22e5c5f24d22174-enc0191cceb4289903f"
    assert ev.claims["timestamp"] == 1725719859545
    assert ev.claims["time"] == "2024-09-07T14:37:39.545Z"
    assert ev.claims["digest"] == "SHA384"
    assert ev.claims["nonce"] == "01" * 1024 and ev.claims["public_key"] == "01" * 1024
    assert ev.report_data == b"\x01" * 1024  # user_data
    # the leaf is valid for three hours around the document's time
    assert ev.valid_from == dt.datetime(2024, 9, 7, 14, 37, 36, tzinfo=dt.UTC)
    assert ev.valid_until == dt.datetime(2024, 9, 7, 17, 37, 39, tzinfo=dt.UTC)
    # raw bytes and hex verify the same
    assert verify_nitro(doc_raw, now=DOC_TIME) == ev
    assert verify_nitro(doc_raw.hex().encode(), now=DOC_TIME) == ev


def test_real_debug_document():
    ev = verify_nitro(_vector("nitro_attestation_debug.b64"), now=DEBUG_TIME)
    assert ev.debug is True  # PCR0-2 zero: reported, refused only by the appraisal policy
    assert ev.measurements["pcr0"] == ev.measurements["pcr1"] == ev.measurements["pcr2"] == "00" * 48


def test_time_is_a_parameter_and_defaults_to_now(doc_b64):
    assert refused(doc_b64).kind == "expired"  # the leaf expired in 2024
    assert refused(doc_b64, now=dt.datetime(2024, 9, 7, 14, 37, 35, tzinfo=dt.UTC)).kind == "not-yet-valid"
    assert refused(doc_b64, now=dt.datetime(2024, 9, 7, 17, 37, 40, tzinfo=dt.UTC)).kind == "expired"


def test_other_root_refused(doc_b64):
    other = NitroPki().root.cert
    assert refused(doc_b64, roots=[other], now=DOC_TIME).kind == "chain"


# ---- mutations of the real document ------------------------------------------------------------------


def _walk(buf: bytes, at: int, path: str, out: list[tuple[str, int, int]]) -> int:
    """A small definite-length CBOR walker: records (path, start, end) of every string's content."""
    major, info = buf[at] >> 5, buf[at] & 0x1F
    at += 1
    if info < 24:
        arg = info
    else:
        size = 1 << (info - 24)
        arg, at = int.from_bytes(buf[at : at + size], "big"), at + size
    if major in (2, 3):
        out.append((path, at, at + arg))
        return at + arg
    if major == 4:
        for i in range(arg):
            at = _walk(buf, at, f"{path}[{i}]", out)
        return at
    if major == 5:
        for _ in range(arg):
            key_start = at
            at = _walk(buf, at, f"{path}.key", out)
            key = cbor2.loads(buf[key_start:at])
            at = _walk(buf, at, f"{path}.{key}", out)
        return at
    if major in (0, 1):
        out.append((path, at - (0 if info < 24 else 1 << (info - 24)), at))
    return at


def _kind(raw: bytes, offset: int) -> str:
    b = bytearray(raw)
    b[offset] ^= 0xFF
    with pytest.raises(AttestationError) as e:
        verify_nitro(bytes(b), now=DOC_TIME)
    return e.value.kind


def test_protected_header_flips_are_malformed(doc_raw):
    protected = cbor2.loads(doc_raw)[0]
    start = doc_raw.index(protected)
    assert protected == bytes.fromhex("a1013822")  # {1: -35}
    for offset in range(start - 1, start + len(protected)):  # its byte-string header too
        assert _kind(doc_raw, offset) == "malformed", offset


def test_signature_flips_fail_the_signature(doc_raw):
    signature = cbor2.loads(doc_raw)[3]
    start = len(doc_raw) - len(signature)
    assert doc_raw[start:] == signature
    for offset in range(start, len(doc_raw), 5):
        assert _kind(doc_raw, offset) == "signature", offset


def test_payload_flips(doc_raw):
    """Flips spread over the payload: never accepted; where each kind of verdict applies:

    - inside PCR values, public_key, user_data, nonce and the timestamp's value: the parser has nothing
      to object to, so the signature check refuses (``signature``);
    - inside the digest text: "SHA384" is required (``malformed``);
    - inside certificates, module_id, and CBOR headers: either the parser refuses (a certificate that no
      longer decodes, invalid UTF-8, a broken structure) or the signature does.
    """
    payload = cbor2.loads(doc_raw)[2]
    base = doc_raw.index(payload)
    regions: list[tuple[str, int, int]] = []
    assert _walk(payload, 0, "", regions) == len(payload)

    def region(offset: int) -> str:
        for path, lo, hi in regions:
            if lo <= offset < hi:
                return path
        return "header"

    step = max(1, len(payload) // 400)
    seen = {"signature": 0, "malformed": 0}
    for offset in range(0, len(payload), step):
        where = region(offset)
        kind = _kind(doc_raw, base + offset)
        seen[kind] += 1
        if where.startswith(".pcrs.") or where in (".public_key", ".user_data", ".nonce", ".timestamp"):
            assert kind == "signature", (offset, where)
        elif where == ".digest":
            assert kind == "malformed", (offset, where)
        else:
            assert kind in ("signature", "malformed"), (offset, where, kind)
    assert sum(seen.values()) >= 300
    assert seen["signature"] > 100 and seen["malformed"] > 10


# ---- a Nitro-shaped PKI: tagged and indefinite-length documents, and every parser check ----------------

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
NOW = T0 + dt.timedelta(hours=1)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class _Node:
    key: Any
    cert: x509.Certificate

    def __init__(self, cn: str, issuer: _Node | None, *, ca: bool, key=None) -> None:
        self.key = key or ec.generate_private_key(ec.SECP384R1())
        b = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(issuer.cert.subject if issuer else _name(cn))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(T0)
            .not_valid_after(T0 + dt.timedelta(hours=3 if not ca else 24 * 365))
        )
        if ca:
            b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        self.cert = b.sign((issuer or self).key, hashes.SHA384())

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(Encoding.DER)


class NitroPki:
    def __init__(self) -> None:
        self.root = _Node("test.nitro-enclaves", None, ca=True)
        self.zonal = _Node("zonal.test.nitro-enclaves", self.root, ca=True)
        self.leaf = _Node("i-test.enclave", self.zonal, ca=False)

    def payload(self, **changes) -> dict[str, Any]:
        fields = {
            "module_id": "i-test-enc01",
            "digest": "SHA384",
            "timestamp": int(NOW.timestamp() * 1000),
            "pcrs": {i: bytes([i]) * 48 for i in range(16)},
            "certificate": self.leaf.der,
            "cabundle": [self.root.der, self.zonal.der],
            "public_key": None,
            "user_data": b"binding",
            "nonce": b"\x00" * 32,
        }
        for key, value in changes.items():
            if value is _DROP:
                del fields[key]
            else:
                fields[key] = value
        return fields

    def document(
        self,
        payload: dict[str, Any] | bytes | None = None,
        *,
        protected: bytes = b"\xa1\x01\x38\x22",
        unprotected: dict[int, Any] | None = None,
        tagged: bool = False,
        indefinite: bool = False,
        key=None,
        signature: bytes | None = None,
    ) -> bytes:
        if not isinstance(payload, bytes):
            payload = cbor2.dumps(
                self.payload() if payload is None else payload, indefinite_containers=indefinite
            )
        to_sign = cbor2.dumps(["Signature1", protected, b"", payload])
        if signature is None:
            r, s = decode_dss_signature((key or self.leaf.key).sign(to_sign, ec.ECDSA(hashes.SHA384())))
            signature = r.to_bytes(48, "big") + s.to_bytes(48, "big")
        body = [protected, unprotected or {}, payload, signature]
        return cbor2.dumps(cbor2.CBORTag(18, body) if tagged else body, indefinite_containers=indefinite)

    def verify(self, document: bytes):
        return verify_nitro(document, roots=[self.root.cert], now=NOW)

    def malformed(self, document: bytes) -> str:
        with pytest.raises(AttestationError) as e:
            self.verify(document)
        assert e.value.kind == "malformed", str(e.value)
        return str(e.value)


_DROP = object()


@pytest.fixture(scope="module")
def pki() -> NitroPki:
    return NitroPki()


def test_synthetic_document_forms(pki):
    ev = pki.verify(pki.document())
    assert ev.root == "CN=test.nitro-enclaves"
    assert ev.report_data == b"binding" and ev.claims["public_key"] is None
    assert ev.valid_until == T0 + dt.timedelta(hours=3)
    assert pki.verify(pki.document(tagged=True)) == ev  # COSE_Sign1 tag 18 (0xD2)
    # indefinite-length arrays and maps, inside and out
    indefinite = pki.document(indefinite=True)
    assert indefinite[0] == 0x9F
    assert pki.verify(indefinite).measurements == ev.measurements
    assert pki.verify(pki.document(pki.payload(extra="ignored"))).claims["module_id"] == "i-test-enc01"
    assert pki.verify(pki.document(pki.payload(user_data=_DROP, nonce=_DROP))).report_data == b""
    assert pki.verify(pki.document(unprotected={4: b"kid"}))  # unprotected headers other than alg


def test_debug_mode(pki):
    zero = bytes(48)
    pcrs = {i: bytes([i + 1]) * 48 for i in range(16)}
    assert pki.verify(pki.document(pki.payload(pcrs=pcrs | {0: zero, 1: zero, 2: zero}))).debug is True
    assert pki.verify(pki.document(pki.payload(pcrs=pcrs | {0: zero, 1: zero}))).debug is False


def test_signature_and_chain_failures(pki):
    other = ec.generate_private_key(ec.SECP384R1())
    assert refused(pki.document(key=other), roots=[pki.root.cert], now=NOW).kind == "signature"
    # the leaf's key is not P-384
    p256 = _Node("i-p256.enclave", pki.zonal, ca=False, key=ec.generate_private_key(ec.SECP256R1()))
    doc = pki.document(pki.payload(certificate=p256.der), signature=bytes(96))
    e = refused(doc, roots=[pki.root.cert], now=NOW)
    assert (e.kind, "P-384" in str(e)) == ("signature", True)
    # a leaf from another PKI, signing correctly
    stranger = NitroPki()
    doc = pki.document(pki.payload(certificate=stranger.leaf.der), key=stranger.leaf.key)
    assert refused(doc, roots=[pki.root.cert], now=NOW).kind in ("chain", "signature")
    # the cabundle misses the zonal CA
    doc = pki.document(pki.payload(cabundle=[pki.root.der]))
    assert refused(doc, roots=[pki.root.cert], now=NOW).kind == "chain"
    # the pinned AWS root by default
    assert refused(pki.document(), now=NOW).kind == "chain"


@pytest.mark.parametrize(
    ("changes", "word"),
    [
        ({"module_id": _DROP}, "module_id"),
        ({"module_id": ""}, "module_id"),
        ({"module_id": b"bytes"}, "module_id"),
        ({"digest": "SHA256"}, "digest"),
        ({"digest": _DROP}, "digest"),
        ({"timestamp": _DROP}, "timestamp"),
        ({"timestamp": 0}, "timestamp"),
        ({"timestamp": -5}, "timestamp"),
        ({"timestamp": True}, "timestamp"),
        ({"timestamp": 1.5e12}, "timestamp"),
        ({"timestamp": "1725719859545"}, "timestamp"),
        ({"pcrs": _DROP}, "pcrs"),
        ({"pcrs": {}}, "pcrs"),
        ({"pcrs": [bytes(48)] * 3}, "pcrs"),
        ({"pcrs": {i: bytes(48) for i in range(33)}}, "pcrs"),
        ({"pcrs": {0: bytes(48), 1: bytes(48), 2: bytes(48), 32: bytes(48)}}, "index"),
        ({"pcrs": {0: bytes(48), 1: bytes(48), 2: bytes(48), -1: bytes(48)}}, "index"),
        ({"pcrs": {0: bytes(48), 1: bytes(48), 2: bytes(48), "3": bytes(48)}}, "index"),
        ({"pcrs": {0: bytes(48), 1: bytes(48), 2: bytes(32)}}, "PCR2"),
        ({"pcrs": {0: bytes(48), 1: bytes(48), 2: "00" * 48}}, "PCR2"),
        ({"pcrs": {0: bytes(48), 1: bytes(48), 3: bytes(48)}}, "PCR2"),
        ({"certificate": _DROP}, "certificate"),
        ({"certificate": b""}, "certificate"),
        ({"certificate": b"\x30\x03\x02\x01\x01"}, "certificate"),
        ({"certificate": b"\x30" * 1025}, "certificate"),
        ({"cabundle": _DROP}, "cabundle"),
        ({"cabundle": []}, "cabundle"),
        ({"cabundle": b"x"}, "cabundle"),
        ({"cabundle": [b"junk"]}, "cabundle[0]"),
        ({"cabundle": [b"c"] * 8}, "cabundle"),
        ({"user_data": b"u" * 1025}, "user_data"),
        ({"nonce": "text"}, "nonce"),
        ({"public_key": 5}, "public_key"),
    ],
)
def test_payload_field_checks(pki, changes, word):
    assert word in pki.malformed(pki.document(pki.payload(**changes)))


def test_certificate_of_an_unknown_version(pki):
    der = pki.leaf.der
    at = der.index(b"\xa0\x03\x02\x01\x02") + 4  # [0] EXPLICIT version INTEGER 2 (v3)
    v9 = der[:at] + b"\x08" + der[at + 1 :]
    assert "certificate" in pki.malformed(pki.document(pki.payload(certificate=v9)))
    assert "cabundle[1]" in pki.malformed(pki.document(pki.payload(cabundle=[pki.root.der, v9])))


def test_envelope_checks(pki):
    good = pki.document()
    payload = cbor2.dumps(pki.payload())
    assert "tag 17" in pki.malformed(cbor2.dumps(cbor2.CBORTag(17, cbor2.loads(good))))
    assert "four" in pki.malformed(cbor2.dumps(cbor2.loads(good)[:3]))
    assert "four" in pki.malformed(cbor2.dumps({"not": "an array"}))
    assert "after" in pki.malformed(good + b"\x00")
    assert "after" in pki.malformed(pki.document(payload + b"\x00"))
    assert "ES384" in pki.malformed(pki.document(protected=cbor2.dumps({1: -7})))  # ES256
    assert "ES384" in pki.malformed(pki.document(protected=cbor2.dumps({})))
    assert "ES384" in pki.malformed(pki.document(protected=cbor2.dumps({1: -35.0})))
    assert "ES384" in pki.malformed(pki.document(protected=cbor2.dumps({1: "ES384"})))
    assert "labels" in pki.malformed(pki.document(protected=cbor2.dumps({True: -35})))
    assert "critical" in pki.malformed(pki.document(protected=cbor2.dumps({1: -35, 2: [4]})))
    assert "critical" in pki.malformed(pki.document(unprotected={1: -7}))
    assert "protected" in pki.malformed(pki.document(protected=b"\xa1\x01"))  # truncated CBOR
    assert "96" in pki.malformed(pki.document(signature=bytes(95)))
    assert "map" in pki.malformed(pki.document(b"\x80"))  # payload is an empty array
    assert "key" in pki.malformed(pki.document(cbor2.dumps({**pki.payload(), 7: 1})))
    dup = (
        b"\xa2"
        + cbor2.dumps("digest")
        + cbor2.dumps("SHA384")
        + cbor2.dumps("digest")
        + cbor2.dumps("SHA384")
    )
    assert "CBOR" in pki.malformed(pki.document(dup))  # duplicate keys
    body = cbor2.loads(good)
    assert "byte strings" in pki.malformed(cbor2.dumps([body[0], body[1], "text payload", body[3]]))
    assert "unprotected" in pki.malformed(cbor2.dumps([body[0], [], body[2], body[3]]))
    deep = b"\x81" * 100 + b"\x00"
    assert "CBOR" in pki.malformed(deep)


# ---- fuzzing -----------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_fuzz_parse_arbitrary_bytes(data):
    with pytest.raises(AttestationError) as e:
        parse_nitro_document(data)
    assert e.value.kind == "malformed"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7538), st.integers(1, 255)), min_size=1, max_size=6))
def test_fuzz_mutated_real_document(doc_raw, flips):
    b = bytearray(doc_raw)
    for offset, xor in flips:
        b[offset] ^= xor
    if bytes(b) == doc_raw:
        return  # the flips cancelled out
    with pytest.raises(AttestationError):
        verify_nitro(bytes(b), now=DOC_TIME)


_CBOR_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.binary(max_size=64)
    | st.text(max_size=16)
    | st.sampled_from(["SHA384", "module_id", "pcrs", "cabundle", "certificate", "timestamp", -35, 1, 18])
)
_CBOR = st.recursive(
    _CBOR_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=12) | st.integers(-40, 40), inner, max_size=6)
        | st.builds(cbor2.CBORTag, st.sampled_from([1, 2, 18, 24, 55799]), inner)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(_CBOR, _CBOR, st.booleans())
def test_fuzz_structured_cbor(pki, header, payload, indefinite):
    try:
        protected = cbor2.dumps(header, indefinite_containers=indefinite)
        body = cbor2.dumps(payload, indefinite_containers=indefinite)
    except (cbor2.CBOREncodeError, ValueError, TypeError):
        return  # not every generated value is encodable (tags whose content does not fit them)
    for doc in (
        cbor2.dumps([protected, {}, body, bytes(96)]),
        pki.document(body),
        cbor2.dumps(payload),
    ):
        try:
            parse_nitro_document(doc)
        except AttestationError as e:
            assert e.kind == "malformed"


_FIELDS = [
    "module_id",
    "digest",
    "timestamp",
    "pcrs",
    "certificate",
    "cabundle",
    "public_key",
    "user_data",
    "nonce",
]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(_FIELDS), _CBOR | st.just(_DROP), max_size=3))
def test_fuzz_payload_fields(pki, changes):
    """A signed document whose fields are replaced by anything: accepted only with the right types."""
    try:
        doc = pki.document(pki.payload(**changes))
    except (cbor2.CBOREncodeError, ValueError, TypeError):
        return
    try:
        pki.verify(doc)
    except AttestationError as e:
        assert e.kind in ("malformed", "signature", "chain", "expired", "not-yet-valid")


def test_naive_time_is_a_programming_error(doc_b64):
    with pytest.raises(ValueError, match="timezone"):
        verify_nitro(doc_b64, now=dt.datetime(2024, 9, 7, 14, 37, 40))
