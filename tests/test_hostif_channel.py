"""The shield's channel (stubs, fail-stop, deadlines), its block device and counter, and the honest host."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from haven.host.backend import LocalBackend, parse_address
from haven.host.dispatcher import Dispatcher, HostFailure
from haven.shield import hostchannel
from haven.shield.hostchannel import HostBlockDevice, HostChannel, HostCounter, wipe
from haven.shield.hostif import BY_NAME, CALLS, EXIT_VIOLATION
from haven.shield.hostwire import HEADER, FrameError, HostCallError, Status, encode_response
from haven.shield.storage.counter import FileCounter
from haven.shield.storage.device import FileBlockDevice
from haven.shield.storage.errors import CounterConflict, StorageError
from haven.shield.storage.store import SecureStore
from tests.hostif_support import Stopped, _terminate


class Ends:
    """A channel whose far end the test drives by hand (a host that says whatever the test wants)."""

    def __init__(self, grace: float = 2.0) -> None:
        ours, self.host_end = socket.socketpair()
        self.console_r, console_w = os.pipe()
        self.channel = HostChannel(ours.detach(), console_fd=console_w, grace=grace, terminate=_terminate)
        self._console_w = console_w

    def request(self) -> tuple[int, int, int]:
        """Read one request: (call id, seq, payload length)."""
        head = self.host_end.recv(24, socket.MSG_WAITALL)
        _, _, _, call, seq, _, _, length = HEADER.unpack(head)
        if length:
            self.host_end.recv(length, socket.MSG_WAITALL)
        return call, seq, length

    def console(self) -> str:
        os.close(self._console_w)
        out = b""
        while chunk := os.read(self.console_r, 4096):
            out += chunk
        os.close(self.console_r)
        return out.decode()

    def close(self) -> None:
        self.channel.close()
        self.host_end.close()


@pytest.fixture
def ends() -> Iterator[Ends]:
    e = Ends()
    yield e
    e.close()


def answer_later(ends: Ends, frame_for: Any) -> threading.Thread:
    """On a thread: read the next request, then send ``frame_for(call, seq)`` (bytes) if not None."""

    def run() -> None:
        call, seq, _ = ends.request()
        data = frame_for(call, seq)
        if data:
            ends.host_end.sendall(data)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def frame(name: str, seq: int, status: Status = Status.OK, results: tuple[Any, ...] = ()) -> bytes:
    return b"".join(bytes(p) for p in encode_response(BY_NAME[name], seq, status, results))


# ----------------------------------------------------------------------------------- fail-stop


def test_fail_stop_wipes_reports_and_never_retries(ends: Ends) -> None:
    key = bytearray(b"k" * 32)
    order: list[str] = []
    def second() -> None:
        wipe(key)
        order.append("second")

    ends.channel.on_violation(lambda: order.append("first"))
    ends.channel.on_violation(second)

    def failing() -> None:
        raise RuntimeError("a broken hook")

    ends.channel.on_violation(failing)
    answer_later(ends, lambda call, seq: frame("clock_now", seq, results=(-5,)))
    with pytest.raises(Stopped) as stop:
        ends.channel.clock_now()
    assert stop.value.code == EXIT_VIOLATION
    assert key == bytearray(32)
    assert order == ["second", "first"]  # hooks run last-registered first, past a failing one
    # Stopped for good: another call ends at once, sending nothing.
    with pytest.raises(Stopped):
        ends.channel.clock_now()
    ends.host_end.setblocking(False)
    with pytest.raises(BlockingIOError):
        ends.host_end.recv(1)
    assert ends.console() == "haven: host violation: clock_now: negative time -5\n"


def test_silence_is_a_violation_within_the_grace_period() -> None:
    e = Ends(grace=0.3)
    try:
        answer_later(e, lambda call, seq: None)
        start = time.monotonic()
        with pytest.raises(Stopped):
            e.channel.blk_flush(0)
        assert 0.3 <= time.monotonic() - start < 2
        assert e.console() == "haven: host violation: blk_flush: no answer within 0.3 s\n"
    finally:
        e.close()


def test_a_call_timeout_lengthens_the_wait() -> None:
    e = Ends(grace=0.2)
    try:
        def late(call: int, seq: int) -> bytes:
            time.sleep(0.5)
            return frame("net_poll", seq, results=([], []))

        answer_later(e, late)
        assert e.channel.net_poll([1], [], 600) == ([], [])
    finally:
        e.close()


def test_hanging_up_is_a_violation(ends: Ends) -> None:
    def hang_up(call: int, seq: int) -> None:
        ends.host_end.shutdown(socket.SHUT_WR)

    answer_later(ends, hang_up)
    with pytest.raises(Stopped):
        ends.channel.clock_now()
    assert "clock_now: the host closed the channel instead of answering" in ends.console()


def test_hanging_up_mid_answer(ends: Ends) -> None:
    def half(call: int, seq: int) -> None:
        ends.host_end.sendall(frame("clock_now", seq, results=(1,))[:30])
        ends.host_end.shutdown(socket.SHUT_WR)

    answer_later(ends, half)
    with pytest.raises(Stopped):
        ends.channel.clock_now()
    assert "in the middle of an answer" in ends.console()


def test_bytes_nobody_asked_for(ends: Ends) -> None:
    answer_later(ends, lambda call, seq: frame("clock_now", seq, results=(1,)) + frame("blk_flush", seq + 1))
    with pytest.raises(Stopped):
        ends.channel.clock_now()
    assert "clock_now: 24 bytes sent after the answer, unasked" in ends.console()


def test_an_answer_to_another_question(ends: Ends) -> None:
    answer_later(ends, lambda call, seq: frame("clock_now", seq - 1, results=(1,)))
    with pytest.raises(Stopped):
        ends.channel.clock_now()
    assert "question not asked (sequence 0, expected 1)" in ends.console()


def test_a_violation_line_is_one_printable_line(ends: Ends) -> None:
    with pytest.raises(Stopped):
        ends.channel.fail_stop("storage", "bad\nthing\x1b[2J")
    assert ends.console() == "haven: host violation: storage: bad?thing?[2J\n"


# ----------------------------------------------------------------------------------- stubs


def test_every_call_has_a_stub_and_nothing_else_does() -> None:
    for call in CALLS:
        stub = getattr(HostChannel, call.name)
        assert stub.__name__ == call.name and call.rule in stub.__doc__
    e = Ends()
    try:
        with pytest.raises(AttributeError, match="no call 'blk_erase'"):
            e.channel.blk_erase(0)
    finally:
        e.close()


def test_declared_errors_reach_the_caller(ends: Ends) -> None:
    answer_later(ends, lambda call, seq: frame("net_connect", seq, Status.CONNREFUSED))
    with pytest.raises(HostCallError) as e:
        ends.channel.net_connect(b"127.0.0.1:9", 100)
    assert e.value.status == Status.CONNREFUSED and e.value.call == "net_connect"


def test_exit_is_not_answered(ends: Ends) -> None:
    with pytest.raises(Stopped) as stop:
        ends.channel.exit(3)
    assert stop.value.code == 3
    call, seq, length = ends.request()
    assert (call, seq, length) == (BY_NAME["exit"].id, 1, 4)


# ----------------------------------------------------------------------------------- honest host


class Served:
    """A channel served by the honest dispatcher on a thread."""

    def __init__(self, backend: LocalBackend, grace: float = 5.0) -> None:
        ours, theirs = socket.socketpair()
        self.backend = backend
        self.errors: list[BaseException] = []
        self.dispatcher = Dispatcher(theirs, backend)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.host = HostChannel(ours.detach(), grace=grace, terminate=_terminate)

    def _serve(self) -> None:
        try:
            self.dispatcher.serve()
        except BaseException as e:
            self.errors.append(e)

    def close(self) -> None:
        self.host.close()
        self.thread.join(5)
        self.backend.close()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[tuple[Served, FileBlockDevice, FileCounter]]:
    dev = FileBlockDevice.create(tmp_path / "image", 256)
    counter = FileCounter.create(tmp_path / "counter")
    served = Served(LocalBackend(devices=[dev], counters=[counter]))
    yield served, dev, counter
    served.close()
    dev.close()
    assert served.errors == []


def test_block_device_batches_writes(disk: tuple[Served, FileBlockDevice, FileCounter]) -> None:
    served, dev, _ = disk
    bd = HostBlockDevice(served.host, 0)
    assert (bd.size(), bd.block_size) == (256, 4096)
    before = served.host.crossings
    for lba in range(100):
        bd.write(lba, bytes([lba]) * 4096)
    assert served.host.crossings == before  # queued in the enclave
    bd.flush()
    assert served.host.crossings == before + 2  # one blk_write of one run, one blk_flush
    assert dev.read(42) == bytes([42]) * 4096
    bd.write(200, b"\x07" * 8192)
    assert bd.read(200, 2) == b"\x07" * 8192  # a read sends what is queued first
    assert bd.read_runs([(1, 1), (99, 1)]) == b"\x01" * 4096 + b"\x63" * 4096


def test_block_device_splits_at_the_limits(
    disk: tuple[Served, FileBlockDevice, FileCounter], monkeypatch: pytest.MonkeyPatch
) -> None:
    served, dev, _ = disk
    monkeypatch.setattr(hostchannel, "MAX_IO", 3 * 4096)
    bd = HostBlockDevice(served.host, 0, batch_bytes=1 << 30)  # the batch is capped at MAX_IO
    before = served.host.crossings
    bd.write(10, os.urandom(10 * 4096))
    assert served.host.crossings == before + 4  # a full batch goes at once: 4 calls of <= 3 blocks
    bd.write(50, b"\x05" * 4096)
    bd.flush()
    assert served.host.crossings == before + 6
    before = served.host.crossings
    assert bd.read(10, 10) == dev.read(10, 10)
    assert served.host.crossings == before + 4


def test_block_device_refusals(disk: tuple[Served, FileBlockDevice, FileCounter]) -> None:
    served, _, _ = disk
    bd = HostBlockDevice(served.host, 0)
    with pytest.raises(StorageError, match="outside"):
        bd.read(255, 2)
    with pytest.raises(StorageError, match="whole blocks"):
        bd.write(0, b"x")
    with pytest.raises(StorageError, match="outside"):
        bd.write(-1, bytes(4096))
    ro = HostBlockDevice(served.host, 0, writable=False)
    with pytest.raises(StorageError, match="read-only"):
        ro.write(0, bytes(4096))
    with pytest.raises(StorageError, match=r"host device 1: blk_size failed \(IO\)"):
        HostBlockDevice(served.host, 1)


def test_counter_over_the_channel(disk: tuple[Served, FileBlockDevice, FileCounter]) -> None:
    served, _, counter = disk
    hc = HostCounter(served.host, 0)
    assert hc.read() == 0
    hc.advance(0, 3)
    assert counter.read() == 3
    with pytest.raises(CounterConflict):
        hc.advance(1, 4)  # the host reports the conflict; the enclave never claimed to know 1
    with pytest.raises(StorageError, match="cannot move"):
        hc.advance(3, 3)
    with pytest.raises(StorageError, match=r"counter_read failed \(IO\)"):
        HostCounter(served.host, 5).read()


def test_secure_store_over_the_channel(disk: tuple[Served, FileBlockDevice, FileCounter]) -> None:
    served, dev, _ = disk
    key = os.urandom(32)
    bd, hc = HostBlockDevice(served.host, 0), HostCounter(served.host, 0)
    store = SecureStore.format(bd, key, hc)
    secret = b"a secret that only the enclave may see".ljust(4096, b".")
    store.write(0, secret)
    store.commit()
    store.close()
    assert secret[:16] not in dev.read(0, 256)
    assert SecureStore.mount(bd, key, hc).read(0) == secret


def test_network_and_console(tmp_path: Path) -> None:
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    served = Served(LocalBackend(console=(stdin_r, out_w, None)))
    host = served.host
    try:
        with pytest.raises(HostCallError) as e:
            host.console_read(10, 10)
        assert e.value.status == Status.AGAIN
        os.write(stdin_w, b"typed")
        assert host.console_read(3, 1000) == b"typ"
        host.console_write(1, b"shown")
        host.console_write(2, b"not connected: dropped")
        assert os.read(out_r, 100) == b"shown"
        listener, port = host.net_listen(0)
        client = host.net_connect(f"127.0.0.1:{port}".encode(), 1000)
        assert host.net_poll([listener], [client], 1000) == ([listener], [client])
        server = host.net_accept(listener)
        with pytest.raises(HostCallError) as e:
            host.net_read(server, 10)
        assert e.value.status == Status.AGAIN
        assert host.net_write(client, b"ping") == 4
        assert host.net_poll([server], [], 1000) == ([server], [])
        assert host.net_read(server, 10) == b"ping"
        host.net_close(client)
        assert host.net_poll([server], [], 1000) == ([server], [])
        assert host.net_read(server, 10) == b""  # end of stream
        for h in (server, listener):
            host.net_close(h)
        with pytest.raises(HostCallError) as e:
            host.net_connect(f"127.0.0.1:{port}".encode(), 1000)
        assert e.value.status == Status.CONNREFUSED
        with pytest.raises(HostCallError) as e:
            host.net_connect(b"no port", 1000)
        assert e.value.status == Status.INVAL
        with pytest.raises(HostCallError) as e:
            host.quote(bytes(432))
        assert e.value.status == Status.INVAL
    finally:
        served.close()
        for fd in (stdin_r, stdin_w, out_r, out_w):
            os.close(fd)


def test_parse_address() -> None:
    assert parse_address(b"example.org:443") == ("example.org", 443)
    assert parse_address(b"[::1]:8443") == ("::1", 8443)
    for bad in (b"example.org", b":443", b"host:0", b"host:65536", b"host:x", b"\xff:1"):
        with pytest.raises(HostFailure):
            parse_address(bad)


def test_the_dispatcher_refuses_a_malformed_request() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(HEADER.pack(b"HVNH", 1, 1, 99, 1, 0, b"\0\0", 0))
        with pytest.raises(FrameError, match="unknown call 99"):
            Dispatcher(theirs, LocalBackend()).serve()
