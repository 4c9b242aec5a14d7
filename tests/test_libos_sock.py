"""Sockets for the manifest's listeners: a C echo server (``tests/apps/c/echo_server.c``) run by
``Application`` in a thread over ``LocalNetBackend``, and a ``haven.ratls`` client over loopback that
pins the bundle's MRENCLAVE and names the simulation root. TLS ends inside the enclave: the bytes the
backend relayed never carry the application's secret."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from haven.bundle.build import build_bundle
from haven.libos.console import Console
from haven.libos.engine import Outcome
from haven.libos.net import QuoteRelay
from haven.libos.netbackend import LocalNetBackend, NetError
from haven.libos.runtime import Application, HostResources
from haven.ratls import open_stream
from haven.tee.sim.collateral import platform_collateral
from haven.tee.sim.pki import root_ca_certificate
from haven.tee.sim.qe import QuotingEnclave
from tests.sim_quote_support import app_signing_key, make_platform

BUILD = Path(__file__).resolve().parent / "apps" / "build" / "c"
SECRET = "0123456789abcdef-the-application-secret-fedcba9876543210"

pytestmark = pytest.mark.skipif(
    not (BUILD / "echo_server.wasm").exists(), reason="scripts/build-test-apps has not been run"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RecordingBackend(LocalNetBackend):
    """The host's relay, recording every byte it carries in either direction."""

    def __init__(self) -> None:
        super().__init__()
        self.relayed = bytearray()

    def read(self, handle: int, max: int) -> bytes | None:
        data = super().read(handle, max)
        if data:
            self.relayed += data
        return data

    def write(self, handle: int, data: bytes) -> int:
        n = super().write(handle, data)
        self.relayed += data[:n]
        return n


@dataclass
class Server:
    app: Application
    port: int
    stdout: Path
    backend: RecordingBackend
    work: Path
    outcome: list[Outcome] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    thread: threading.Thread | None = None

    def start(self) -> Server:
        def main() -> None:
            try:
                self.outcome.append(self.app.run())
            except BaseException as e:  # reported by join()
                self.errors.append(e)

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        return self

    def join(self) -> Outcome:
        assert self.thread is not None
        self.thread.join(20)
        assert not self.thread.is_alive(), "the application did not finish"
        assert not self.errors, self.errors
        assert self.outcome[0].message is None or self.outcome[0].exit_code, self.outcome[0]
        return self.outcome[0]

    def output(self) -> str:
        return self.stdout.read_text()

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + 20
        while text not in self.output():
            assert time.monotonic() < deadline, f"the application never printed {text!r}"
            time.sleep(0.01)

    def policy(self) -> Path:
        path = self.work / "policy.json"
        doc = {
            "trusted_roots": [{"name": "haven-simulation", "certificate": "sim-root.der"}],
            "sgx": {"mrenclave": self.app.enclave.image.mrenclave().hex()},
        }
        path.write_text(json.dumps(doc))
        return path

    def connect(self) -> Any:
        return open_stream(
            "127.0.0.1", self.port, self.policy(), collateral=self.work / "collateral.json", timeout=10
        )


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Any]:
    made: list[tuple[Application, Any]] = []

    def make(args: Sequence[str] = (), *, tls: str = "ra-tls", port: int | None = None) -> Server:
        port = port or free_port()
        work = tmp_path / f"w{len(made)}"
        work.mkdir()
        (work / "echo.wasm").write_bytes((BUILD / "echo_server.wasm").read_bytes())
        argv = json.dumps(["echo", *args])
        (work / "app.toml").write_text(
            f'[app]\nmodule = "echo.wasm"\nargv = {argv}\nenv = {{ SECRET = "{SECRET}" }}\n'
            '\n[enclave]\nproduct_id = 1\nsvn = 1\ndebug = false\ntime_limit = "30s"\n\n'
            f'[[listen]]\nport = {port}\ntls = "{tls}"\n'
        )
        bundle = build_bundle(work / "app.toml", app_signing_key())
        platform = make_platform(work / "platform.json")
        (work / "collateral.json").write_text(platform_collateral(platform).to_dcap_qvl_json())
        (work / "sim-root.der").write_bytes(root_ca_certificate(platform).public_bytes(Encoding.DER))
        qe = QuotingEnclave(platform)
        enclave = platform.load_enclave(bundle.image, bundle.sigstruct)
        out = work / "stdout"
        fd = open(out, "wb")  # noqa: SIM115 - closed by the fixture
        backend = RecordingBackend()
        resources = HostResources(
            console=Console(None, fd.fileno(), 2),
            net=backend,
            quotes=QuoteRelay(qe.quote, qe.target_info()),
        )
        app = Application(enclave, resources)
        made.append((app, fd))
        return Server(app, port, out, backend, work)

    yield make
    for app, fd in made:
        app.close()
        fd.close()


def test_ratls_echo_and_the_secret_never_reaches_the_host(launch: Any) -> None:
    server = launch(["2"]).start()
    for round_ in range(2):
        with server.connect() as stream:
            assert stream.peer.mrenclave == server.app.enclave.image.mrenclave().hex()
            message = b"hello enclave %d " % round_ * 1000
            stream.sendall(message)
            stream.close_write()
            received = stream.recv_pending()
            while chunk := stream.recv():
                received += chunk
            assert stream.peer_closed  # the server's close_notify after its shutdown(SHUT_WR)
        assert received == f"secret:{SECRET}\n".encode() + message
    assert server.join().exit_code == 0
    assert "served 2" in server.output()
    relayed = bytes(server.backend.relayed)
    assert len(relayed) > 2 * 16000  # the traffic did pass through the backend
    secret = SECRET.encode()
    for i in range(len(secret) - 15):
        assert secret[i : i + 16] not in relayed
    assert b"hello enclave" not in relayed


def test_plaintext_listener_relays_bytes_as_they_are(launch: Any) -> None:
    server = launch(tls="none").start()
    assert any("plaintext listener" in w for w in server.app.warnings)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"plain bytes")
        s.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := s.recv(4096):
            received += chunk
    assert received == f"secret:{SECRET}\nplain bytes".encode()
    assert server.join().exit_code == 0
    assert SECRET.encode() in server.backend.relayed  # what "none" means: the host reads it


def test_errno_cases_and_poll_readiness(launch: Any) -> None:
    server = launch(["errno"], tls="none").start()
    server.wait_for("ready")  # the non-blocking accept has seen no connection
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        server.wait_for("recv nonblocking")  # before any data: EAGAIN; then poll waits for it
        s.sendall(b"ping")
        received = b""
        while chunk := s.recv(4096):
            received += chunk
    outcome = server.join()
    assert received == b"ping", (outcome, server.output())
    assert outcome.exit_code == 0
    lines = dict(line.split(" -> ") for line in server.output().splitlines() if " -> " in line)
    expected = {
        "fdstat listener": 0,
        "prestat listener": 8,  # EBADF: wasi-libc's preopen scan stops here, after the directories
        "accept stdout": 57,  # ENOTSOCK
        "accept closed": 8,  # EBADF
        "recv listener": 76,  # ENOTCAPABLE: a listener has no fd_read right
        "set nonblock": 0,
        "accept nonblocking": 6,  # EAGAIN: nobody has connected yet
        "poll listener": 0,
        "accept": 0,
        "shutdown none": 28,  # EINVAL
        "recv nonblocking": 6,  # EAGAIN
        "poll conn": 0,
        "recv peek": 0,
        "recv": 0,
        "send": 0,
        "shutdown wr": 0,
        "send after shutdown": 64,  # EPIPE
        "shutdown rd": 0,
        "recv after shutdown": 0,
        "close": 0,
        "recv closed": 8,  # EBADF
    }
    assert {k: int(v) for k, v in lines.items() if k in expected} == expected
    out = server.output()
    assert "listener filetype 6" in out  # SOCKET_STREAM
    assert "event 7 type 1" in out
    assert "peeked ping" in out and "got ping" in out and "count 0" in out


def test_a_client_that_is_not_tls_gets_nothing(launch: Any) -> None:
    server = launch().start()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        received = b""
        while True:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    assert SECRET.encode() not in received
    assert server.join().exit_code == 1  # the app's send failed: the TLS connection broke
    assert SECRET.encode() not in server.backend.relayed


def test_a_policy_for_another_enclave_refuses_the_server(launch: Any) -> None:
    server = launch().start()
    policy = server.policy()
    doc = json.loads(policy.read_text())
    doc["sgx"]["mrenclave"] = "ab" * 32
    policy.write_text(json.dumps(doc))
    from haven.attest.errors import AttestationError

    with pytest.raises(AttestationError):
        open_stream("127.0.0.1", server.port, policy, collateral=server.work / "collateral.json", timeout=10)
    assert server.join().exit_code == 1


def test_listeners_need_a_network_and_a_quote_relay(launch: Any, tmp_path: Path) -> None:
    server = launch()
    enclave = server.app.enclave
    with pytest.raises(NetError, match="no network"):
        Application(enclave, HostResources())
    with pytest.raises(NetError, match="relays no quotes"):
        Application(enclave, HostResources(net=LocalNetBackend()))


def test_a_port_in_use_is_one_clear_error(launch: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(NetError, match=f"cannot listen on port {port}"):
            launch(port=port)


def test_a_truncated_tls_stream_is_an_error_not_an_end(launch: Any) -> None:
    # A peer that ends the TCP stream without close_notify may have had its data cut short (RFC 8446
    # §6.1): the application's recv fails (ECONNRESET) instead of seeing a clean end of stream.
    server = launch().start()
    stream = server.connect()
    stream.sendall(b"partial")
    stream.socket.close()  # no close_notify
    assert server.join().exit_code == 1
    assert "served" not in server.output()
