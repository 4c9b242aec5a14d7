"""RA-TLS against plain TLS between the same processes, in the same run.

    .venv/bin/python -m bench.bench_ratls [MEGABYTES]

Two servers on loopback TCP, each a thread driving the enclave's sans-I/O `TlsServer` on a socket (the
host's relay and the enclave in one), with the same key type (ECDSA P-384) and the same TLS 1.3 suite;
one presents the RA-TLS certificate of a simulated enclave (a real bundle, quoted by the simulated QE),
the other an ordinary self-signed certificate. Printed:

- identity: making the RA-TLS identity (key, two EREPORTs and quotes, certificate) against making a
  plain self-signed one;
- handshake: `haven.ratls.connect` (TCP, TLS 1.3, evidence verification and appraisal) against a plain
  TLS 1.3 connect, and the verification alone;
- echo throughput: MEGABYTES (default 32) sent and echoed back in 64 KiB requests over each connection,
  as a ratio of RA-TLS to plain TLS. After the handshake both are the same TLS, so the ideal is 1.00.
"""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import wasmtime
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from haven.attest.dcap.collateral import parse_collateral_json
from haven.bundle.build import build_bundle
from haven.ratls import connect, verify_ratls_certificate
from haven.shield.ratls import make_ratls_identity
from haven.shield.tls import TlsIdentity, TlsServer, client_context
from haven.tee.sgx.sigstruct import generate_signing_key
from haven.tee.sim.collateral import platform_collateral
from haven.tee.sim.pki import root_ca_certificate
from haven.tee.sim.platform import SimPlatform
from haven.tee.sim.qe import QuotingEnclave

REQUEST = 64 << 10


class EchoServer:
    """Serves connections one at a time: TlsServer over the socket, echoing every byte back."""

    def __init__(self, identity: TlsIdentity) -> None:
        self.identity = identity
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                tls = TlsServer(self.identity)
                try:
                    while data := conn.recv(1 << 18):
                        plaintext = tls.receive(data)
                        out = tls.outgoing()
                        if plaintext:
                            out += tls.send(plaintext)
                        if tls.peer_closed:
                            out += tls.close()
                        conn.sendall(out)
                        if tls.peer_closed:
                            break
                except Exception:  # a client that just closes: next connection
                    continue


def _self_signed(key: ec.EllipticCurvePrivateKey) -> TlsIdentity:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plain TLS baseline")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA384())
    )
    return TlsIdentity(cert.public_bytes(Encoding.DER), key)


def _best(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _median(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _echo(sock: ssl.SSLSocket, total: int) -> float:
    """Seconds to send ``total`` bytes in REQUEST-sized requests and read each echo back."""
    payload = bytes(REQUEST)
    start = time.perf_counter()
    for _ in range(total // REQUEST):
        sock.sendall(payload)
        got = 0
        while got < REQUEST:
            chunk = sock.recv(REQUEST - got)
            if not chunk:
                raise SystemExit("the echo server closed the connection")
            got += len(chunk)
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    megabytes = int(argv[0]) if argv else 32
    total = megabytes << 20
    with tempfile.TemporaryDirectory(prefix="haven-bench-") as tmp:
        work = Path(tmp)
        examples = resources.files("haven.cli") / "examples"
        (work / "hello.toml").write_text(
            (examples / "hello.toml").read_text() + "\n[[listen]]\nport = 8443\n"
        )
        (work / "hello.wasm").write_bytes(wasmtime.wat2wasm((examples / "hello.wat").read_text()))
        bundle = build_bundle(work / "hello.toml", generate_signing_key())
        platform = SimPlatform.create(work / "platform.json")
        enclave = platform.load_enclave(bundle.image, bundle.sigstruct)
        qe = QuotingEnclave(platform)
        collateral = parse_collateral_json(platform_collateral(platform).to_dcap_qvl_json())
        (work / "root.der").write_bytes(root_ca_certificate(platform).public_bytes(Encoding.DER))
        (work / "policy.json").write_text(
            json.dumps(
                {
                    "trusted_roots": [{"name": "haven-simulation", "certificate": "root.der"}],
                    "sgx": {"mrenclave": bundle.image.mrenclave().hex()},
                }
            )
        )
        policy = work / "policy.json"

        def ratls_identity() -> TlsIdentity:
            return make_ratls_identity(enclave, qe.quote, target=qe.target_info())

        def plain_identity() -> TlsIdentity:
            return _self_signed(ec.generate_private_key(ec.SECP384R1()))

        t_ratls_id = _median(ratls_identity, 20)
        t_plain_id = _median(plain_identity, 20)
        ratls = EchoServer(ratls_identity())
        plain = EchoServer(plain_identity())
        der = ratls.identity.certificate_der
        verify_ratls_certificate(der, policy, collateral=collateral)  # warm caches
        t_verify = _median(lambda: verify_ratls_certificate(der, policy, collateral=collateral), 20)

        def ratls_connect() -> ssl.SSLSocket:
            sock, _ = connect("127.0.0.1", ratls.port, policy, collateral=collateral)
            return sock

        def plain_connect() -> ssl.SSLSocket:
            raw = socket.create_connection(("127.0.0.1", plain.port))
            return client_context().wrap_socket(raw)

        def closing(make: Callable[[], ssl.SSLSocket]) -> Callable[[], None]:
            return lambda: make().close()

        t_ratls_hs = _median(closing(ratls_connect), 20)
        t_plain_hs = _median(closing(plain_connect), 20)

        socks = {"ratls": ratls_connect(), "plain": plain_connect()}
        for s in socks.values():
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _echo(s, 4 * REQUEST)  # warm up
        best = {"ratls": float("inf"), "plain": float("inf")}
        for _ in range(3):  # interleaved, best of three: the machine's noise hits both alike
            for name, s in socks.items():
                best[name] = min(best[name], _echo(s, total))
        for s in socks.values():
            s.close()

    mb = total / 1e6
    print(
        f"RA-TLS vs plain TLS 1.3 (ECDSA P-384 both), loopback, TlsServer in a thread; {megabytes} MiB echo"
    )
    print(
        f"identity:  RA-TLS {1e3 * t_ratls_id:7.2f} ms   plain {1e3 * t_plain_id:7.2f} ms   "
        f"ratio {t_ratls_id / t_plain_id:6.2f}"
    )
    print(
        f"handshake: RA-TLS {1e3 * t_ratls_hs:7.2f} ms   plain {1e3 * t_plain_hs:7.2f} ms   "
        f"ratio {t_ratls_hs / t_plain_hs:6.2f}   (of which evidence verification {1e3 * t_verify:.2f} ms)"
    )
    print(
        f"echo:      RA-TLS {mb / best['ratls']:7.1f} MB/s plain {mb / best['plain']:7.1f} MB/s "
        f"ratio {best['plain'] / best['ratls']:6.3f}   (RA-TLS throughput / plain; ideal 1.00)"
    )
    print(f"ratio RA-TLS echo throughput / plain TLS: {best['plain'] / best['ratls']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
