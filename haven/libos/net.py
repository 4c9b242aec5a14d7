"""Sockets for the listeners the manifest preopens: the host's streams below, RA-TLS inside.

The enclave has no network of its own. The host accepts TCP connections and relays their bytes
(``net_listen``, ``net_accept``, ``net_read``, ``net_write``, ``net_close``, ``net_poll`` of the host
interface); a ``NetBackend`` (:mod:`haven.libos.netbackend`) is that relay — ``HostNetBackend`` over the
host channel, ``LocalNetBackend`` with this process's own non-blocking sockets (in-process runs, tests).

On a listener whose manifest entry says ``tls = "ra-tls"`` every accepted connection runs a
:class:`~haven.shield.tls.TlsServer` here, in the enclave: ciphertext from the host goes in, plaintext
comes out to the application; the application's plaintext is encrypted before the host sees it. The
application reads and writes plaintext on an ordinary WASI socket and never sees TLS. The certificate
is the enclave's RA-TLS identity, made once at boot (:func:`ratls_identity_for`). ``tls = "none"``
relays the application's bytes as they are — the owner chose, in the measured manifest, to let the
host read that traffic (see ``docs/libos.md``).

Handles are opaque numbers the host chose; the host interface's rules already refuse a reused handle
or an answer about a handle that was not asked about.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from haven.libos.errno import (
    EVENTRWFLAGS_HANGUP,
    RIFLAGS_PEEK,
    RIFLAGS_WAITALL,
    RIGHTS_LISTENER,
    RIGHTS_SOCKET,
    SDFLAGS_RD,
    SDFLAGS_WR,
    Errno,
    Fdflags,
    Filetype,
    WasiError,
)
from haven.libos.fdtable import SocketDesc
from haven.libos.netbackend import NetBackend, NetError
from haven.shield.tls import TlsError, TlsIdentity, TlsServer
from haven.tee.sgx.structs import Report, TargetInfo

# One crossing moves at most this much (the host interface's MAX_NET is 256 KiB; a TLS record is
# 16 KiB, RFC 8446 §5.1, so a few records per read keeps crossings few without large copies).
READ_CHUNK = 64 << 10
# Ciphertext a non-blocking sender may leave queued in the enclave before EAGAIN (its own buffer,
# like a kernel's socket send buffer).
MAX_QUEUED = 256 << 10
# A blocking wait polls the host in slices, so the run's time limit is checked between them.
WAIT_SLICE_MS = 200



# -- the RA-TLS identity ---------------------------------------------------------------------------------

# The quoting service: a REPORT in, a quote out (in-process QE, or the host's `quote` call).
Quoting = Callable[[Report], bytes]


def ratls_identity_for(enclave: Any, quote_fn: Quoting, target: TargetInfo) -> TlsIdentity:
    """The enclave's RA-TLS key and certificate, made once at boot, with its TLS context built now —
    before the enclave process is confined (``load_cert_chain`` needs a file, see ``shield.tls``).

    ``quote_fn`` turns a REPORT for ``target`` into a quote: ``QuotingEnclave.quote`` in process, or
    :func:`channel_quoting` over the host channel; every quote that comes back is checked."""
    # Imported here: only an application with an RA-TLS listener pays for the X.509 and CBOR code.
    from haven.shield.ratls import make_ratls_identity

    identity = make_ratls_identity(enclave, quote_fn, target=target)
    identity.server_context()
    return identity


def channel_quoting(channel: Any) -> tuple[Quoting, TargetInfo]:
    """The quoting function and the quoting enclave's TARGETINFO, through the host channel."""
    target = TargetInfo.from_bytes(bytes(channel.quote_target()))
    return (lambda report: bytes(channel.quote(report.to_bytes()))), target


# -- the stack: listeners and connections ---------------------------------------------------------------

Remaining = Callable[[], float | None]


def _no_limit() -> float | None:
    return None


class NetStack:
    """Every socket of one application run over one backend; closes them all at the end."""

    def __init__(self, backend: NetBackend, identity: TlsIdentity | None = None) -> None:
        self.backend = backend
        self.identity = identity
        self.remaining: Remaining = _no_limit  # the run's time limit, once the context exists
        self.sockets: list[Listener | Connection] = []

    def listen(self, port: int, tls: str) -> Listener:
        if tls == "ra-tls" and self.identity is None:
            raise NetError(f"the listener on port {port} needs an RA-TLS identity, and there is none")
        if tls not in ("ra-tls", "none"):
            raise NetError(f"the listener on port {port}: unknown tls {tls!r}")
        listener = Listener(self, port, self.backend.listen(port), tls == "ra-tls")
        self.sockets.append(listener)
        return listener

    def wait(self, readable: Sequence[int], writable: Sequence[int], timeout: float | None) -> bool:
        """Wait until a handle is ready or ``timeout`` seconds pass (None: no end but the run's time
        limit); True if something is ready."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            left = self.remaining()  # raises once the run's time limit has passed
            slice_s = WAIT_SLICE_MS / 1000
            if end is not None:
                slice_s = min(slice_s, max(0.0, end - time.monotonic()))
            if left is not None:
                slice_s = min(slice_s, left)
            r, w = self.backend.poll(readable, writable, int(slice_s * 1000))
            if r or w:
                return True
            if end is not None and time.monotonic() >= end:
                return False

    def close_all(self) -> None:
        sockets, self.sockets = self.sockets, []
        for s in reversed(sockets):
            s.close()


class Listener:
    """A preopened listening socket: ``sock_accept`` only."""

    def __init__(self, stack: NetStack, port: int, handle: int, tls: bool) -> None:
        self.stack = stack
        self.port = port
        self.handle: int | None = handle
        self.tls = tls
        self.desc: SocketDesc | None = None

    def _handle(self) -> int:
        if self.handle is None:
            raise WasiError(Errno.BADF)
        return self.handle

    @property
    def nonblocking(self) -> bool:
        return self.desc is not None and bool(self.desc.fdflags & Fdflags.NONBLOCK)

    def accept(self) -> Connection:
        h = self._handle()
        while True:
            conn = self.stack.backend.accept(h)
            if conn is not None:
                break
            if self.nonblocking:
                raise WasiError(Errno.AGAIN)
            self.stack.wait([h], [], None)
        identity = self.stack.identity if self.tls else None
        c = Connection(self.stack, conn, TlsServer(identity) if identity is not None else None)
        self.stack.sockets.append(c)
        return c

    def recv_into(self, buffers: Sequence[memoryview], flags: int) -> tuple[int, int]:
        raise WasiError(Errno.NOTCONN)

    def send(self, buffers: Sequence[memoryview | bytes]) -> int:
        raise WasiError(Errno.NOTCONN)

    def shutdown(self, how: int) -> None:
        raise WasiError(Errno.NOTCONN)

    def readiness(self, kind_read: bool) -> tuple[bool, int, int]:
        """(ready, nbytes, eventrwflags) now, for ``poll_oneoff``: a pending connection is readable."""
        if not kind_read:
            return False, 0, 0
        r, _ = self.stack.backend.poll([self._handle()], [], 0)
        return bool(r), 1, 0

    def wait_handles(self, kind_read: bool) -> tuple[list[int], list[int]]:
        return ([self._handle()], []) if kind_read else ([], [])

    def close(self) -> None:
        h, self.handle = self.handle, None
        if h is not None:
            self.stack.backend.close(h)


class Connection:
    """An accepted stream. With RA-TLS, a ``TlsServer`` sits between the host's bytes and the
    application's: ``_plain`` is decrypted data not read yet, ``_out`` ciphertext not shipped yet."""

    def __init__(self, stack: NetStack, handle: int, tls: TlsServer | None) -> None:
        self.stack = stack
        self.handle: int | None = handle
        self.tls = tls
        self.desc: SocketDesc | None = None
        self._plain = bytearray()
        self._out = bytearray()
        self._eof = False  # the peer sends no more (FIN, or close_notify)
        self._rd_shut = False
        self._wr_shut = False
        self._error: Errno | None = None  # the stream broke: every later call says so

    @property
    def nonblocking(self) -> bool:
        return self.desc is not None and bool(self.desc.fdflags & Fdflags.NONBLOCK)

    def _handle(self) -> int:
        if self.handle is None:
            raise WasiError(Errno.BADF)
        return self.handle

    def _broken(self, errno: Errno) -> WasiError:
        self._error = errno
        return WasiError(errno)

    # -- bytes in --------------------------------------------------------------------------------------

    def _pump(self) -> bool:
        """One read from the host, through TLS if any; True if it brought anything (data or end)."""
        if self._error is not None:
            raise WasiError(self._error)
        if self._eof:
            return False
        data = self.stack.backend.read(self._handle(), READ_CHUNK)
        if data is None:
            return False
        tls = self.tls
        try:
            if not data:
                self._eof = True
                if tls is not None:
                    tls.receive_eof()  # a missing close_notify is a truncation: an error, not an end
                return True
            if tls is None:
                self._plain += data
            else:
                self._plain += tls.receive(data)
                self._out += tls.outgoing()  # handshake messages, key updates, alerts
                if tls.peer_closed:
                    self._eof = True
        except TlsError:
            if tls is not None:
                self._out += tls.outgoing()  # the alert, if OpenSSL made one
            self._flush(block=False)
            raise self._broken(Errno.CONNRESET) from None
        self._flush(block=False)
        return True

    def recv_into(self, buffers: Sequence[memoryview], flags: int) -> tuple[int, int]:
        want = sum(len(b) for b in buffers)
        if self._rd_shut:
            return 0, 0
        while True:
            enough = len(self._plain) >= want if flags & RIFLAGS_WAITALL else bool(self._plain)
            if enough or self._eof or want == 0:
                break
            if self._pump():
                continue
            if self.nonblocking:
                if self._plain:
                    break
                raise WasiError(Errno.AGAIN)
            self.stack.wait([self._handle()], [], None)
        count = 0
        for b in buffers:
            n = min(len(b), len(self._plain) - count)
            b[:n] = self._plain[count : count + n]
            count += n
        if not flags & RIFLAGS_PEEK:
            del self._plain[:count]
        return count, 0

    # -- bytes out -------------------------------------------------------------------------------------

    def _flush(self, *, block: bool) -> None:
        while self._out:
            n = self.stack.backend.write(self._handle(), bytes(self._out[:READ_CHUNK]))
            if n:
                del self._out[:n]
                continue
            if not block:
                return
            self.stack.wait([], [self._handle()], None)

    def _handshake(self) -> None:
        """Drive the TLS handshake until it completes (EAGAIN if non-blocking and it cannot yet)."""
        tls = self.tls
        assert tls is not None
        while not tls.handshake_done:
            if self._eof:
                raise self._broken(Errno.CONNRESET)
            if self._pump():
                continue
            if self.nonblocking:
                raise WasiError(Errno.AGAIN)
            self.stack.wait([self._handle()], [], None)

    def send(self, buffers: Sequence[memoryview | bytes]) -> int:
        if self._error is not None:
            raise WasiError(self._error)
        if self._wr_shut:
            raise WasiError(Errno.PIPE)
        data = b"".join(bytes(b) for b in buffers)
        if not data:
            return 0
        h = self._handle()
        if self.tls is None:
            while True:
                n = self.stack.backend.write(h, data)
                if n:
                    return n
                if self.nonblocking:
                    raise WasiError(Errno.AGAIN)
                self.stack.wait([], [h], None)
        self._handshake()
        if self.nonblocking:
            self._flush(block=False)
            if len(self._out) >= MAX_QUEUED:
                raise WasiError(Errno.AGAIN)
        try:
            self._out += self.tls.send(data)
        except TlsError:
            raise self._broken(Errno.PIPE) from None
        self._flush(block=not self.nonblocking)
        return len(data)

    def shutdown(self, how: int) -> None:
        if self.handle is None:
            raise WasiError(Errno.BADF)
        if how & SDFLAGS_RD:
            self._rd_shut = True
            self._plain.clear()
        if how & SDFLAGS_WR and not self._wr_shut:
            self._wr_shut = True
            if self.tls is not None and self.tls.handshake_done and self._error is None:
                self._out += self.tls.close()  # close_notify: TLS's half-close (RFC 8446 §6.1)
                self._flush(block=not self.nonblocking)
        if self._rd_shut and self._wr_shut and self.tls is None:
            # The host interface has no half-close: a plaintext peer sees the end at the full close.
            self.close()

    # -- readiness -------------------------------------------------------------------------------------

    def readiness(self, kind_read: bool) -> tuple[bool, int, int]:
        """(ready, nbytes, eventrwflags) now, for ``poll_oneoff``."""
        if self.handle is None or self._error is not None:
            return True, 0, EVENTRWFLAGS_HANGUP
        if not kind_read:
            if self._wr_shut:
                return True, 0, EVENTRWFLAGS_HANGUP
            if self.tls is not None and not self.tls.handshake_done:
                return False, 0, 0  # writable once the handshake has completed
            _, w = self.stack.backend.poll([], [self.handle], 0)
            return bool(w), 1, 0
        while not self._plain and not self._eof and not self._rd_shut:
            try:
                if not self._pump():
                    break
            except WasiError:
                return True, 0, EVENTRWFLAGS_HANGUP
        if self._plain:
            return True, len(self._plain), 0
        if self._eof or self._rd_shut:
            return True, 0, EVENTRWFLAGS_HANGUP
        return False, 0, 0

    def wait_handles(self, kind_read: bool) -> tuple[list[int], list[int]]:
        if self.handle is None:
            return [], []
        if kind_read or (self.tls is not None and not self.tls.handshake_done):
            return [self.handle], []
        return [], [self.handle]

    def close(self) -> None:
        h, self.handle = self.handle, None
        if h is None:
            return
        try:
            if self.tls is not None and self.tls.handshake_done and self._error is None:
                self._out += self.tls.close()
            self.handle = h
            self._flush(block=False)  # best effort: a close never waits on the host
        except WasiError:
            pass
        finally:
            self.handle = None
            self._plain.clear()
            self.stack.backend.close(h)


Socket = Listener | Connection


def wait_sockets(items: Sequence[tuple[Socket, bool]], timeout: float | None) -> None:
    """Block until one of ``items`` (socket, wants-read) may be ready, or ``timeout`` seconds pass."""
    if not items:
        return
    readable: list[int] = []
    writable: list[int] = []
    for sock, kind_read in items:
        r, w = sock.wait_handles(kind_read)
        readable += r
        writable += w
    stack = items[0][0].stack
    if not readable and not writable:
        return
    stack.wait(readable, writable, timeout)


def preopen_listeners(fds: Any, stack: NetStack, listeners: Sequence[Listener], remaining: Remaining) -> None:
    """Put the listeners in the descriptor table, after the preopened directories, in port order."""
    stack.remaining = remaining
    for listener in listeners:
        desc = SocketDesc(Filetype.SOCKET_STREAM, RIGHTS_LISTENER, RIGHTS_SOCKET, socket=listener)
        listener.desc = desc
        fds.add(desc)


@dataclass(frozen=True)
class QuoteRelay:
    """How the enclave gets its RA-TLS quotes: the quoting function and the quoting enclave's target."""

    quote: Quoting
    target: TargetInfo

    @classmethod
    def over(cls, channel: Any) -> QuoteRelay:
        quote, target = channel_quoting(channel)
        return cls(quote, target)
