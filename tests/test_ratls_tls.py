"""The sans-I/O TLS endpoints (`TlsServer`, `TlsClient`) in memory: TLS 1.3 only, the verifier runs
before any plaintext is released, close_notify in each direction, truncation and tampering refused,
and the key loaded without leaving a file behind."""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from haven.shield import tls
from haven.shield.tls import TlsClient, TlsError, TlsIdentity, TlsServer, client_context
from tests.ratls_support import plain_identity


@pytest.fixture(scope="module")
def identity() -> TlsIdentity:
    return plain_identity()


def _pair(identity: TlsIdentity, verify=lambda der: der) -> tuple[TlsClient[bytes], TlsServer]:
    client, server = TlsClient(verify), TlsServer(identity)
    server.receive(client.start())
    client.receive(server.outgoing())
    server.receive(client.outgoing())
    assert client.handshake_done and server.handshake_done
    return client, server


def test_handshake_is_tls_13_and_the_verifier_sees_the_certificate(identity: TlsIdentity) -> None:
    client, server = _pair(identity)
    assert client.version == server.version == "TLSv1.3"
    assert client.peer == identity.certificate_der
    assert client.cipher and client.cipher.startswith("TLS_")


def test_no_session_tickets(identity: TlsIdentity) -> None:
    # With tickets the server would answer the client's Finished with NewSessionTicket messages.
    client, server = TlsClient(lambda der: der), TlsServer(identity)
    server.receive(client.start())
    client.receive(server.outgoing())
    server.receive(client.outgoing())
    assert server.outgoing() == b""


def test_data_both_ways_in_any_pieces(identity: TlsIdentity) -> None:
    client, server = _pair(identity)
    wire = client.send(b"ping")
    got = b"".join(server.receive(wire[i : i + 1]) for i in range(len(wire)))  # one byte at a time
    assert got == b"ping"
    big = os.urandom(1 << 20)
    wire = server.send(big)
    got = b"".join(client.receive(wire[i : i + 5000]) for i in range(0, len(wire), 5000))
    assert got == big


def test_close_notify_each_way(identity: TlsIdentity) -> None:
    client, server = _pair(identity)
    server.receive(client.send(b"last words") + client.close())
    assert server.peer_closed and client.closed
    with pytest.raises(TlsError, match="after close_notify"):
        client.send(b"more")
    # The server may still answer after the client's close_notify (RFC 8446 section 6.1).
    assert client.receive(server.send(b"answer") + server.close()) == b"answer"
    assert client.peer_closed
    client.receive_eof()
    server.receive_eof()  # both ends closed cleanly: no error


def test_truncation_is_refused(identity: TlsIdentity) -> None:
    client, server = _pair(identity)
    server.receive(client.send(b"partial"))
    with pytest.raises(TlsError, match="without close_notify"):
        server.receive_eof()
    assert server.failed
    with pytest.raises(TlsError, match="failed earlier"):
        server.receive(b"")


def test_eof_during_the_handshake(identity: TlsIdentity) -> None:
    server = TlsServer(identity)
    server.receive(TlsClient(lambda der: der).start())
    with pytest.raises(TlsError, match="during the TLS handshake"):
        server.receive_eof()


def test_data_after_eof_is_refused(identity: TlsIdentity) -> None:
    client, server = _pair(identity)
    server.receive(client.close())
    server.receive_eof()
    with pytest.raises(TlsError, match="after the end"):
        server.receive(b"\x17\x03\x03")


def test_a_tampered_record_is_refused(identity: TlsIdentity) -> None:
    client, server = _pair(identity)
    wire = bytearray(client.send(b"integrity"))
    wire[-1] ^= 1
    with pytest.raises(TlsError, match="record refused") as e:
        server.receive(bytes(wire))
    assert "\n" not in str(e.value) and "_ssl.c" not in str(e.value)


def test_garbage_is_a_handshake_failure(identity: TlsIdentity) -> None:
    with pytest.raises(TlsError, match="handshake failed"):
        TlsServer(identity).receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


def test_tls_12_is_refused(identity: TlsIdentity) -> None:
    ctx = client_context()
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client, server = TlsClient(lambda der: der, context=ctx), TlsServer(identity)
    with pytest.raises(TlsError, match="handshake failed"):
        server.receive(client.start())


def test_send_before_the_handshake(identity: TlsIdentity) -> None:
    with pytest.raises(TlsError, match="before the TLS handshake"):
        TlsServer(identity).send(b"early")
    with pytest.raises(TlsError, match="not been verified"):
        TlsClient(lambda der: der).peer  # noqa: B018


def test_a_refused_peer_releases_no_plaintext(identity: TlsIdentity) -> None:
    class Refused(Exception):
        pass

    def refuse(der: bytes) -> None:
        raise Refused("not the enclave I want")

    client, server = TlsClient(refuse), TlsServer(identity)
    server.receive(client.start())
    flight = server.outgoing()
    with pytest.raises(Refused):
        client.receive(flight)
    assert client.failed
    with pytest.raises(TlsError, match="failed earlier"):
        client.receive(b"")
    with pytest.raises(TlsError, match="failed earlier"):
        client.send(b"secret")


def test_the_context_is_built_once(identity: TlsIdentity) -> None:
    assert identity.server_context() is identity.server_context()


def test_forget_wipes_the_key() -> None:
    fresh = plain_identity()
    assert fresh.server_context() is not None
    fresh.forget()
    with pytest.raises(TlsError, match="wiped"):
        fresh.private_key  # noqa: B018
    with pytest.raises(TlsError, match="wiped"):
        TlsServer(fresh)


def test_a_key_that_is_not_the_certificates(identity: TlsIdentity) -> None:
    wrong = TlsIdentity(identity.certificate_der, ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(TlsError, match="cannot load the TLS identity"):
        wrong.server_context()


@pytest.mark.parametrize("memfd", [True, False])
def test_the_key_leaves_no_file(memfd: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    if not memfd:
        monkeypatch.delattr(os, "memfd_create", raising=False)
    used: list[str] = []
    private_files = tls._private_files

    def spy(cert_pem: bytes, key_pem: bytes):
        assert b"ENCRYPTED PRIVATE KEY" in key_pem  # the key is never written in clear
        used.append("directory")
        return private_files(cert_pem, key_pem)

    monkeypatch.setattr(tls, "_private_files", spy)
    fresh = plain_identity()
    client, server = TlsClient(lambda der: der), TlsServer(fresh)
    server.receive(client.start())
    client.receive(server.outgoing())
    assert client.handshake_done
    assert used == ([] if memfd else ["directory"])
    assert list(tmp_path.iterdir()) == []
