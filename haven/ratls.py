"""The RA-TLS client: connect to an enclave and trust it for what its certificate's evidence proves.

An enclave's TLS certificate is self-signed; what vouches for it is the quote inside (see
``haven.shield.ratls`` for the format, Gramine's). A client

1. completes a TLS 1.3 handshake without CA validation (the server still proves it holds the
   certificate's key: TLS 1.3 CertificateVerify);
2. reads the evidence from the certificate — the standard TCG DICE extension if present, else
   Gramine's legacy one — and checks that the certificate's key is the one the evidence names;
3. verifies the quote (signatures, certificate chains, CRLs, TCB Info, QE Identity) with the
   attestation verifier, at ``now``, against the collateral and the roots the policy trusts;
4. checks that the verified report data binds that key (or the claims naming it);
5. appraises the evidence against the policy (MRENCLAVE, MRSIGNER, TCB status, debug...);

and only then hands the connection over. Any failure closes it and raises: an ``AttestationError``
(kind ``malformed``, ``chain``, ``policy``...) for the quote and the policy, a ``RatlsError`` for the
certificate and the binding, a ``TlsError`` or ``RatlsConnectError`` for the connection.

``connect`` returns a standard ``ssl.SSLSocket``. :func:`open_stream` returns a :class:`RatlsStream`
driven by the same sans-I/O ``TlsClient`` the enclave uses for its own outgoing connections, which
can also half-close (send close_notify and keep reading the reply).
"""

from __future__ import annotations

import datetime
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from haven.attest.appraisal import Appraisal, appraise
from haven.attest.dcap.collateral import Collateral, load_collateral
from haven.attest.errors import AttestationError
from haven.attest.policy import Policy, load_policy
from haven.attest.result import VerifiedEvidence
from haven.attest.verify import detect_tee, resolve_roots, verify_evidence
from haven.errors import HavenError
from haven.shield.ratls import Extension, RatlsError, parse_ratls_certificate
from haven.shield.tls import TlsClient, TlsError, client_context

__all__ = [
    "RatlsConnectError",
    "RatlsError",
    "RatlsStream",
    "VerifiedPeer",
    "connect",
    "open_stream",
    "verify_ratls_certificate",
]

DEFAULT_TIMEOUT = 10.0
_RECV = 1 << 16
_EXECUTABLES = "executables"  # the AR4SI claim of code reference values (MRENCLAVE, MRSIGNER...)
_NO_CODE_IDENTITY = (
    "the policy names no code measurement (sgx mrenclave or mrsigner, tdx mrtd...): "
    "it would accept any enclave"
)


class RatlsConnectError(HavenError):
    """The TCP connection could not be made, or broke."""


@dataclass(frozen=True)
class VerifiedPeer:
    """An enclave whose RA-TLS certificate verified and whose evidence the policy accepted."""

    evidence: VerifiedEvidence
    appraisal: Appraisal
    extension: Extension  # which extension the evidence came from
    public_key_sha256: bytes  # SHA-256 of the certificate's SubjectPublicKeyInfo
    certificate: bytes  # DER
    claims: Mapping[str, Any] = field(default_factory=dict)  # tcg-dice: the claims (pubkey-hash, nonce)

    @property
    def mrenclave(self) -> str | None:
        return self.evidence.measurements.get("mrenclave")

    @property
    def mrsigner(self) -> str | None:
        return self.evidence.measurements.get("mrsigner")

    @property
    def tcb_status(self) -> str:
        return self.evidence.tcb_status

    @property
    def ear_status(self) -> str:
        return self.appraisal.status

    def to_json(self) -> dict[str, Any]:
        ear = {k: v for k, v in self.appraisal.to_ear().items() if k != "ear.veraison.annotated-evidence"}
        return {
            **self.evidence.to_json(),
            "ratls_extension": self.extension,
            "public_key_sha256": self.public_key_sha256.hex(),
            "ear": ear,
        }


def _policy(policy: Policy | Path | str) -> Policy:
    return policy if isinstance(policy, Policy) else load_policy(Path(policy))


def _collateral(collateral: Collateral | Path | str) -> Collateral:
    return collateral if isinstance(collateral, Collateral) else load_collateral(Path(collateral))


def _pins_code(policy: Policy, tee: str | None = None) -> bool:
    """Whether the policy names a code measurement (for ``tee``, or for any TEE)."""
    sections = [checks for name, checks in policy.references.items() if tee is None or name == tee]
    return any(c.spec.rule == "hex" and c.spec.claim == _EXECUTABLES for checks in sections for c in checks)


def _check_policy(policy: Policy) -> None:
    """A policy fit for RA-TLS: it pins the code, and leaves the report data to the binding."""
    if policy.report_data is not None:
        raise AttestationError(
            "policy",
            "policy report_data: RA-TLS report data is the hash of the certificate's key, "
            "so a policy for RA-TLS cannot name it",
        )
    if not _pins_code(policy):
        raise AttestationError("policy", _NO_CODE_IDENTITY)


class _Verifier:
    """Everything fixed about a connection's verification, resolved once (before any network I/O)."""

    def __init__(
        self,
        policy: Policy | Path | str,
        collateral: Collateral | Path | str,
        roots: Sequence[x509.Certificate],
        now: datetime.datetime | None,
    ) -> None:
        self.policy = _policy(policy)
        _check_policy(self.policy)
        self.collateral = _collateral(collateral)
        self.roots = resolve_roots(self.policy, roots)
        self.now = now

    def __call__(self, cert_der: bytes) -> VerifiedPeer:
        found = parse_ratls_certificate(cert_der)
        tee = detect_tee(found.quote)
        if tee not in ("sgx", "tdx"):
            raise RatlsError(
                "malformed", f"the {found.extension} extension holds {tee} evidence, not a DCAP quote"
            )
        verified = verify_evidence(found.quote, collateral=self.collateral, roots=self.roots, now=self.now)
        found.check_binding(verified.report_data)
        appraisal = appraise(verified, self.policy)
        appraisal.check()
        if not _pins_code(self.policy, verified.tee):
            # e.g. {"sgx": {"mrenclave": ...}, "tdx": {}}: any TD would do. Not for a connection.
            raise AttestationError("policy", f"{verified.tee} evidence: {_NO_CODE_IDENTITY}")
        return VerifiedPeer(
            evidence=verified,
            appraisal=appraisal,
            extension=found.extension,
            public_key_sha256=found.spki_sha256,
            certificate=bytes(cert_der),
            claims=found.claims,
        )


def verify_ratls_certificate(
    cert_der: bytes,
    policy: Policy | Path | str,
    *,
    collateral: Collateral | Path | str,
    now: datetime.datetime | None = None,
    roots: Sequence[x509.Certificate] = (),
) -> VerifiedPeer:
    """Verify an RA-TLS certificate's evidence and appraise it against ``policy``; raise if refused.

    ``collateral`` is parsed collateral or a path (dcap-qvl JSON or a PCS directory); ``roots`` are
    trusted roots given explicitly (like ``--root``), combined with the policy's ``trusted_roots``.
    """
    return _Verifier(policy, collateral, roots, now)(cert_der)


def _tcp(host: str, port: int, timeout: float) -> socket.socket:
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise RatlsConnectError(f"port must be 1 to 65535, not {port!r}")
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        raise RatlsConnectError(f"cannot connect to {host}:{port}: timed out after {timeout} s") from None
    except OSError as e:
        raise RatlsConnectError(f"cannot connect to {host}:{port}: {e.strerror or e}") from None


def connect(
    host: str,
    port: int,
    policy: Policy | Path | str,
    *,
    collateral: Collateral | Path | str,
    roots: Sequence[x509.Certificate] = (),
    timeout: float = DEFAULT_TIMEOUT,
    now: datetime.datetime | None = None,
) -> tuple[ssl.SSLSocket, VerifiedPeer]:
    """Connect over TLS 1.3 and return the socket once the peer's evidence is verified and accepted.

    The socket keeps ``timeout``. On any failure the connection is closed and the error raised.
    """
    verifier = _Verifier(policy, collateral, roots, now)
    raw = _tcp(host, port, timeout)
    try:
        tls = client_context().wrap_socket(raw, server_hostname=None)
    except TimeoutError:
        raw.close()
        raise TlsError(f"TLS handshake with {host}:{port} timed out after {timeout} s") from None
    except ssl.SSLError as e:
        raw.close()
        raise TlsError(f"TLS handshake with {host}:{port} failed: {e.reason or e}") from None
    except OSError as e:
        raw.close()
        raise RatlsConnectError(f"TLS handshake with {host}:{port} broke: {e.strerror or e}") from None
    try:
        der = tls.getpeercert(binary_form=True)
        if der is None:
            raise TlsError(f"{host}:{port} presented no certificate")
        peer = verifier(der)
    except BaseException:
        tls.close()
        raise
    return tls, peer


class RatlsStream:
    """A verified RA-TLS connection over a socket, driven by the sans-I/O ``TlsClient``.

    ``sendall``, ``recv`` (``b""`` once the peer has closed), ``close_write`` (close_notify: the peer
    sees the end of our data, and may still answer), ``close``. :attr:`peer` is the verified enclave.
    The socket is blocking with the timeout it was opened with.
    """

    def __init__(self, sock: socket.socket, client: TlsClient[VerifiedPeer]) -> None:
        self._sock = sock
        self._tls = client
        self._pending = b""  # plaintext received with the handshake

    @property
    def peer(self) -> VerifiedPeer:
        return self._tls.peer

    @property
    def socket(self) -> socket.socket:
        return self._sock

    @property
    def peer_closed(self) -> bool:
        """The enclave sent close_notify: nothing more will come."""
        return self._tls.peer_closed

    def _ship(self, data: bytes) -> None:
        if data:
            try:
                self._sock.sendall(data)
            except OSError as e:
                raise RatlsConnectError(f"the connection broke: {e.strerror or e}") from None

    def receive_once(self) -> bytes | None:
        """One read from the socket through TLS: the plaintext it completed (maybe none), None at the end.

        For callers that wait on the socket themselves (``selectors``); :meth:`recv` is the usual way.
        """
        try:
            data = self._sock.recv(_RECV)
        except TimeoutError:
            raise RatlsConnectError("the connection timed out") from None
        except OSError as e:
            raise RatlsConnectError(f"the connection broke: {e.strerror or e}") from None
        if not data:
            self._tls.receive_eof()
            return None
        plaintext = self._tls.receive(data)
        self._ship(self._tls.outgoing())
        return plaintext

    def handshake(self) -> None:
        self._ship(self._tls.start())
        while not self._tls.handshake_done:
            plaintext = self.receive_once()
            if plaintext is None or (self._tls.peer_closed and not self._tls.handshake_done):
                raise TlsError("the server closed the connection during the handshake")
            self._pending += plaintext

    def sendall(self, data: bytes) -> None:
        self._ship(self._tls.send(data))

    def recv(self) -> bytes:
        """The next plaintext bytes; ``b""`` when the peer has sent close_notify."""
        while not self._pending and not self._tls.peer_closed:
            plaintext = self.receive_once()
            if plaintext is None:
                break
            self._pending = plaintext
        data, self._pending = self._pending, b""
        return data

    def recv_pending(self) -> bytes:
        """Plaintext that arrived with the handshake and has not been read yet."""
        data, self._pending = self._pending, b""
        return data

    def close_write(self) -> None:
        self._ship(self._tls.close())

    def close(self) -> None:
        try:
            if self._tls.handshake_done and not self._tls.closed and not self._tls.failed:
                self._ship(self._tls.close())
        except HavenError:
            pass  # closing anyway
        finally:
            self._sock.close()

    def __enter__(self) -> RatlsStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_stream(
    host: str,
    port: int,
    policy: Policy | Path | str,
    *,
    collateral: Collateral | Path | str,
    roots: Sequence[x509.Certificate] = (),
    timeout: float = DEFAULT_TIMEOUT,
    now: datetime.datetime | None = None,
) -> RatlsStream:
    """Like :func:`connect`, but a :class:`RatlsStream` (the enclave's own client code, and half-close)."""
    verifier = _Verifier(policy, collateral, roots, now)
    sock = _tcp(host, port, timeout)
    stream = RatlsStream(sock, TlsClient(verifier))
    try:
        stream.handshake()
    except BaseException:
        sock.close()
        raise
    return stream
