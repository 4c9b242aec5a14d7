"""Shared pieces of the RA-TLS tests: an enclave launched from a real bundle with a listener, its
platform's collateral and root, pinned policies, a loopback server that drives `TlsServer` on real TCP
(playing the host that relays bytes, and recording every byte it relays), and certificate forgery."""

from __future__ import annotations

import contextlib
import datetime
import json
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import wasmtime
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from haven.attest.dcap.collateral import Collateral, parse_collateral_json
from haven.bundle.build import build_bundle
from haven.bundle.container import Bundle
from haven.shield.ratls import RatlsIdentity, make_ratls_identity
from haven.shield.tls import TlsIdentity, TlsServer
from haven.tee.sim.collateral import platform_collateral
from haven.tee.sim.cpu import SimEnclave
from haven.tee.sim.pki import root_ca_certificate
from haven.tee.sim.platform import SimPlatform
from haven.tee.sim.qe import QuotingEnclave
from tests.sim_quote_support import app_signing_key, make_platform

LISTENER = '\n[[listen]]\nport = 8443\ntls = "ra-tls"\n'


def build_app_bundle(work: Path, *, greeting: str = "hello") -> Bundle:
    """The example application with an RA-TLS listener in its manifest, built and signed."""
    examples = resources.files("haven.cli") / "examples"
    manifest = (examples / "hello.toml").read_text().replace('GREETING = "hello"', f'GREETING = "{greeting}"')
    (work / "hello.toml").write_text(manifest + LISTENER)
    (work / "hello.wasm").write_bytes(wasmtime.wat2wasm((examples / "hello.wat").read_text()))
    return build_bundle(work / "hello.toml", app_signing_key())


@dataclass
class World:
    """One simulated platform, the enclave of a real bundle on it, and what a client needs."""

    work: Path
    bundle: Bundle
    platform: SimPlatform
    enclave: SimEnclave
    qe: QuotingEnclave
    collateral: Collateral
    collateral_path: Path
    root_path: Path

    @property
    def mrenclave(self) -> bytes:
        return self.bundle.image.mrenclave()

    def identity(self, **kw: Any) -> RatlsIdentity:
        return make_ratls_identity(self.enclave, self.qe.quote, target=self.qe.target_info(), **kw)

    def launch(self, bundle: Bundle) -> SimEnclave:
        return self.platform.load_enclave(bundle.image, bundle.sigstruct)

    def policy(self, name: str = "policy.json", **sgx: Any) -> Path:
        """A policy pinned to this bundle's MRENCLAVE (or ``sgx``), trusting the simulation root by name."""
        doc = {
            "trusted_roots": [{"name": "haven-simulation", "certificate": self.root_path.name}],
            "sgx": sgx or {"mrenclave": self.mrenclave.hex()},
        }
        path = self.work / name
        path.write_text(json.dumps(doc))
        return path


def make_world(work: Path) -> World:
    bundle = build_app_bundle(work)
    platform = make_platform(work / "platform.json")
    collateral_json = platform_collateral(platform).to_dcap_qvl_json()
    (work / "collateral.json").write_text(collateral_json)
    root = work / "sim-root.der"
    root.write_bytes(root_ca_certificate(platform).public_bytes(Encoding.DER))
    return World(
        work=work,
        bundle=bundle,
        platform=platform,
        enclave=platform.load_enclave(bundle.image, bundle.sigstruct),
        qe=QuotingEnclave(platform),
        collateral=parse_collateral_json(collateral_json),
        collateral_path=work / "collateral.json",
        root_path=root,
    )


def echo(data: bytes) -> bytes:
    return b"echo:" + data


@dataclass
class LoopbackServer:
    """Accepts loopback TCP connections and serves each with a `TlsServer` in a thread.

    The thread is the untrusted host and the enclave at once: the bytes it receives and sends on the
    socket are what the host relays (``relayed``); what `TlsServer` decrypts goes to ``handler``, whose
    answer is encrypted back. The server closes (close_notify) after the peer does.
    """

    identity: TlsIdentity
    handler: Callable[[bytes], bytes] = echo
    relayed: bytearray = field(default_factory=bytearray)
    received: bytearray = field(default_factory=bytearray)  # plaintext the "application" read
    errors: list[str] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        port: int = self._listener.getsockname()[1]
        return port

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(5)
                try:
                    self._one(conn)
                except Exception as e:  # recorded for the test to look at
                    self.errors.append(str(e))

    def _one(self, conn: socket.socket) -> None:
        tls = TlsServer(self.identity)
        while True:
            data = conn.recv(1 << 16)
            self.relayed += data
            if not data:
                tls.receive_eof()
                return
            plaintext = tls.receive(data)
            out = tls.outgoing()
            if plaintext:
                self.received += plaintext
                out += tls.send(self.handler(plaintext))
            if tls.peer_closed:
                out += tls.close()
            self.relayed += out
            conn.sendall(out)
            if tls.peer_closed:
                return

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept()
        self._thread.join(timeout=5)
        self._listener.close()

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged")])


def certificate(
    key: ec.EllipticCurvePrivateKey,
    extensions: Iterable[tuple[x509.ObjectIdentifier, bytes]],
    *,
    signer: ec.EllipticCurvePrivateKey | None = None,
    public_key: Any = None,
) -> bytes:
    """A certificate for ``key`` (or ``public_key``) with these raw extensions, signed by ``signer``."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_NAME)
        .issuer_name(_NAME)
        .public_key(public_key if public_key is not None else key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    for oid, value in extensions:
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, value), critical=False)
    return builder.sign(signer or key, hashes.SHA384()).public_bytes(Encoding.DER)


def plain_identity(curve: ec.EllipticCurve | None = None) -> TlsIdentity:
    """An ordinary self-signed TLS identity (no evidence)."""
    key = ec.generate_private_key(curve or ec.SECP384R1())
    return TlsIdentity(certificate(key, ()), key)
