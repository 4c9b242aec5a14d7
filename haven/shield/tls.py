"""TLS terminated inside the enclave: sans-I/O endpoints over ``ssl.MemoryBIO``.

The enclave has no sockets. The host carries TCP bytes (``net_read``/``net_write``); TLS runs here, on
Python's ``ssl`` (OpenSSL) over memory BIOs, so the host only ever sees ciphertext. An endpoint takes
ciphertext in (``receive``) and hands ciphertext out (``send``, ``outgoing``, ``close``); it never
touches a socket, a clock or a file after its context is built.

- :class:`TlsServer` serves an enclave listener with the enclave's RA-TLS identity.
- :class:`TlsClient` is the enclave's outgoing connection (the key broker, later) and the relying
  party's: it completes the handshake without CA validation — the peer's certificate is self-signed,
  its evidence is the trust — and hands the peer's certificate to a verifier before it returns any
  application data.

Both speak TLS 1.3 only (RFC 8446): every handshake is forward secret and authenticated by a
CertificateVerify signature (RFC 8446 §4.4.3), which OpenSSL checks whatever the verify mode, so the
peer proves possession of the key that its evidence binds. Session tickets are off: a resumed session
would carry no certificate to check.

Loading a key into ``ssl.SSLContext``: ``load_cert_chain`` takes only file names (there is no in-memory
API). The key is written encrypted under a one-time random password (PKCS#8, the password never leaves
this process's memory), to an anonymous ``memfd`` named through ``/proc/self/fd`` where Linux has them,
else to a private temporary directory (mode 0700) that is removed at once. A context is built once per
identity and reused for every connection, so this happens once, at boot, before the enclave process is
confined.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from haven.errors import HavenError

# RFC 8446: the only version either endpoint accepts.
TLS_VERSION = ssl.TLSVersion.TLSv1_3
# Plaintext is read out of OpenSSL in pieces of at most one TLS record (RFC 8446 §5.1: 2^14 bytes).
_READ_CHUNK = 1 << 14

T = TypeVar("T")
_TRUNCATED = "the connection ended without close_notify: its data may be truncated"


class TlsError(HavenError):
    """A TLS connection failed: a handshake or record OpenSSL refused, or a use out of order."""


def _reason(e: ssl.SSLError) -> str:
    """One line for the console: OpenSSL's reason code, without the C source location."""
    return (e.reason or str(e) or type(e).__name__).replace("_", " ").lower()


class TlsIdentity:
    """A certificate and its private key, as a TLS server presents them; the context is built once."""

    def __init__(self, certificate_der: bytes, private_key: ec.EllipticCurvePrivateKey) -> None:
        self.certificate_der = bytes(certificate_der)
        self._key: ec.EllipticCurvePrivateKey | None = private_key
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        if self._key is None:
            raise TlsError("the TLS identity's key has been wiped")
        return self._key

    def forget(self) -> None:
        """Drop the key and the context (fail-stop wipes keys).

        Python cannot overwrite the key's memory itself; this removes every reference this object holds,
        and OpenSSL clears a private key when it frees it (``BN_clear_free``) — once the last connection
        made with the context is gone too.
        """
        with self._lock:
            self._key = None
            self._context = None

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}({len(self.certificate_der)}-byte certificate)"

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.certificate_der)

    def server_context(self) -> ssl.SSLContext:
        """The ``ssl.SSLContext`` serving this identity, built on first use and then shared."""
        with self._lock:
            if self._context is None:
                self._context = server_context(self)
            return self._context


def server_context(identity: TlsIdentity) -> ssl.SSLContext:
    """A TLS 1.3 server context presenting ``identity`` (no client certificates, no tickets)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSION
    ctx.num_tickets = 0
    _load_identity(ctx, identity)
    return ctx


def client_context() -> ssl.SSLContext:
    """A TLS 1.3 client context that accepts any certificate *for the handshake only*.

    RA-TLS certificates are self-signed: no CA can vouch for them. Whoever uses this context must check
    the peer's certificate (its evidence) after the handshake and before trusting a byte of the
    connection — :class:`TlsClient` does, and so does ``haven.ratls.connect``.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = TLS_VERSION
    return ctx


def _load_identity(ctx: ssl.SSLContext, identity: TlsIdentity) -> None:
    cert_pem = x509.load_der_x509_certificate(identity.certificate_der).public_bytes(
        serialization.Encoding.PEM
    )
    password = secrets.token_bytes(32)
    key_pem = identity.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    try:
        try:
            with _memory_files(cert_pem, key_pem) as (cert_path, key_path):
                ctx.load_cert_chain(cert_path, key_path, password=password)
                return
        except ssl.SSLError:
            raise
        except OSError:
            pass  # no memfd, or no /proc to name it by: a private directory instead
        with _private_files(cert_pem, key_pem) as (cert_path, key_path):
            ctx.load_cert_chain(cert_path, key_path, password=password)
    except ssl.SSLError as e:
        raise TlsError(f"cannot load the TLS identity: {_reason(e)}") from None
    except OSError as e:
        raise TlsError(f"cannot load the TLS identity: {e.strerror or type(e).__name__}") from None


@contextlib.contextmanager
def _memory_files(cert_pem: bytes, key_pem: bytes) -> Iterator[tuple[str, str]]:
    """Two anonymous memory files (Linux memfd_create), never linked into any file system."""
    if not hasattr(os, "memfd_create"):
        raise OSError("no memfd_create")
    fds: list[int] = []
    try:
        for name, data in (("haven-tls-cert", cert_pem), ("haven-tls-key", key_pem)):
            fd = os.memfd_create(name, os.MFD_CLOEXEC)
            fds.append(fd)
            with memoryview(data) as view:
                written = 0
                while written < len(view):
                    written += os.write(fd, view[written:])
        paths = tuple(f"/proc/self/fd/{fd}" for fd in fds)
        if not all(os.path.exists(p) for p in paths):
            raise OSError("no /proc/self/fd")
        yield paths[0], paths[1]
    finally:
        for fd in fds:
            os.close(fd)


@contextlib.contextmanager
def _private_files(cert_pem: bytes, key_pem: bytes) -> Iterator[tuple[str, str]]:
    """Two files in a fresh directory only this user can enter (mode 0700), removed on exit."""
    with tempfile.TemporaryDirectory(prefix="haven-tls-") as tmp:
        os.chmod(tmp, 0o700)
        paths = []
        for name, data in (("cert.pem", cert_pem), ("key.pem", key_pem)):
            path = Path(tmp) / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            paths.append(str(path))
        yield paths[0], paths[1]


class _Endpoint:
    """What a TLS server and client share: the memory BIOs, reading, writing and closing."""

    def __init__(self, ctx: ssl.SSLContext, *, server_side: bool) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = ctx.wrap_bio(self._in, self._out, server_side=server_side)
        self._handshake_done = False
        self._peer_closed = False  # the peer's close_notify arrived
        self._closed = False  # ours was sent
        self._failed: str | None = None

    # -- state ---------------------------------------------------------------------------------------

    @property
    def handshake_done(self) -> bool:
        return self._handshake_done

    @property
    def peer_closed(self) -> bool:
        """The peer sent close_notify: it will send nothing more (it may still read)."""
        return self._peer_closed

    @property
    def closed(self) -> bool:
        """We sent close_notify: ``send`` is over."""
        return self._closed

    @property
    def failed(self) -> bool:
        return self._failed is not None

    @property
    def version(self) -> str | None:
        return self._ssl.version()

    @property
    def cipher(self) -> str | None:
        c = self._ssl.cipher()
        return c[0] if c else None

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise TlsError(f"the TLS connection failed earlier ({self._failed})")

    def _fail(self, why: str) -> TlsError:
        self._failed = why
        return TlsError(why)

    # -- bytes in and out ----------------------------------------------------------------------------

    def outgoing(self) -> bytes:
        """Ciphertext waiting to be shipped to the peer (handshake messages, records, alerts)."""
        return self._out.read()

    def receive(self, data: bytes) -> bytes:
        """Feed ciphertext from the peer; return the plaintext it completes (possibly none).

        Drives the handshake while it is in progress; call :meth:`outgoing` afterwards to ship what
        the handshake (or an alert) produced.
        """
        self._check_usable()
        if data:
            if self._in.eof:
                raise self._fail("ciphertext arrived after the end of the stream")
            self._in.write(data)
        if not self._handshake_done and not self._handshake():
            return b""
        return self._read_plaintext()

    def receive_eof(self) -> None:
        """The transport ended. Unless the peer sent close_notify first, that is a truncation."""
        self._in.write_eof()
        if not self._peer_closed and self._failed is None:
            if self._handshake_done:
                self._read_plaintext()  # a close_notify may be the last thing fed
            if not self._handshake_done:
                raise self._fail("the connection ended during the TLS handshake")
            if not self._peer_closed:
                raise self._fail(_TRUNCATED)

    def send(self, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext``; return the ciphertext to ship (with anything else pending)."""
        self._check_usable()
        if not self._handshake_done:
            raise TlsError("cannot send application data before the TLS handshake completes")
        if self._closed:
            raise TlsError("cannot send after close_notify")
        if plaintext:
            try:
                self._ssl.write(plaintext)
            except ssl.SSLError as e:
                raise self._fail(f"TLS write failed: {_reason(e)}") from None
        return self.outgoing()

    def close(self) -> bytes:
        """Send close_notify (we send no more; the peer may); return the ciphertext to ship."""
        if not self._closed and self._failed is None and self._handshake_done:
            self._closed = True
            # RFC 8446 §6.1: close_notify closes our direction only. unwrap() writes it, then wants to
            # read the peer's; that is the caller's business (receive() still works).
            with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLWantWriteError):
                self._ssl.unwrap()
        self._closed = True
        return self.outgoing()

    def _handshake(self) -> bool:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLError as e:
            raise self._fail(f"TLS handshake failed: {_reason(e)}") from None
        self._handshake_done = True
        self._handshake_complete()
        return True

    def _handshake_complete(self) -> None:
        """Hook: runs once, when the handshake has completed and before any plaintext is read."""

    def _read_plaintext(self) -> bytes:
        chunks: list[bytes] = []
        while not self._peer_closed:
            try:
                chunk = self._ssl.read(_READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self._peer_closed = True
                break
            except ssl.SSLEOFError:
                raise self._fail(_TRUNCATED) from None
            except ssl.SSLError as e:
                raise self._fail(f"TLS record refused: {_reason(e)}") from None
            if not chunk:  # OpenSSL reports a received close_notify as an empty read
                self._peer_closed = True
                break
            chunks.append(chunk)
        return b"".join(chunks)


class TlsServer(_Endpoint):
    """The enclave's end of one accepted connection: ``TlsServer(identity)``.

    ``identity`` is a :class:`TlsIdentity` (its context is built once and shared) or a ready
    ``ssl.SSLContext``. Feed ciphertext with :meth:`receive` (plaintext comes back), ship
    :meth:`outgoing`; :meth:`send` encrypts; :meth:`close` sends close_notify.
    """

    def __init__(self, identity: TlsIdentity | ssl.SSLContext) -> None:
        ctx = identity if isinstance(identity, ssl.SSLContext) else identity.server_context()
        super().__init__(ctx, server_side=True)


class TlsClient(_Endpoint, Generic[T]):
    """A client connection whose peer is trusted only once ``verify(certificate DER)`` accepts it.

    ``start()`` returns the ClientHello to ship. When the handshake completes, ``verify`` runs on the
    peer's certificate; whatever it raises fails the connection (and propagates), and no plaintext is
    returned before it has returned. Its result is :attr:`peer`.
    """

    def __init__(self, verify: Callable[[bytes], T], *, context: ssl.SSLContext | None = None) -> None:
        super().__init__(context or client_context(), server_side=False)
        self._verify = verify
        self._peer: T | None = None

    @property
    def peer(self) -> T:
        if self._peer is None:
            raise TlsError("the peer has not been verified (the handshake is not complete)")
        return self._peer

    def start(self) -> bytes:
        """Begin the handshake: the ClientHello to ship."""
        self._check_usable()
        if not self._handshake_done:
            self._handshake()
        return self.outgoing()

    def _handshake_complete(self) -> None:
        der = self._ssl.getpeercert(binary_form=True)
        if der is None:
            raise self._fail("the peer presented no certificate")
        try:
            self._peer = self._verify(der)
        except BaseException:
            self._failed = "the peer's certificate was refused"
            raise
