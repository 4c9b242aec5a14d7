"""Collateral: both input forms, exact signed bytes, and each collateral check broken on its own."""

from __future__ import annotations

import base64
import datetime
import json
import urllib.parse
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from haven.attest.dcap import (
    Collateral,
    load_collateral,
    parse_collateral_json,
    to_dcap_qvl_json,
    verify_dcap,
)
from haven.attest.dcap.collateral import split_signed_body
from haven.attest.errors import AttestationError
from haven.tee.sgx.quote import ecdsa_der_to_raw
from haven.tee.sim.collateral import platform_collateral
from tests.dcap_support import SETS, SimEvidence, sim_evidence

UTC = datetime.UTC
DAY = datetime.timedelta(days=1)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimEvidence:
    return sim_evidence(tmp_path_factory.mktemp("collateral") / "platform.json")


def _kind(sim: SimEvidence, collateral: str | Collateral, *, now: datetime.datetime | None = None) -> str:
    c = parse_collateral_json(collateral) if isinstance(collateral, str) else collateral
    with pytest.raises(AttestationError) as e:
        verify_dcap(sim.quote, c, roots=sim.roots, now=now or sim.now)
    return e.value.kind


def _doc(text: str) -> dict[str, str]:
    out: dict[str, str] = json.loads(text)
    return out


# -- the two forms --------------------------------------------------------------------------------


def test_dcap_qvl_json_and_pcs_directory_are_the_same_collateral(sim: SimEvidence, tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(sim.collateral)
    platform_collateral(sim.platform, sim.now, pki=sim.qe.pki).write_pcs_dir(tmp_path / "pcs")
    a, b = load_collateral(tmp_path / "c.json"), load_collateral(tmp_path / "pcs")
    assert a.digest == b.digest
    assert verify_dcap(sim.quote, b, roots=sim.roots, now=sim.now).tcb_status == "UpToDate"


def test_go_tdx_guest_file_names_are_read(vectors: Path) -> None:
    c = load_collateral(vectors / "tdx/go-tdx-guest")
    assert c.tcb_info.fmspc.hex() == "50806f000000" and c.qe_identity.id == "TD_QE"
    assert c.tcb_info_bytes.startswith(b'{"id":"TDX"')  # the inner object, exactly as served


def test_to_dcap_qvl_json_round_trips(vectors: Path) -> None:
    spr = SETS[4]
    c = load_collateral(vectors / spr.collateral)
    again = parse_collateral_json(to_dcap_qvl_json(c))
    assert again.tcb_info_bytes == c.tcb_info_bytes and again.qe_identity_signature == c.qe_identity_signature
    with pytest.raises(AttestationError) as e:
        verify_dcap(spr.quote_bytes(vectors), again, now=spr.now)
    assert e.value.kind == "tcb-no-match"


def test_url_encoded_issuer_chain_is_accepted(sim: SimEvidence, tmp_path: Path) -> None:
    platform_collateral(sim.platform, sim.now, pki=sim.qe.pki).write_pcs_dir(tmp_path)
    chain = tmp_path / "tcbInfoIssuerChain.pem"
    chain.write_text(urllib.parse.quote(chain.read_text(), safe=""))
    assert verify_dcap(sim.quote, load_collateral(tmp_path), roots=sim.roots, now=sim.now).tcb_status


def test_pcs_body_layout_around_the_signed_object_does_not_matter(sim: SimEvidence) -> None:
    doc = _doc(sim.collateral)
    inner, sig = doc["tcb_info"], doc["tcb_info_signature"]
    body = f'\n  {{ "signature" : "{sig}" ,\n "tcbInfo":   {inner} }}\n'.encode()
    assert split_signed_body(body, "tcbInfo", "TCB Info") == (inner.encode(), sig)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"tcbInfo": {}}',
        b'{"signature": "00"}',
        b'{"tcbInfo": [], "signature": "00"}',
        b'{"tcbInfo": {}, "signature": 5}',
        b'{"tcbInfo": {}, "signature": "00"} x',
        b'{"tcbInfo": {}, "tcbInfo": {}, "signature": "00"}',
        b'{"tcbInfo": {} "signature": "00"}',
        b'{"tcbInfo" {}, "signature": "00"}',
        b'{5: {}, "signature": "00"}',
        b'\xef\xbb\xbf{"tcbInfo": {}, "signature": "00"}',
        b'{"tcbInfo": {"a": "\xff"}, "signature": "00"}',
    ],
)
def test_malformed_pcs_bodies(body: bytes) -> None:
    with pytest.raises(AttestationError) as e:
        split_signed_body(body, "tcbInfo", "TCB Info")
    assert e.value.kind == "malformed"


def test_missing_pcs_file_is_named(sim: SimEvidence, tmp_path: Path) -> None:
    platform_collateral(sim.platform, sim.now, pki=sim.qe.pki).write_pcs_dir(tmp_path)
    (tmp_path / "rootcrl.der").unlink()
    with pytest.raises(AttestationError, match=r"rootcrl\.der") as e:
        load_collateral(tmp_path)
    assert e.value.kind == "malformed"


def test_unreadable_collateral_path(tmp_path: Path) -> None:
    with pytest.raises(AttestationError, match="cannot read") as e:
        load_collateral(tmp_path / "absent.json")
    assert e.value.kind == "malformed"


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.pop("pck_crl"),
        lambda d: d.update(pck_crl=5),
        lambda d: d.update(pck_crl="zz"),
        lambda d: d.update(root_ca_crl="00"),
        lambda d: d.update(tcb_info_signature="00" * 63),
        lambda d: d.update(qe_identity_signature="xyz"),
        lambda d: d.update(tcb_info="{"),
        lambda d: d.update(tcb_info="[]"),
        lambda d: d.update(qe_identity='{"id":"QE","id":"QE"}'),
        lambda d: d.update(tcb_info_issuer_chain="not a chain"),
        lambda d: d.update(
            qe_identity_issuer_chain="-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        ),
    ],
)
def test_malformed_collateral_json(sim: SimEvidence, change: object) -> None:
    doc = json.loads(sim.collateral)
    change(doc)  # type: ignore[operator]
    with pytest.raises(AttestationError) as e:
        parse_collateral_json(json.dumps(doc))
    assert e.value.kind == "malformed"


def test_collateral_json_that_is_not_an_object_or_not_utf8() -> None:
    for text in ("[]", "nope", b"\xff\xfe"):
        with pytest.raises(AttestationError) as e:
            parse_collateral_json(text)
        assert e.value.kind == "malformed"


# -- signatures over the exact JSON bytes ---------------------------------------------------------


@pytest.mark.parametrize("name", ["tcb_info", "qe_identity"])
def test_reserialised_document_fails_its_signature(vectors: Path, name: str) -> None:
    s = SETS[0]
    doc = _doc((vectors / s.collateral).read_text())
    doc[name] = json.dumps(json.loads(doc[name]), indent=2)  # same content, other bytes
    with pytest.raises(AttestationError) as e:
        verify_dcap(s.quote_bytes(vectors), parse_collateral_json(json.dumps(doc)), now=s.now)
    assert e.value.kind == "signature"


@pytest.mark.parametrize("name", ["tcb_info", "qe_identity"])
def test_any_changed_byte_of_a_document_is_refused(vectors: Path, name: str) -> None:
    s = SETS[0]
    doc = _doc((vectors / s.collateral).read_text())
    text, quote = doc[name], s.quote_bytes(vectors)
    kinds = set()
    for i in range(0, len(text), 5):
        changed = text[:i] + chr(ord(text[i]) ^ 1) + text[i + 1 :]
        with pytest.raises(AttestationError) as e:
            verify_dcap(quote, parse_collateral_json(json.dumps({**doc, name: changed})), now=s.now)
        kinds.add(e.value.kind)
    assert kinds == {"signature", "malformed"}


def test_changed_tcb_evaluation_number_is_a_signature_failure(vectors: Path) -> None:
    s = SETS[0]
    doc = _doc((vectors / s.collateral).read_text())
    doc["tcb_info"] = doc["tcb_info"].replace('"tcbEvaluationDataNumber":17', '"tcbEvaluationDataNumber":18')
    with pytest.raises(AttestationError, match="TCB Info signature") as e:
        verify_dcap(s.quote_bytes(vectors), parse_collateral_json(json.dumps(doc)), now=s.now)
    assert e.value.kind == "signature"


def test_document_signed_by_another_key(sim: SimEvidence, tmp_path: Path) -> None:
    other = sim_evidence(tmp_path / "other.json", now=sim.now)
    doc = _doc(sim.collateral)
    doc["qe_identity_signature"] = other.sign(doc["qe_identity"])
    assert _kind(sim, json.dumps(doc)) == "signature"


def test_pck_crl_with_a_broken_signature(sim: SimEvidence) -> None:
    doc = _doc(sim.collateral)
    crl = bytearray.fromhex(doc["pck_crl"])
    crl[-5] ^= 1  # inside the signature value
    doc["pck_crl"] = crl.hex()
    assert _kind(sim, json.dumps(doc)) == "signature"


# -- for another platform, TEE or QE --------------------------------------------------------------


def test_collateral_for_another_fmspc_real(vectors: Path) -> None:
    tdx, near = SETS[1], SETS[3]
    with pytest.raises(AttestationError, match="FMSPC") as e:
        verify_dcap(tdx.quote_bytes(vectors), load_collateral(vectors / near.collateral), now=near.now)
    assert e.value.kind == "collateral-mismatch"


def test_collateral_for_another_fmspc_or_pce_id(sim: SimEvidence) -> None:
    info = sim.document("tcb_info")
    assert _kind(sim, sim.resigned(tcb_info={**info, "fmspc": "00A067110000"})) == "collateral-mismatch"
    assert _kind(sim, sim.resigned(tcb_info={**info, "pceId": "FFFF"})) == "collateral-mismatch"


def test_pck_crl_of_another_ca(vectors: Path) -> None:
    # The SGX quote's PCK is from the Processor CA; the TDX collateral carries the Platform CA's CRL.
    sgx, tdx = SETS[0], SETS[1]
    with pytest.raises(AttestationError, match="PCK CRL") as e:
        verify_dcap(sgx.quote_bytes(vectors), load_collateral(vectors / tdx.collateral), now=tdx.now)
    assert e.value.kind == "collateral-mismatch"


def test_qe_identity_for_another_tee_or_quoting_enclave(sim: SimEvidence) -> None:
    qe = sim.document("qe_identity")
    for change in (
        {"id": "TD_QE"},
        {"mrsigner": "00" * 32},
        {"isvprodid": qe["isvprodid"] + 1},
        {"miscselect": "01000000"},
        {"attributes": "FF" + qe["attributes"][2:]},
    ):
        assert _kind(sim, sim.resigned(qe_identity={**qe, **change})) == "collateral-mismatch", change


# -- validity windows and revocation --------------------------------------------------------------


def test_collateral_out_of_its_window(sim: SimEvidence) -> None:
    assert _kind(sim, sim.collateral, now=sim.now + 31 * DAY) == "expired"
    assert _kind(sim, sim.collateral, now=sim.now - DAY) == "not-yet-valid"


def test_tcb_info_past_next_update(sim: SimEvidence) -> None:
    info = sim.document("tcb_info")
    early = (sim.now - DAY).strftime("%Y-%m-%dT%H:%M:%SZ")
    kind = _kind(sim, sim.resigned(tcb_info={**info, "issueDate": early, "nextUpdate": early}))
    assert kind == "expired"


def test_qe_identity_not_yet_issued(sim: SimEvidence) -> None:
    qe = sim.document("qe_identity")
    later = (sim.now + DAY).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (
        _kind(sim, sim.resigned(qe_identity={**qe, "issueDate": later, "nextUpdate": later}))
        == "not-yet-valid"
    )


def test_pck_listed_in_the_pck_crl_is_revoked(tmp_path: Path) -> None:
    ev = sim_evidence(tmp_path / "revoked.json", pck_revoked=True)
    assert _kind(ev, ev.collateral) == "revoked"


def _root_crl_revoking(sim: SimEvidence, serial: int) -> str:
    pki = sim.qe.pki
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.root_cert.subject)
        .last_update(sim.now - DAY)
        .next_update(sim.now + DAY)
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(sim.now - DAY).build()
        )
        .sign(pki.root_key, hashes.SHA256())
    )
    doc = _doc(sim.collateral)
    doc["root_ca_crl"] = crl.public_bytes(serialization.Encoding.DER).hex()
    return json.dumps(doc)


def test_intermediate_listed_in_the_root_crl_is_revoked(sim: SimEvidence) -> None:
    assert _kind(sim, _root_crl_revoking(sim, sim.qe.pki.platform_ca_cert.serial_number)) == "revoked"
    assert _kind(sim, _root_crl_revoking(sim, sim.qe.pki.tcb_signing_cert.serial_number)) == "revoked"


def test_root_crl_of_another_root_leaves_certificates_uncovered(sim: SimEvidence, vectors: Path) -> None:
    doc = _doc(sim.collateral)
    doc["root_ca_crl"] = _doc((vectors / SETS[0].collateral).read_text())["root_ca_crl"]
    assert _kind(sim, json.dumps(doc)) == "chain"


def test_issuer_chain_to_an_untrusted_root(sim: SimEvidence, vectors: Path) -> None:
    doc = _doc(sim.collateral)
    doc["tcb_info_issuer_chain"] = _doc((vectors / SETS[0].collateral).read_text())["tcb_info_issuer_chain"]
    assert _kind(sim, json.dumps(doc)) == "chain"


def test_simulated_quote_against_intel_collateral(sim: SimEvidence, vectors: Path) -> None:
    s = SETS[0]
    with pytest.raises(AttestationError) as e:
        verify_dcap(sim.quote, load_collateral(vectors / s.collateral), roots=sim.roots, now=s.now)
    assert e.value.kind in ("collateral-mismatch", "chain")


def _root_copy_changed(pem_chain: str, old: bytes, new: bytes) -> str:
    certs = x509.load_pem_x509_certificates(pem_chain.encode())
    der = certs[-1].public_bytes(serialization.Encoding.DER)
    assert der.count(old) == 1
    changed = x509.load_der_x509_certificate(der.replace(old, new))
    out = [c.public_bytes(serialization.Encoding.PEM) for c in certs[:-1]]
    return b"".join([*out, changed.public_bytes(serialization.Encoding.PEM)]).decode()


@pytest.mark.parametrize(
    "name", ["tcb_info_issuer_chain", "qe_identity_issuer_chain", "pck_crl_issuer_chain"]
)
def test_changed_root_copy_in_an_issuer_chain(vectors: Path, name: str) -> None:
    # Verification anchors at the pinned root (same subject and key); the copy a chain carries must
    # still be validly self-signed, so a changed byte in it does not pass unnoticed.
    s = SETS[0]
    doc = _doc((vectors / s.collateral).read_text())
    doc[name] = _root_copy_changed(doc[name], b"491231235959Z", b"481231235959Z")
    with pytest.raises(AttestationError) as e:
        verify_dcap(s.quote_bytes(vectors), parse_collateral_json(json.dumps(doc)), now=s.now)
    assert e.value.kind == "signature"


def test_certificate_with_an_invalid_version_is_malformed(vectors: Path) -> None:
    s = SETS[0]
    doc = _doc((vectors / s.collateral).read_text())
    der = x509.load_pem_x509_certificates(doc["tcb_info_issuer_chain"].encode())[0].public_bytes(
        serialization.Encoding.DER
    )
    bad = der.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x05", 1)
    body = base64.encodebytes(bad).decode().replace("\n", "")
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    doc["tcb_info_issuer_chain"] = f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n"
    with pytest.raises(AttestationError) as e:
        parse_collateral_json(json.dumps(doc))
    assert e.value.kind == "malformed"


def test_tcb_info_signed_by_a_pck_key_is_refused(sim: SimEvidence) -> None:
    # A PCK key chains to the root too, but only the TCB Signing certificate (issued by the root
    # directly, not a CA) may sign TCB Info and QE Identity.
    pki = sim.qe.pki
    doc = _doc(sim.collateral)
    der = pki.pck_key.sign(doc["tcb_info"].encode(), ec.ECDSA(hashes.SHA256()))
    doc["tcb_info_signature"] = ecdsa_der_to_raw(der).hex()
    doc["tcb_info_issuer_chain"] = pki.pck_chain_pem().decode()
    with pytest.raises(AttestationError, match="end-entity") as e:
        verify_dcap(sim.quote, parse_collateral_json(json.dumps(doc)), roots=sim.roots, now=sim.now)
    assert e.value.kind == "chain"
    doc = _doc(sim.collateral)
    der = pki.platform_ca_key.sign(doc["qe_identity"].encode(), ec.ECDSA(hashes.SHA256()))
    doc["qe_identity_signature"] = ecdsa_der_to_raw(der).hex()
    doc["qe_identity_issuer_chain"] = pki.platform_ca_chain_pem().decode()
    assert _kind(sim, json.dumps(doc)) == "chain"
