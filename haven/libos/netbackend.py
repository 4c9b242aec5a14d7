"""Where a socket's bytes go: the host's relay (``net_*`` calls of the host interface) or, for the
in-process run and tests, this process's own non-blocking sockets.

Both speak :class:`NetBackend`: handles are opaque numbers; ``None`` from ``accept``/``read`` and ``0``
from ``write`` mean "would block"; errors are WASI errnos. The sockets the application sees, and RA-TLS on
top, are in :mod:`haven.libos.net`.
"""

from __future__ import annotations

import contextlib
import errno as _os_errno
import select
import socket
import time
from collections.abc import Sequence
from typing import Any, Protocol

from haven.errors import HavenError
from haven.libos.errno import (
    Errno,
    WasiError,
    from_os_errno,
)
from haven.shield.hostwire import HostCallError, Status


class NetError(HavenError):
    """A listener the manifest asks for cannot be set up."""


class NetBackend(Protocol):
    """The host's streams, shaped like the host interface's ``net_*`` calls.

    ``accept`` and ``read`` return None when they would block; ``read`` returns ``b""`` at the end of
    the stream; ``write`` returns 0 when nothing could be sent now. Failures the application may see
    are raised as :class:`~haven.libos.errno.WasiError`."""

    def listen(self, port: int) -> int: ...
    def accept(self, listener: int) -> int | None: ...
    def read(self, handle: int, max: int) -> bytes | None: ...
    def write(self, handle: int, data: bytes) -> int: ...
    def close(self, handle: int) -> None: ...
    def poll(
        self, readable: Sequence[int], writable: Sequence[int], timeout_ms: int
    ) -> tuple[set[int], set[int]]: ...


# -- over the host channel ------------------------------------------------------------------------------

_STATUS_ERRNO = {
    Status.AGAIN: Errno.AGAIN,
    Status.BADF: Errno.BADF,
    Status.CONNRESET: Errno.CONNRESET,
    Status.CONNABORTED: Errno.CONNABORTED,
    Status.PIPE: Errno.PIPE,
    Status.ADDRINUSE: Errno.ADDRINUSE,
    Status.ACCES: Errno.ACCES,
}


def _wasi_error(e: HostCallError) -> WasiError:
    return WasiError(_STATUS_ERRNO.get(e.status, Errno.IO))


class HostNetBackend:
    """:class:`NetBackend` through the host channel's stubs (``HostChannel``): every answer has been
    checked against the interface's rules before it gets here."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel

    def listen(self, port: int) -> int:
        try:
            handle, _ = self.channel.net_listen(port)
        except HostCallError as e:
            raise NetError(f"the host cannot listen on port {port}: {e.status.name}") from None
        return int(handle)

    def accept(self, listener: int) -> int | None:
        try:
            return int(self.channel.net_accept(listener))
        except HostCallError as e:
            if e.status == Status.AGAIN:
                return None
            raise _wasi_error(e) from None

    def read(self, handle: int, max: int) -> bytes | None:
        try:
            return bytes(self.channel.net_read(handle, max))
        except HostCallError as e:
            if e.status == Status.AGAIN:
                return None
            raise _wasi_error(e) from None

    def write(self, handle: int, data: bytes) -> int:
        try:
            return int(self.channel.net_write(handle, data))
        except HostCallError as e:
            if e.status == Status.AGAIN:
                return 0
            raise _wasi_error(e) from None

    def close(self, handle: int) -> None:
        # The handle is forgotten whatever the answer (the call's rule).
        with contextlib.suppress(HostCallError):
            self.channel.net_close(handle)

    def poll(
        self, readable: Sequence[int], writable: Sequence[int], timeout_ms: int
    ) -> tuple[set[int], set[int]]:
        try:
            r, w = self.channel.net_poll(list(readable), list(writable), timeout_ms)
        except HostCallError as e:
            raise _wasi_error(e) from None
        return set(r), set(w)


# -- in process -----------------------------------------------------------------------------------------

_OS_NET_ERRNO = {
    _os_errno.ECONNRESET: Errno.CONNRESET,
    _os_errno.ECONNABORTED: Errno.CONNABORTED,
    _os_errno.EPIPE: Errno.PIPE,
    _os_errno.EADDRINUSE: Errno.ADDRINUSE,
    _os_errno.ENOTCONN: Errno.NOTCONN,
}


def _os_error(e: OSError) -> WasiError:
    return WasiError(_OS_NET_ERRNO.get(e.errno or 0) or from_os_errno(e.errno))


class LocalNetBackend:
    """:class:`NetBackend` on this process's own non-blocking TCP sockets (no host in between)."""

    def __init__(self, listen_host: str = "127.0.0.1") -> None:
        self.listen_host = listen_host
        self._sockets: dict[int, socket.socket] = {}
        self._next = 1  # handle 0 is never valid (the host interface's rule)

    def _add(self, sock: socket.socket) -> int:
        sock.setblocking(False)
        handle, self._next = self._next, self._next + 1
        self._sockets[handle] = sock
        return handle

    def _get(self, handle: int) -> socket.socket:
        sock = self._sockets.get(handle)
        if sock is None:
            raise WasiError(Errno.BADF)
        return sock

    def listen(self, port: int) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.listen_host, port))
            sock.listen(64)
        except OSError as e:
            sock.close()
            raise NetError(f"cannot listen on port {port}: {e.strerror or e}") from None
        return self._add(sock)

    def accept(self, listener: int) -> int | None:
        try:
            conn, _ = self._get(listener).accept()
        except BlockingIOError:
            return None
        except OSError as e:
            raise _os_error(e) from None
        return self._add(conn)

    def read(self, handle: int, max: int) -> bytes | None:
        try:
            return self._get(handle).recv(max)
        except BlockingIOError:
            return None
        except OSError as e:
            raise _os_error(e) from None

    def write(self, handle: int, data: bytes) -> int:
        try:
            return self._get(handle).send(data)
        except BlockingIOError:
            return 0
        except OSError as e:
            raise _os_error(e) from None

    def close(self, handle: int) -> None:
        sock = self._sockets.pop(handle, None)
        if sock is not None:
            sock.close()

    def poll(
        self, readable: Sequence[int], writable: Sequence[int], timeout_ms: int
    ) -> tuple[set[int], set[int]]:
        poller = select.poll()
        by_fd: dict[int, int] = {}
        masks: dict[int, int] = {}
        for handles, bit in ((readable, select.POLLIN), (writable, select.POLLOUT)):
            for h in handles:
                fd = self._get(h).fileno()
                by_fd[fd] = h
                masks[fd] = masks.get(fd, 0) | bit
        for fd, mask in masks.items():
            poller.register(fd, mask)
        if not masks:
            time.sleep(timeout_ms / 1000)
            return set(), set()
        events = poller.poll(timeout_ms)
        broken = select.POLLHUP | select.POLLERR | select.POLLNVAL
        r = {by_fd[fd] for fd, ev in events if ev & (select.POLLIN | broken)} & set(readable)
        w = {by_fd[fd] for fd, ev in events if ev & (select.POLLOUT | broken)} & set(writable)
        return r, w

    def close_all(self) -> None:
        for handle in list(self._sockets):
            self.close(handle)
