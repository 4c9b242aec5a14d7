"""The honest host: the backend ``haven run`` serves the enclave with.

Block devices are local image files, counters local counter files, streams TCP sockets (non-blocking:
the host relays bytes and never waits for the network on the enclave's behalf except in
``net_poll``), the clock is the wall clock, the console is this process's stdin/stdout/stderr, and
quotes come from the (simulated) quoting enclave. Nothing here is trusted by the enclave; it checks
every answer against the rules of :mod:`haven.shield.hostif`.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from haven.errors import FormatError, QuoteError
from haven.host.dispatcher import HostBackend, HostFailure
from haven.shield.hostif import MAX_CONSOLE, MAX_NET
from haven.shield.hostwire import Status
from haven.shield.storage.counter import FreshnessCounter
from haven.shield.storage.device import BlockDevice
from haven.shield.storage.errors import CounterConflict, StorageError
from haven.tee.sgx.structs import Report


def parse_address(address: bytes | memoryview) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``."""
    try:
        text = bytes(address).decode("ascii")
        host, sep, port = text.rpartition(":")
        number = int(port)
    except (UnicodeDecodeError, ValueError):
        raise HostFailure(Status.INVAL, "not host:port") from None
    if not sep or not host or not 0 < number < 65536:
        raise HostFailure(Status.INVAL, "not host:port")
    return host.removeprefix("[").removesuffix("]"), number


class LocalBackend(HostBackend):
    """Serves the interface from this machine's files, sockets, clock, console and quoting enclave."""

    def __init__(
        self,
        *,
        devices: Sequence[BlockDevice] = (),
        counters: Sequence[FreshnessCounter | None] = (),
        console: tuple[int | None, int | None, int | None] = (0, 1, 2),
        listen_host: str = "127.0.0.1",
        quoting: Callable[[], Any] | None = None,
    ) -> None:
        self.devices = list(devices)
        self.counters = list(counters)
        self.console = console
        self.listen_host = listen_host
        self._quoting = quoting
        self._qe: Any = None
        self._sockets: dict[int, socket.socket] = {}
        self._next_handle = 1
        self.exit_code: int | None = None

    # ------------------------------------------------------------------------- storage

    def _device(self, dev: int) -> BlockDevice:
        if not 0 <= dev < len(self.devices):
            raise HostFailure(Status.IO, f"no device {dev}")
        return self.devices[dev]

    def blk_size(self, dev: int) -> tuple[int, int]:
        d = self._device(dev)
        return d.size(), d.block_size

    def blk_read(self, dev: int, runs: list[tuple[int, int]]) -> bytes:
        d = self._device(dev)
        try:
            return b"".join(d.read(lba, n) for lba, n in runs)
        except StorageError as e:
            raise HostFailure(Status.IO, str(e)) from None

    def blk_write(self, dev: int, runs: list[tuple[int, int]], data: bytes) -> int:
        d = self._device(dev)
        total = sum(n for _, n in runs)
        if total * d.block_size != len(data):
            raise HostFailure(Status.IO, "the data is not the blocks the runs name")
        view = memoryview(data)
        at = 0
        try:
            for lba, n in runs:
                d.write(lba, view[at : at + n * d.block_size])
                at += n * d.block_size
        except StorageError as e:
            raise HostFailure(Status.IO, str(e)) from None
        return total

    def blk_flush(self, dev: int) -> None:
        try:
            self._device(dev).flush()
        except StorageError as e:
            raise HostFailure(Status.IO, str(e)) from None

    def _counter(self, dev: int) -> FreshnessCounter:
        c = self.counters[dev] if 0 <= dev < len(self.counters) else None
        if c is None:
            raise HostFailure(Status.IO, f"no counter {dev}")
        return c

    def counter_read(self, dev: int) -> int:
        try:
            return self._counter(dev).read()
        except StorageError as e:
            raise HostFailure(Status.IO, str(e)) from None

    def counter_advance(self, dev: int, expected: int, new: int) -> None:
        try:
            self._counter(dev).advance(expected, new)
        except CounterConflict as e:
            raise HostFailure(Status.CONFLICT, str(e)) from None
        except StorageError as e:
            raise HostFailure(Status.IO, str(e)) from None

    # ------------------------------------------------------------------------- network

    def _add(self, sock: socket.socket) -> int:
        sock.setblocking(False)
        h = self._next_handle
        self._next_handle += 1  # handles are never reused
        self._sockets[h] = sock
        return h

    def _socket(self, h: int) -> socket.socket:
        sock = self._sockets.get(h)
        if sock is None:
            raise HostFailure(Status.IO, f"no handle {h}")
        return sock

    def net_listen(self, port: int) -> tuple[int, int]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.listen_host, port))
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        return self._add(sock), sock.getsockname()[1]

    def net_accept(self, listener: int) -> int:
        conn, _ = self._socket(listener).accept()
        return self._add(conn)

    def net_connect(self, address: bytes | memoryview, timeout_ms: int) -> int:
        host, port = parse_address(address)
        try:
            sock = socket.create_connection((host, port), timeout=max(timeout_ms, 1) / 1000)
        except socket.gaierror:
            raise HostFailure(Status.UNREACH, "unknown host") from None
        except TimeoutError:
            raise HostFailure(Status.TIMEDOUT) from None
        return self._add(sock)

    def net_read(self, handle: int, max: int) -> bytes:
        return self._socket(handle).recv(min(max, MAX_NET))

    def net_write(self, handle: int, data: bytes) -> int:
        return self._socket(handle).send(data)

    def net_close(self, handle: int) -> None:
        sock = self._sockets.pop(handle, None)
        if sock is None:
            raise HostFailure(Status.BADF)
        sock.close()

    def net_poll(
        self, readable: list[int], writable: list[int], timeout_ms: int
    ) -> tuple[list[int], list[int]]:
        masks: dict[int, int] = {}
        for h in readable:
            if h in self._sockets:
                masks[h] = masks.get(h, 0) | select.POLLIN
        for h in writable:
            if h in self._sockets:
                masks[h] = masks.get(h, 0) | select.POLLOUT
        poller = select.poll()
        by_fd = {}
        for h, mask in masks.items():
            fd = self._sockets[h].fileno()
            by_fd[fd] = h
            poller.register(fd, mask)
        if not masks:
            time.sleep(timeout_ms / 1000)
            return [], []
        events = poller.poll(timeout_ms)
        broken = select.POLLHUP | select.POLLERR | select.POLLNVAL
        ready_r = sorted({by_fd[fd] for fd, ev in events if ev & (select.POLLIN | broken)} & set(readable))
        ready_w = sorted({by_fd[fd] for fd, ev in events if ev & (select.POLLOUT | broken)} & set(writable))
        return ready_r, ready_w

    # ------------------------------------------------------------------------- time, console, quotes

    def clock_now(self) -> int:
        return time.time_ns()

    def console_write(self, stream: int, data: bytes) -> None:
        fd = self.console[stream] if stream in (1, 2) else None
        view = memoryview(data)
        while fd is not None and view:
            view = view[os.write(fd, view) :]

    def console_read(self, max: int, timeout_ms: int) -> bytes:
        fd = self.console[0]
        if fd is None:
            return b""
        if not select.select([fd], [], [], timeout_ms / 1000)[0]:
            raise HostFailure(Status.AGAIN)
        return os.read(fd, min(max, MAX_CONSOLE))

    def _quoting_enclave(self) -> Any:
        if self._qe is None:
            if self._quoting is None:
                from haven.tee.sim.platform import SimPlatform
                from haven.tee.sim.qe import QuotingEnclave

                self._qe = QuotingEnclave(SimPlatform.open())
            else:
                self._qe = self._quoting()
        return self._qe

    def quote_target(self) -> bytes:
        return bytes(self._quoting_enclave().target_info().to_bytes())

    def quote(self, report: bytes) -> bytes:
        try:
            return bytes(self._quoting_enclave().quote(Report.from_bytes(report)))
        except (FormatError, QuoteError) as e:
            raise HostFailure(Status.INVAL, str(e)) from None

    def exit(self, code: int) -> None:
        self.exit_code = code

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
