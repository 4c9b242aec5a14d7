"""RA-TLS end to end: an identity made in a simulated enclave launched from a real bundle, served by
`TlsServer` over real loopback TCP, verified by the client against a policy pinned to the bundle's
MRENCLAVE (and naming the simulation root). Refused: another MRENCLAVE, a key that is not the one the
quote binds, another enclave's quote, evidence that does not chain to a trusted root."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from haven.attest.errors import AttestationError
from haven.attest.policy import load_policy
from haven.attest.verify import fingerprint
from haven.ratls import RatlsConnectError, connect, open_stream, verify_ratls_certificate
from haven.shield.ratls import (
    LEGACY_QUOTE_OID,
    TAGGED_EVIDENCE_OID,
    RatlsError,
    RatlsIdentity,
    encode_claims,
    encode_evidence,
    make_ratls_identity,
    report_data_for,
    spki_der,
)
from haven.shield.tls import TlsError, TlsIdentity
from haven.tee.sim.pki import root_ca_certificate
from tests.ratls_support import (
    LoopbackServer,
    World,
    build_app_bundle,
    certificate,
    make_world,
    plain_identity,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("ratls"))


@pytest.fixture(scope="module")
def identity(world: World) -> RatlsIdentity:
    return world.identity()


@pytest.fixture(scope="module")
def other(world: World, tmp_path_factory: pytest.TempPathFactory):
    """Another application (another MRENCLAVE) on the same platform, and its identity."""
    enclave = world.launch(build_app_bundle(tmp_path_factory.mktemp("other"), greeting="other"))
    return enclave, make_ratls_identity(enclave, world.qe.quote, target=world.qe.target_info())


def _verify(world: World, cert: bytes, policy: Path | None = None, **kw):
    return verify_ratls_certificate(cert, policy or world.policy(), collateral=world.collateral, **kw)


def _refused(kind: str, match: str | None, fn, *args, **kw):
    with pytest.raises((AttestationError, RatlsError), match=match) as e:
        fn(*args, **kw)
    assert isinstance(e.value, (AttestationError, RatlsError))
    assert e.value.kind == kind, e.value
    assert "\n" not in str(e.value)
    return e.value


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


# -- verifying a certificate -------------------------------------------------------------------------------


def test_the_pinned_enclave_is_accepted(world: World, identity: RatlsIdentity) -> None:
    peer = _verify(world, identity.certificate_der)
    assert peer.extension == "tcg-dice"
    assert peer.mrenclave == world.mrenclave.hex()
    assert peer.mrsigner == world.enclave.mrsigner.hex()
    assert peer.tcb_status == "UpToDate"
    assert peer.ear_status == "warning"  # simulated hardware is never affirming
    assert peer.public_key_sha256 == hashlib.sha256(identity.spki).digest()
    assert peer.claims["pubkey-hash"] == encode_claims(identity.spki)[15:]
    doc = json.loads(json.dumps(peer.to_json()))
    assert doc["ratls_extension"] == "tcg-dice" and doc["measurements"]["mrenclave"] == world.mrenclave.hex()


def test_policy_and_collateral_as_paths_or_objects(world: World, identity: RatlsIdentity) -> None:
    path = world.policy()
    for policy in (path, str(path), load_policy(path)):
        for collateral in (world.collateral, world.collateral_path):
            assert verify_ratls_certificate(identity.certificate_der, policy, collateral=collateral)


def test_a_policy_on_mrsigner_and_product(world: World, identity: RatlsIdentity) -> None:
    policy = world.policy("signer.json", mrsigner=world.enclave.mrsigner.hex(), isvprodid=1, min_isvsvn=1)
    assert _verify(world, identity.certificate_der, policy).mrsigner == world.enclave.mrsigner.hex()


@pytest.mark.parametrize("which", ["legacy", "tcg-dice"])
def test_each_extension_alone_is_accepted(world: World, identity: RatlsIdentity, which: str) -> None:
    ext = (
        (LEGACY_QUOTE_OID, identity.legacy_quote)
        if which == "legacy"
        else (TAGGED_EVIDENCE_OID, identity.evidence)
    )
    peer = _verify(world, certificate(identity.private_key, [ext]))
    assert peer.extension == which and peer.mrenclave == world.mrenclave.hex()


def test_a_policy_for_another_mrenclave_refuses(world: World, identity: RatlsIdentity) -> None:
    policy = world.policy("other.json", mrenclave="ab" * 32)
    _refused("policy", "mrenclave", _verify, world, identity.certificate_der, policy)


def test_another_enclave_is_refused_by_this_policy(world: World, other) -> None:
    _, their = other
    _refused("policy", "mrenclave", _verify, world, their.certificate_der)


def test_our_evidence_under_another_key_is_refused(world: World, identity: RatlsIdentity) -> None:
    thief = _key()
    both = [(LEGACY_QUOTE_OID, identity.legacy_quote), (TAGGED_EVIDENCE_OID, identity.evidence)]
    _refused("binding", "another key", _verify, world, certificate(thief, both))
    legacy_only = certificate(thief, [(LEGACY_QUOTE_OID, identity.legacy_quote)])
    _refused("binding", "legacy extension does not bind the public key", _verify, world, legacy_only)


def test_our_key_with_another_enclaves_quote_is_refused(world: World, identity: RatlsIdentity, other) -> None:
    _, their = other
    legacy = certificate(identity.private_key, [(LEGACY_QUOTE_OID, their.legacy_quote)])
    _refused("binding", "does not bind", _verify, world, legacy)
    standard = certificate(identity.private_key, [(TAGGED_EVIDENCE_OID, their.evidence)])
    _refused("binding", "another key", _verify, world, standard)


def test_claims_naming_our_key_with_a_quote_that_does_not_bind_them(
    world: World, identity: RatlsIdentity
) -> None:
    # The pubkey-hash claim is right, but the quote's report data is for the legacy binding.
    value = encode_evidence(identity.legacy_quote, identity.claims)
    cert = certificate(identity.private_key, [(TAGGED_EVIDENCE_OID, value)])
    _refused("binding", "does not bind the claims", _verify, world, cert)


def test_another_enclave_quoting_our_claims_is_refused_by_policy(
    world: World, identity: RatlsIdentity, other
) -> None:
    # The binding holds (another enclave quoted our claims), so only the policy stands in the way.
    their_enclave, _ = other
    report = their_enclave.ereport(
        world.qe.target_info(), report_data_for(hashlib.sha256(identity.claims).digest())
    )
    value = encode_evidence(world.qe.quote(report), identity.claims)
    cert = certificate(identity.private_key, [(TAGGED_EVIDENCE_OID, value)])
    _refused("policy", "mrenclave", _verify, world, cert)


def test_a_tampered_quote_does_not_verify(world: World, identity: RatlsIdentity) -> None:
    quote = bytearray(identity.legacy_quote)
    quote[112] ^= 1  # a byte of MRENCLAVE in the report body
    cert = certificate(identity.private_key, [(LEGACY_QUOTE_OID, bytes(quote))])
    _refused("signature", None, _verify, world, cert)


@pytest.mark.parametrize(
    ("evidence", "kind", "match"),
    [
        (os.urandom(2000), "malformed", "neither a DCAP quote"),
        (b"\x84" + os.urandom(300), "malformed", "holds nitro evidence"),
        ((2).to_bytes(4, "little") + bytes(1180), "malformed", "holds snp evidence"),
        (b"\x03\x00\x02\x00" + bytes(600), "malformed", None),
    ],
)
def test_evidence_that_is_no_quote(
    world: World, identity: RatlsIdentity, evidence: bytes, kind: str, match: str | None
) -> None:
    cert = certificate(identity.private_key, [(LEGACY_QUOTE_OID, evidence)])
    _refused(kind, match, _verify, world, cert)


def test_a_policy_must_pin_the_code(world: World, identity: RatlsIdentity) -> None:
    policy = world.policy("any.json", isvprodid=1, min_isvsvn=1)
    _refused("policy", "no code measurement", _verify, world, identity.certificate_der, policy)
    # Pinning SGX code while accepting any TD is not enough for a TDX peer; for SGX evidence it is.
    path = world.work / "tdx-any.json"
    doc = json.loads(world.policy().read_text())
    path.write_text(json.dumps({**doc, "tdx": {}}))
    assert _verify(world, identity.certificate_der, path)
    path.write_text(json.dumps({**doc, "sgx": {"isvprodid": 1}, "tdx": {"mrtd": "00" * 48}}))
    _refused(
        "policy", "sgx evidence: the policy names no code", _verify, world, identity.certificate_der, path
    )


def test_a_policy_cannot_name_report_data(world: World, identity: RatlsIdentity) -> None:
    path = world.work / "rd.json"
    doc = json.loads(world.policy().read_text())
    path.write_text(json.dumps({**doc, "report_data": "00" * 32}))
    _refused("policy", "report_data", _verify, world, identity.certificate_der, path)


def test_the_simulation_root_must_be_trusted(world: World, identity: RatlsIdentity) -> None:
    path = world.work / "vendor.json"
    path.write_text(json.dumps({"sgx": {"mrenclave": world.mrenclave.hex()}}))
    _refused("chain", None, _verify, world, identity.certificate_der, path)
    root = root_ca_certificate(world.platform)
    intel = world.work / "intel.json"
    intel.write_text(
        json.dumps({"trusted_roots": ["intel-sgx"], "sgx": {"mrenclave": world.mrenclave.hex()}})
    )
    _refused(
        "chain",
        "not among the policy's trusted roots",
        _verify,
        world,
        identity.certificate_der,
        intel,
        roots=[root],
    )
    pinned = world.work / "pinned.json"
    pinned.write_text(
        json.dumps(
            {
                "trusted_roots": [{"name": "haven-simulation", "sha256": fingerprint(root).hex()}],
                "sgx": {"mrenclave": world.mrenclave.hex()},
            }
        )
    )
    assert _verify(world, identity.certificate_der, pinned, roots=[root]).mrenclave == world.mrenclave.hex()


def test_verification_happens_at_now(world: World, identity: RatlsIdentity) -> None:
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=400)
    _refused("expired", None, _verify, world, identity.certificate_der, now=later)


# -- over loopback TCP -------------------------------------------------------------------------------------


def test_connect_verifies_and_exchanges_data(world: World, identity: RatlsIdentity) -> None:
    with LoopbackServer(identity) as server:
        sock, peer = connect("127.0.0.1", server.port, world.policy(), collateral=world.collateral)
        with sock:
            assert sock.version() == "TLSv1.3"
            assert peer.mrenclave == world.mrenclave.hex()
            sock.sendall(b"hello enclave")
            assert sock.recv(100) == b"echo:hello enclave"
            sock.unwrap()
    assert server.received == b"hello enclave"


def test_connect_refuses_another_mrenclave_and_sends_nothing(world: World, identity: RatlsIdentity) -> None:
    with LoopbackServer(identity) as server:
        policy = world.policy("other.json", mrenclave="cd" * 32)
        _refused(
            "policy", "mrenclave", connect, "127.0.0.1", server.port, policy, collateral=world.collateral
        )
    assert server.connections == 1 and server.received == b""


def test_connect_refuses_a_server_whose_key_is_not_the_quoted_one(
    world: World, identity: RatlsIdentity
) -> None:
    # A host that stole the certificate's evidence but not the key serves it with its own key.
    thief = _key()
    forged = certificate(thief, [(TAGGED_EVIDENCE_OID, identity.evidence)])
    with LoopbackServer(TlsIdentity(forged, thief)) as server:
        _refused(
            "binding",
            "another key",
            connect,
            "127.0.0.1",
            server.port,
            world.policy(),
            collateral=world.collateral,
        )


def test_connect_refuses_plain_tls(world: World) -> None:
    with LoopbackServer(plain_identity()) as server:
        _refused(
            "no-evidence",
            "no RA-TLS evidence",
            connect,
            "127.0.0.1",
            server.port,
            world.policy(),
            collateral=world.collateral,
        )


def test_connection_refused_is_one_line(world: World) -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(RatlsConnectError, match=f"cannot connect to 127.0.0.1:{port}"):
        connect("127.0.0.1", port, world.policy(), collateral=world.collateral, timeout=2)
    with pytest.raises(RatlsConnectError, match="port must be"):
        connect("127.0.0.1", 0, world.policy(), collateral=world.collateral)


def test_a_server_speaking_no_tls(world: World) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    try:

        def garbage() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        threading.Thread(target=garbage, daemon=True).start()
        with pytest.raises(TlsError, match="handshake"):
            connect(
                "127.0.0.1", listener.getsockname()[1], world.policy(), collateral=world.collateral, timeout=5
            )
    finally:
        listener.close()


def test_the_server_refuses_tls_1_2(identity: RatlsIdentity) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        LoopbackServer(identity) as server,
        socket.create_connection(("127.0.0.1", server.port)) as raw,
        pytest.raises(ssl.SSLError),
    ):
        ctx.wrap_socket(raw)
    assert server.errors and "handshake" in server.errors[0]


def test_open_stream_half_closes(world: World, identity: RatlsIdentity) -> None:
    with (
        LoopbackServer(identity) as server,
        open_stream("127.0.0.1", server.port, world.policy(), collateral=world.collateral) as stream,
    ):
        assert stream.peer.mrenclave == world.mrenclave.hex()
        stream.sendall(b"one ")
        stream.sendall(b"two")
        stream.close_write()  # close_notify: the server sees the end, and answers after it
        reply = b""
        while chunk := stream.recv():
            reply += chunk
    assert reply.startswith(b"echo:one") and reply.endswith(b"two")
    assert server.errors == []  # both sides closed with close_notify


def test_canary_the_host_relays_no_plaintext(world: World, identity: RatlsIdentity) -> None:
    secret = os.urandom(48).hex().encode()  # 96 bytes of canary
    with (
        LoopbackServer(identity) as server,
        open_stream("127.0.0.1", server.port, world.policy(), collateral=world.collateral) as stream,
    ):
        stream.sendall(b"the secret is " + secret)
        stream.close_write()
        reply = b""
        while chunk := stream.recv():
            reply += chunk
    assert secret in server.received and secret in reply  # it did cross, both ways
    relayed = bytes(server.relayed)
    assert len(relayed) > 2 * len(secret)
    for i in range(len(secret) - 15):
        assert secret[i : i + 16] not in relayed, f"16 bytes of the secret at {i} crossed the host in clear"
    # TLS 1.3 encrypts the Certificate message too: the host does not even see which key it is.
    assert spki_der(identity.private_key.public_key()) not in relayed
