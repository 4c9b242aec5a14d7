"""The host's end of the host interface: read the enclave's requests, serve them with a backend, answer.

Derived from the same table as the shield's stubs (:data:`haven.shield.hostif.CALLS`): a request is
decoded by its declared argument types, handed to the backend method named after the call, and the
backend's results are encoded by the declared result types. The backend may answer a call with one
of the error statuses the call declares by raising :class:`HostFailure`.

The host is not trusted, so nothing here is a security check: a malformed request (which only a
broken enclave would send) just ends the session.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Sequence
from typing import Any

from haven.errors import HavenError
from haven.shield.hostif import BY_ID
from haven.shield.hostwire import (
    Call,
    FrameError,
    FrameHeader,
    Part,
    Status,
    decode_request,
    encode_response,
    parse_header,
)

_HEAD = FrameHeader.SIZE
_SCRATCH = 256 << 10

# errno(3) values the host's own failures map to, for calls that declare the status.
_ERRNO_STATUS = {
    errno.EAGAIN: Status.AGAIN,
    errno.EADDRINUSE: Status.ADDRINUSE,
    errno.EACCES: Status.ACCES,
    errno.ECONNREFUSED: Status.CONNREFUSED,
    errno.ECONNRESET: Status.CONNRESET,
    errno.ECONNABORTED: Status.CONNABORTED,
    errno.ETIMEDOUT: Status.TIMEDOUT,
    errno.EHOSTUNREACH: Status.UNREACH,
    errno.ENETUNREACH: Status.UNREACH,
    errno.EPIPE: Status.PIPE,
    errno.EBADF: Status.BADF,
    errno.EINVAL: Status.INVAL,
}


class HostFailure(HavenError):
    """Raised by a backend method: answer the call with ``status`` instead of results."""

    def __init__(self, status: Status, message: str = "") -> None:
        super().__init__(message or status.name)
        self.status = status


class ChannelClosed(HavenError):
    """The enclave closed its end of the channel."""


# What a backend's ``respond`` may ask the dispatcher to do: send frame parts, pause for a number of
# seconds, or (None) close the channel.
Action = list[Part] | float | None


class HostBackend:
    """Serves the calls: one method per call of the table, named after it, taking the declared
    arguments and returning the declared results (None for none, a value for one, a tuple for
    several). Byte-string arguments arrive as memoryviews valid only until the method returns.
    ``respond`` decides what goes back on the wire; honestly, the encoded answer."""

    def respond(
        self, call: Call, seq: int, args: tuple[Any, ...], status: Status, results: tuple[Any, ...],
        frame: list[Part],
    ) -> Sequence[Action]:  # fmt: skip
        return [frame]


class Dispatcher:
    """Serves one enclave over ``sock`` with ``backend`` until the enclave exits or hangs up."""

    def __init__(self, sock: socket.socket, backend: HostBackend) -> None:
        self._sock = sock
        self._sock.setblocking(True)
        self.backend = backend
        self._scratch = bytearray(_SCRATCH)
        self.exit_code: int | None = None
        self.served = 0

    def serve(self) -> int | None:
        """Serve requests until the channel closes; the code the enclave announced with ``exit``."""
        try:
            while self.serve_one():
                pass
        except ChannelClosed:
            pass
        return self.exit_code

    def serve_one(self) -> bool:
        """Serve one request; False once the channel is closed or the enclave has exited."""
        call, seq, args = self._read_request()
        self.served += 1
        status, results = self._perform(call, args)
        if not call.answered:
            self.exit_code = args[0]
            return False
        frame = encode_response(call, seq, status, results)
        for action in self.backend.respond(call, seq, args, status, results, frame):
            if action is None:
                self._sock.close()
                return False
            if isinstance(action, float):
                time.sleep(action)
            else:
                self._send(action)
        return True

    def _perform(self, call: Call, args: tuple[Any, ...]) -> tuple[Status, tuple[Any, ...]]:
        try:
            out = getattr(self.backend, call.name)(*args)
        except HostFailure as e:
            return self._status(call, e.status, e), ()
        except OSError as e:
            return self._status(call, _ERRNO_STATUS.get(e.errno or 0, Status.IO), e), ()
        n = len(call.results)
        return Status.OK, (() if n == 0 else (out,) if n == 1 else tuple(out))

    @staticmethod
    def _status(call: Call, status: Status, cause: Exception) -> Status:
        if status in call.errors:
            return status
        if Status.IO in call.errors:
            return Status.IO
        raise cause  # a failure this call cannot report: the host itself is broken

    def _recv(self, view: memoryview) -> int:
        try:
            n = self._sock.recv_into(view)
        except OSError as e:
            raise ChannelClosed(f"the channel failed ({e})") from None
        if n == 0:
            raise ChannelClosed("the enclave closed the channel")
        return n

    def _read_request(self) -> tuple[Call, int, tuple[Any, ...]]:
        # The enclave has one request in flight, so whatever arrives belongs to it: read what is
        # there (usually the whole request, in one call), then exactly the rest.
        view = memoryview(self._scratch)
        have = 0
        while have < _HEAD:
            have += self._recv(view[have:])
        header = parse_header(view)
        call = BY_ID.get(header.call)
        if call is None:
            raise FrameError(f"unknown call {header.call}")
        if header.length > call.max_request:
            raise FrameError(f"a request of {header.length} bytes for {call.name}")
        total = _HEAD + header.length
        if have > total:
            raise FrameError("bytes after the request")
        if total > len(self._scratch):  # grown once to the largest request, then reused
            bigger = bytearray(total)
            bigger[:have] = view[:have]
            self._scratch = bigger
            view = memoryview(bigger)
        while have < total:
            have += self._recv(view[have:total])
        # Byte-string arguments are views of the receive buffer, valid until the backend returns
        # (no copy of a block run on its way to the disk); a backend that keeps one must copy it.
        call, args = decode_request(header, view[_HEAD:total], BY_ID, copy=False)
        return call, header.seq, args

    def _send(self, parts: list[Part]) -> None:
        if len(parts) <= 4:
            parts = [b"".join(parts)]
        pending = [memoryview(p).cast("B") for p in parts if len(p)]
        while pending:
            try:
                sent = self._sock.send(pending[0]) if len(pending) == 1 else self._sock.sendmsg(pending)
            except OSError as e:
                raise ChannelClosed(f"the channel failed ({e})") from None
            while sent and pending:
                if sent >= len(pending[0]):
                    sent -= len(pending.pop(0))
                else:
                    pending[0] = pending[0][sent:]
                    sent = 0
