"""Collateral in Intel's formats: TCB Info v3, QE Identity v2, CRLs; dcap-qvl JSON and PCS files."""

from __future__ import annotations

import datetime
import json
from dataclasses import fields
from pathlib import Path

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from haven.errors import FormatError
from haven.tee.sgx.quote import ecdsa_raw_to_der
from haven.tee.sim.collateral import PCS_FILES, VALIDITY, Collateral, platform_collateral
from haven.tee.sim.pki import SimPki, platform_pki
from haven.tee.sim.platform import DEFAULT_CPUSVN, DEFAULT_PCESVN, SimPlatform, TcbLevel
from tests.sim_quote_support import make_platform

NOW = datetime.datetime(2026, 3, 1, 12, 30, 45, 999, tzinfo=datetime.UTC)
LEVELS = (
    TcbLevel(
        tuple(bytes([14, 14, 4, 4, 255, 1, 13]) + bytes(9)), 14, "UpToDate", tcb_date="2025-11-12T00:00:00Z"
    ),
    TcbLevel(tuple(DEFAULT_CPUSVN), DEFAULT_PCESVN, "OutOfDate", ("INTEL-SA-01010", "INTEL-SA-00615")),
)


@pytest.fixture
def platform(platform_path: Path) -> SimPlatform:
    return make_platform(platform_path, tcb_levels=LEVELS, tcb_evaluation_data_number=19)


@pytest.fixture
def pki(platform: SimPlatform) -> SimPki:
    return platform_pki(platform)


@pytest.fixture
def collateral(platform: SimPlatform, pki: SimPki) -> Collateral:
    return platform_collateral(platform, NOW, pki=pki)


def _verify(cert: x509.Certificate, raw_signature: bytes, text: str) -> None:
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(ecdsa_raw_to_der(raw_signature), text.encode(), ec.ECDSA(hashes.SHA256()))


def test_tcb_info_v3(collateral: Collateral, platform: SimPlatform) -> None:
    doc = json.loads(collateral.tcb_info)
    assert list(doc) == [
        "id",
        "version",
        "issueDate",
        "nextUpdate",
        "fmspc",
        "pceId",
        "tcbType",
        "tcbEvaluationDataNumber",
        "tcbLevels",
    ]
    assert (doc["id"], doc["version"], doc["tcbType"], doc["tcbEvaluationDataNumber"]) == ("SGX", 3, 0, 19)
    assert (doc["issueDate"], doc["nextUpdate"]) == ("2026-03-01T12:30:45Z", "2026-03-31T12:30:45Z")
    assert doc["fmspc"] == platform.config.fmspc.hex().upper() and doc["pceId"] == "0000"
    newest, ours = doc["tcbLevels"]
    assert newest == {
        "tcb": {"sgxtcbcomponents": [{"svn": s} for s in LEVELS[0].sgx_components], "pcesvn": 14},
        "tcbDate": "2025-11-12T00:00:00Z",
        "tcbStatus": "UpToDate",
    }
    assert ours["tcbStatus"] == "OutOfDate" and ours["advisoryIDs"] == ["INTEL-SA-01010", "INTEL-SA-00615"]
    assert ours["tcb"]["sgxtcbcomponents"] == [{"svn": s} for s in DEFAULT_CPUSVN]
    assert collateral.tcb_info == json.dumps(doc, separators=(",", ":"))  # compact, as Intel serves it


def test_qe_identity_v2_is_shaped_like_intels(
    collateral: Collateral, platform: SimPlatform, vectors: Path
) -> None:
    doc = json.loads(collateral.qe_identity)
    intel = json.loads(
        json.loads((vectors / "sgx/dcap-qvl/sgx_quote_collateral.json").read_text())["qe_identity"]
    )
    assert list(doc) == list(intel)
    for key in ("id", "version", "miscselect", "miscselectMask", "attributes", "attributesMask", "isvprodid"):
        assert doc[key] == intel[key], key
    assert doc["mrsigner"] == platform.qe_mrsigner().hex().upper()
    assert doc["tcbLevels"] == [
        {"tcb": {"isvsvn": platform.config.qe_isvsvn}, "tcbDate": LEVELS[0].tcb_date, "tcbStatus": "UpToDate"}
    ]
    assert (doc["issueDate"], doc["tcbEvaluationDataNumber"]) == ("2026-03-01T12:30:45Z", 19)


def test_signatures_cover_the_exact_json_text(collateral: Collateral, pki: SimPki) -> None:
    _verify(pki.tcb_signing_cert, collateral.tcb_info_signature, collateral.tcb_info)
    _verify(pki.tcb_signing_cert, collateral.qe_identity_signature, collateral.qe_identity)
    with pytest.raises(InvalidSignature):  # the same JSON, re-serialised with spaces, is not what was signed
        _verify(
            pki.tcb_signing_cert, collateral.tcb_info_signature, json.dumps(json.loads(collateral.tcb_info))
        )
    assert collateral.tcb_info_issuer_chain == collateral.qe_identity_issuer_chain
    assert collateral.tcb_info_issuer_chain.encode() == pki.tcb_signing_chain_pem()
    assert collateral.pck_crl_issuer_chain.encode() == pki.platform_ca_chain_pem()


def _crl(der: bytes) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(der)


def test_crls(collateral: Collateral, pki: SimPki) -> None:
    for der, issuer in ((collateral.pck_crl, pki.platform_ca_cert), (collateral.root_ca_crl, pki.root_cert)):
        crl = _crl(der)
        assert crl.issuer == issuer.subject
        assert crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
        assert crl.last_update_utc == NOW.replace(microsecond=0)
        assert crl.next_update_utc == NOW.replace(microsecond=0) + VALIDITY
        assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1
        aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert (
            aki.key_identifier
            == issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        )
        assert len(crl) == 0


def test_a_revoked_pck_is_on_the_pck_crl(platform: SimPlatform, pki: SimPki) -> None:
    platform.config.pck_revoked = True
    collateral = platform_collateral(platform, NOW, pki=pki)
    entry = _crl(collateral.pck_crl).get_revoked_certificate_by_serial_number(pki.pck_cert.serial_number)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.key_compromise
    )
    assert len(_crl(collateral.root_ca_crl)) == 0


def test_collateral_is_deterministic(platform: SimPlatform, collateral: Collateral) -> None:
    assert platform_collateral(SimPlatform.open(platform.path), NOW) == collateral
    later = platform_collateral(platform, NOW + datetime.timedelta(days=1))
    assert later.tcb_info != collateral.tcb_info


def test_time_must_be_aware_and_defaults_to_now(platform: SimPlatform) -> None:
    with pytest.raises(ValueError):
        platform_collateral(platform, datetime.datetime(2026, 1, 1))
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    issued = json.loads(platform_collateral(platform).tcb_info)["issueDate"]
    after = datetime.datetime.now(datetime.UTC)
    stamp = datetime.datetime.strptime(issued, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    assert before <= stamp <= after


# -- output forms ----------------------------------------------------------------------------------


def test_dcap_qvl_json(collateral: Collateral) -> None:
    text = collateral.to_dcap_qvl_json()
    doc = json.loads(text)
    assert list(doc) == [f.name for f in fields(Collateral)]
    assert doc["pck_crl"] == collateral.pck_crl.hex() and doc["tcb_info"] == collateral.tcb_info
    parsed = dcap_qvl.QuoteCollateralV3.from_json(text)
    assert parsed.tcb_info == collateral.tcb_info
    assert parsed.qe_identity_signature == collateral.qe_identity_signature
    assert parsed.root_ca_crl == collateral.root_ca_crl
    assert Collateral.from_dcap_qvl_json(text) == collateral


def test_the_real_collateral_json_reads(vectors: Path) -> None:
    text = (vectors / "sgx/dcap-qvl/sgx_quote_collateral.json").read_text()
    real = Collateral.from_dcap_qvl_json(text)
    assert json.loads(real.tcb_info)["fmspc"] == "00A067110000"
    assert len(real.tcb_info_signature) == 64


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ("[]", "not an object"),
        ('{"pck_crl_issuer_chain": "x"}', "'root_ca_crl' is missing"),
        ("CHANGE_TYPE", "'pck_crl' is missing or not a string"),
        ("BAD_HEX", "'tcb_info_signature' is not hex"),
    ],
)
def test_collateral_json_errors(collateral: Collateral, text: str, message: str) -> None:
    doc = json.loads(collateral.to_dcap_qvl_json())
    if text == "CHANGE_TYPE":
        text = json.dumps(dict(doc, pck_crl=5))
    elif text == "BAD_HEX":
        text = json.dumps(dict(doc, tcb_info_signature="zz"))
    with pytest.raises(FormatError, match=message):
        Collateral.from_dcap_qvl_json(text)


def test_pcs_dir(collateral: Collateral, tmp_path: Path, vectors: Path) -> None:
    out = tmp_path / "pcs" / "nested"
    collateral.write_pcs_dir(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(PCS_FILES)
    tcb = (out / "tcbInfo.json").read_text()
    qe = (out / "qeIdentity.json").read_text()
    # The signed text is embedded verbatim, as Intel's PCS serves it (compare its real responses).
    real = (vectors / "tdx/go-tdx-guest/sample_tcbInfo_response").read_text()
    assert list(json.loads(tcb)) == list(json.loads(real)) == ["tcbInfo", "signature"]
    assert (
        tcb
        == '{"tcbInfo":' + collateral.tcb_info + ',"signature":"' + collateral.tcb_info_signature.hex() + '"}'
    )
    real_qe = json.loads((vectors / "tdx/go-tdx-guest/sample_qeIdentity_response").read_text())
    assert list(json.loads(qe)) == list(real_qe) == ["enclaveIdentity", "signature"]
    assert qe.startswith('{"enclaveIdentity":' + collateral.qe_identity + ',"signature":"')
    assert (out / "pckcrl.der").read_bytes() == collateral.pck_crl
    assert (out / "rootcrl.der").read_bytes() == collateral.root_ca_crl
    assert (out / "tcbInfoIssuerChain.pem").read_text() == collateral.tcb_info_issuer_chain
    assert (out / "qeIdentityIssuerChain.pem").read_text() == collateral.qe_identity_issuer_chain
    assert (out / "pckCrlIssuerChain.pem").read_text() == collateral.pck_crl_issuer_chain
