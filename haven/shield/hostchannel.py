"""The shield's end of the host interface: one stub per call of :data:`haven.shield.hostif.CALLS`,
over the socket the host gave the enclave process — and fail-stop.

Each stub sends one request and waits, for a bounded time, for the one answer it may get back; the
answer's frame, its status and the call's rule are checked before anything in it is returned. Any
violation — a frame that does not parse, an answer to a question not asked, bytes nobody asked for,
silence past the deadline, a rule broken — ends the enclave: the registered hooks wipe its keys, one
line ``haven: host violation: <call>: <rule>`` goes to the console, and the process exits with
:data:`EXIT_VIOLATION`. It never retries, so the host never gets a second chance to steer it.

:class:`HostBlockDevice` (a storage ``BlockDevice``) and :class:`HostCounter` (a ``FreshnessCounter``)
put the application's storage on the channel, with block writes batched into few crossings.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn, Protocol

from haven.shield.hostif import CALLS, MAX_IO, MAX_RUNS, check_answer
from haven.shield.hostwire import (
    EXIT_VIOLATION,
    Call,
    FrameError,
    FrameHeader,
    HostCallError,
    HostViolation,
    Part,
    Session,
    Status,
    check_response_header,
    decode_results,
    encode_request,
    parse_header,
)
from haven.shield.storage.errors import CounterConflict, StorageError
from haven.structs import Struct, field_at
from haven.tee.sgx.structs import Report, TargetInfo

# How long the host may take over an answer, on top of any timeout the call itself carries. A host
# that never answers is an attack like any other (and a hung enclave the worst outcome of it).
DEFAULT_GRACE = 60.0
_SCRATCH = 256 << 10  # answers up to this size arrive in one buffer kept for the session
_HEAD = FrameHeader.SIZE


@dataclass
class Timeval(Struct):
    """``struct timeval`` on 64-bit Linux (SO_RCVTIMEO / SO_SNDTIMEO, socket(7))."""

    SIZE: ClassVar[int] = 16
    tv_sec: int = field_at(0, "<q")
    tv_usec: int = field_at(8, "<q")


def wipe(secret: bytearray | memoryview) -> None:
    """Overwrite a key held in a mutable buffer (immutable ``bytes`` cannot be wiped, only dropped)."""
    view = memoryview(secret).cast("B")
    view[:] = bytes(len(view))


def _one_line(text: str) -> bytes:
    line = "".join(ch if ch.isprintable() else "?" for ch in text)[:400]
    return (line + "\n").encode("utf-8", "replace")


class HostChannel:
    """The stubs: ``host.blk_read(dev, runs)``, ``host.clock_now()``, ... — one per declared call,
    generated from the table. A stub returns the call's single result, a tuple of several, or None;
    an error status the call allows raises :class:`HostCallError`; anything else fails stop."""

    def __init__(
        self,
        fd: int,
        *,
        console_fd: int = 2,
        grace: float = DEFAULT_GRACE,
        terminate: Callable[[int], NoReturn] = os._exit,
    ) -> None:
        self._sock = socket.socket(fileno=fd)
        self._sock.setblocking(True)
        self._console_fd = console_fd
        self._grace = grace
        self._terminate = terminate
        self._wipes: list[Callable[[], object]] = []
        self._stopping = False
        self._seq = 0
        self._timeout = -1.0
        self._scratch = bytearray(_SCRATCH)
        self.session = Session()
        self.crossings = 0

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def console_fd(self) -> int:
        """Where the enclave's own last words go (the fail-stop line, a fatal error)."""
        return self._console_fd

    # ------------------------------------------------------------------------------- fail-stop

    def on_violation(self, hook: Callable[[], object]) -> None:
        """Run ``hook`` (wipe a key, drop plaintext) before the enclave stops on a violation."""
        self._wipes.append(hook)

    def fail_stop(self, where: str, rule: str) -> NoReturn:
        """Stop for good: wipe, report ``haven: host violation: <where>: <rule>``, exit."""
        if not self._stopping:
            self._stopping = True
            for hook in reversed(self._wipes):
                # A failing hook must not keep the others (or the stop) from happening.
                with contextlib.suppress(BaseException):
                    hook()
            with contextlib.suppress(OSError):
                os.write(self._console_fd, _one_line(f"haven: host violation: {where}: {rule}"))
        self._terminate(EXIT_VIOLATION)

    # ------------------------------------------------------------------------------- one call

    def invoke(self, call: Call, args: Sequence[Any]) -> tuple[Any, ...]:
        """Make ``call`` with ``args``; the checked results (an error status raises HostCallError)."""
        if self._stopping:
            self._terminate(EXIT_VIOLATION)
        args = tuple(args)
        seq = self._seq = self._seq + 1
        frame = encode_request(call, seq, args)  # ValueError: the enclave's own mistake, not the host's
        wait = self._grace + (args[call.timeout_arg] / 1000 if call.timeout_arg is not None else 0.0)
        try:
            deadline = time.monotonic() + wait
            self._set_timeout(wait)
            self._send(call, frame, deadline)
            self.crossings += 1
            if not call.answered:
                return ()
            status, results = self._receive(call, seq, deadline, wait)
            results = check_answer(self.session, call, args, status, results)
        except HostViolation as v:
            self.fail_stop(v.call, v.rule)
        if status != Status.OK:
            raise HostCallError(call.name, status)
        return results

    def _set_timeout(self, seconds: float) -> None:
        if seconds != self._timeout:
            whole = int(seconds)
            tv = Timeval(tv_sec=whole, tv_usec=int((seconds - whole) * 1e6)).to_bytes()
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
            self._timeout = seconds

    def _send(self, call: Call, parts: list[Part], deadline: float) -> None:
        if len(parts) <= 4:  # a small request goes as one buffer
            parts = [b"".join(parts)]
        pending = [memoryview(p).cast("B") for p in parts if len(p)]
        while pending:
            try:
                sent = self._sock.send(pending[0]) if len(pending) == 1 else self._sock.sendmsg(pending)
            except (BlockingIOError, TimeoutError):
                sent = 0
            except OSError as e:
                raise HostViolation(call.name, f"the channel failed while sending ({e.strerror})") from None
            while sent and pending:
                if sent >= len(pending[0]):
                    sent -= len(pending.pop(0))
                else:
                    pending[0] = pending[0][sent:]
                    sent = 0
            if pending and time.monotonic() > deadline:
                raise HostViolation(call.name, "the host stopped taking requests")

    def _recv(self, call: Call, into: memoryview, deadline: float, wait: float, have: int) -> int:
        while True:
            try:
                n = self._sock.recv_into(into)
            except (BlockingIOError, TimeoutError):
                n = -1
            except OSError as e:
                raise HostViolation(call.name, f"the channel failed ({e.strerror})") from None
            if n == 0:
                where = "in the middle of an answer" if have else "instead of answering"
                raise HostViolation(call.name, f"the host closed the channel {where}")
            if n > 0:
                return n
            if time.monotonic() > deadline:
                raise HostViolation(call.name, f"no answer within {wait:g} s")

    def _receive(
        self, call: Call, seq: int, deadline: float, wait: float
    ) -> tuple[Status, tuple[Any, ...]]:
        buf = self._scratch
        view = memoryview(buf)
        have = 0
        while have < _HEAD:
            have += self._recv(call, view[have:], deadline, wait, have)
        try:
            header = parse_header(view)
        except FrameError as e:
            raise HostViolation(call.name, str(e)) from None
        status = check_response_header(call, seq, header)  # before a byte of payload is read
        total = _HEAD + header.length
        if total > len(buf):  # grown once to the largest answer, then reused (results are copied out)
            bigger = bytearray(total)
            bigger[:have] = view[:have]
            self._scratch = buf = bigger
            view = memoryview(bigger)
        while have < total:
            if time.monotonic() > deadline:
                raise HostViolation(call.name, f"no complete answer within {wait:g} s")
            have += self._recv(call, view[have:], deadline, wait, have)
        if have > total:
            raise HostViolation(call.name, f"{have - total} bytes sent after the answer, unasked")
        return status, decode_results(call, status, view[_HEAD:total])

    def __getattr__(self, name: str) -> Callable[..., Any]:
        # The stubs are set on the class below; this only answers for names that are not calls.
        raise AttributeError(f"the host interface has no call {name!r}")

    def close(self) -> None:
        self._sock.close()


def _stub(call: Call) -> Callable[..., Any]:
    n = len(call.results)

    def stub(self: HostChannel, *args: Any) -> Any:
        results = self.invoke(call, args)
        if not call.answered:
            self._terminate(args[0])  # exit: nothing comes back; the process ends with its code
        return None if n == 0 else results[0] if n == 1 else results

    stub.__name__ = stub.__qualname__ = call.name
    stub.__doc__ = f"{call.signature}\n\nThe answer must satisfy: {call.rule}."
    return stub


for _call in CALLS:
    setattr(HostChannel, _call.name, _stub(_call))


# ----------------------------------------------------------------------------------- storage


def _storage_error(e: HostCallError, dev: int) -> StorageError:
    return StorageError(f"host device {dev}: {e.call} failed ({e.status.name})")


class HostBlockDevice:
    """A storage ``BlockDevice`` served by the host (``blk_*`` calls). Its size and block size are
    asked once, when it is opened, and the rule holds the host to them. Writes are batched: they
    are queued in the enclave and go out as few ``blk_write`` calls (runs of blocks, up to
    ``MAX_IO`` bytes each) when ``batch_bytes`` have queued, before any read, and at ``flush`` —
    which is when durability is promised anyway."""

    def __init__(
        self, host: HostChannel, dev: int, *, writable: bool = True, batch_bytes: int = 4 << 20
    ) -> None:
        self._host = host
        self._dev = dev
        self.writable = writable
        self._batch = max(1, min(batch_bytes, MAX_IO))
        try:
            self._blocks, self.block_size = host.blk_size(dev)
        except HostCallError as e:
            raise _storage_error(e, dev) from None
        self._pending: list[tuple[int, bytes]] = []
        self._pending_bytes = 0

    def size(self) -> int:
        return int(self._blocks)

    def read(self, lba: int, n: int = 1) -> bytes:
        return self.read_runs([(lba, n)])

    def read_runs(self, run_list: Sequence[tuple[int, int]]) -> bytes:
        """Several runs of blocks in as few crossings as the limits allow, concatenated."""
        for lba, n in run_list:
            self._check_range(lba, n)
        self._drain()
        per_call = MAX_IO // self.block_size
        out: list[bytes] = []
        batch: list[tuple[int, int]] = []
        blocks = 0
        for lba, n in run_list:
            while n:
                take = min(n, per_call - blocks)
                batch.append((lba, take))
                blocks += take
                lba, n = lba + take, n - take
                if blocks == per_call or len(batch) == MAX_RUNS:
                    out.append(self._call("blk_read", batch))
                    batch, blocks = [], 0
        if batch:
            out.append(self._call("blk_read", batch))
        return out[0] if len(out) == 1 else b"".join(out)

    def write(self, lba: int, data: bytes | bytearray | memoryview) -> None:
        if not self.writable:
            raise StorageError(f"host device {self._dev}: opened read-only")
        view = memoryview(data).cast("B")
        if len(view) == 0 or len(view) % self.block_size:
            raise StorageError(
                f"host device {self._dev}: a write must be whole blocks, not {len(view)} bytes"
            )
        self._check_range(lba, len(view) // self.block_size)
        step = MAX_IO - MAX_IO % self.block_size
        for at in range(0, len(view), step):
            chunk = bytes(view[at : at + step])  # a copy: the caller may reuse its buffer
            self._pending.append((lba + at // self.block_size, chunk))
            self._pending_bytes += len(chunk)
        if self._pending_bytes >= self._batch:
            self._drain()

    def flush(self) -> None:
        self._drain()
        self._call("blk_flush")

    def close(self) -> None:
        """Hand the host what is still queued (as a file device's writes reach the file), without
        the durability barrier: that is ``flush``'s."""
        self._drain()

    def _drain(self) -> None:
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        batch: list[tuple[int, int]] = []
        parts: list[bytes] = []
        size = 0
        for lba, chunk in pending:
            if size + len(chunk) > MAX_IO or len(batch) == MAX_RUNS:
                self._call("blk_write", batch, parts)
                batch, parts, size = [], [], 0
            n = len(chunk) // self.block_size
            if batch and batch[-1][0] + batch[-1][1] == lba:
                batch[-1] = (batch[-1][0], batch[-1][1] + n)
            else:
                batch.append((lba, n))
            parts.append(chunk)
            size += len(chunk)
        if batch:
            self._call("blk_write", batch, parts)  # the blocks go out gathered, not joined

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self._host, name)(self._dev, *args)
        except HostCallError as e:
            raise _storage_error(e, self._dev) from None

    def _check_range(self, lba: int, n: int) -> None:
        if n < 1 or lba < 0 or lba + n > self._blocks:
            raise StorageError(
                f"host device {self._dev}: blocks {lba}..{lba + n - 1} are outside 0..{self._blocks - 1}"
            )


class HostCounter:
    """A ``FreshnessCounter`` served by the host (``counter_read``, ``counter_advance``). Within a
    session the rule holds the host to the values it has given and been given; across sessions a
    host-kept counter is only as good as the host, which is why the key broker keeps them in
    production (DESIGN.md, "Storage")."""

    def __init__(self, host: HostChannel, dev: int) -> None:
        self._host = host
        self._dev = dev

    def read(self) -> int:
        try:
            return int(self._host.counter_read(self._dev))
        except HostCallError as e:
            raise _storage_error(e, self._dev) from None

    def advance(self, expected: int, new: int) -> None:
        if not 0 <= expected < new < 1 << 64:
            raise StorageError(f"counter {self._dev}: cannot move from {expected} to {new}")
        try:
            self._host.counter_advance(self._dev, expected, new)
        except HostCallError as e:
            if e.status == Status.CONFLICT:
                raise CounterConflict(f"counter {self._dev}: is not {expected}") from None
            raise _storage_error(e, self._dev) from None


# ----------------------------------------------------------------------------------- quoting


class ReportingEnclave(Protocol):
    def ereport(self, target: TargetInfo, reportdata: bytes = ...) -> Report: ...


def quote_for(host: HostChannel, enclave: ReportingEnclave, report_data: bytes) -> bytes:
    """A quote of this enclave binding ``report_data`` (64 bytes), through the host's quoting
    enclave. The ``quote`` rule has checked it carries this very REPORT and that its signatures verify;
    whether its PCK chain leads to a root the relying party trusts is the relying party's to judge."""
    target = TargetInfo.from_bytes(host.quote_target())
    report = enclave.ereport(target, report_data)
    return bytes(host.quote(report.to_bytes()))
