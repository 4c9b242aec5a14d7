"""An enclave-side program that makes every call of the host interface, for the adversary tests.

It formats an encrypted image on the host's block device, commits twice, mounts it again and reads
it back; reads the clock; writes to and reads from the console; listens, connects to itself, and
sends a secret across and back in AES-GCM records (standing in for the TLS the enclave terminates);
and gets a quote binding its report data. It returns what it observed, for the test to compare
with what an honest host must give. Its secrets come from EGETKEY, so they never pass the host;
a test derives the same ones from the same enclave to look for them in what the host saw.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from haven.attest.dcap.quote import parse_quote
from haven.errors import HavenError
from haven.shield.hostchannel import HostBlockDevice, HostChannel, HostCounter, quote_for, wipe
from haven.shield.hostif import HostCallError, Status
from haven.shield.storage.store import SecureStore
from haven.tee.sgx.structs import KeyName, KeyPolicy, KeyRequest, Sigstruct
from haven.tee.sim.cpu import SimEnclave

IMAGE_BLOCKS = 64
BLOCK = 4096
SECRET_SIZE = BLOCK
STDIN = b"a line from the host's console\n"
GREETING = b"hello from the enclave\n"
REPORT_DATA = hashlib.sha256(b"haven host interface test").digest() + bytes(32)
CACHE = 64 << 10  # a small cache, so a mount really reads its blocks from the host
# The reply is shorter than the message, so the two writes differ (a replayed count is a lie).
ECHO_SHORTER = 16
POLLS = 20  # bounded waits: never a hang, even if the host starves the program
POLL_MS = 100


class ProgramError(HavenError):
    """The program could not finish (the host refused or starved it), without being lied to."""


@dataclass(frozen=True)
class Secrets:
    image_key: bytes
    net_key: bytes
    secret: bytes


def secrets_of(enclave: SimEnclave) -> Secrets:
    """Keys and a secret only this enclave (on this platform) can derive: from its seal key."""
    request = KeyRequest(
        keyname=KeyName.SEAL_KEY, keypolicy=KeyPolicy.MRENCLAVE, keyid=b"haven-hostif-test".ljust(32, b"\0")
    )
    seal = enclave.egetkey(request)
    out = HKDF(hashes.SHA256(), 64 + SECRET_SIZE, salt=None, info=b"hostif").derive(seal)
    return Secrets(out[:32], out[32:64], out[64:])


def expected(secrets: Secrets) -> dict[str, Any]:
    """What the program observes under an honest host."""
    return {
        "blocks": [hashlib.sha256(b).hexdigest() for b in _final_blocks(secrets.secret)],
        "echo": hashlib.sha256(secrets.secret[:-ECHO_SHORTER]).hexdigest(),
        "clock_monotonic": True,
        "console": STDIN.decode(),
        "quote_binds": True,
    }


def _final_blocks(secret: bytes) -> list[bytes]:
    return [secret, b"\x02" * BLOCK, b"\x03" * BLOCK, b"\x04" * BLOCK]


class Records:
    """Length-prefixed AES-GCM records with the record number as nonce: a stream the host can cut
    into any pieces, but not alter, reorder, replay or drop from without being noticed."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, number: int, data: bytes) -> bytes:
        body = self._aead.encrypt(number.to_bytes(12, "big"), data, None)
        return struct.pack("<I", len(body)) + body

    def open(self, number: int, body: bytes, host: HostChannel) -> bytes:
        try:
            return self._aead.decrypt(number.to_bytes(12, "big"), body, None)
        except Exception:
            host.fail_stop("net_read", f"stream record {number} does not authenticate")


def _wait(host: HostChannel, handle: int, *, write: bool = False) -> None:
    for _ in range(POLLS):
        readable, writable = host.net_poll([] if write else [handle], [handle] if write else [], POLL_MS)
        if handle in (writable if write else readable):
            return
    raise ProgramError(f"handle {handle} never became ready")


def _send_all(host: HostChannel, handle: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = host.net_write(handle, bytes(view[:65536]))
        except HostCallError as e:
            if e.status != Status.AGAIN:
                raise
            _wait(host, handle, write=True)
            continue
        view = view[n:]


def _recv_exact(host: HostChannel, handle: int, n: int) -> bytes:
    got = b""
    while len(got) < n:
        try:
            chunk = host.net_read(handle, n - len(got))
        except HostCallError as e:
            if e.status != Status.AGAIN:
                raise
            _wait(host, handle)
            continue
        if not chunk:
            raise ProgramError("the stream ended early")
        got += chunk
    return got


def _recv_record(host: HostChannel, handle: int, records: Records, number: int) -> bytes:
    (length,) = struct.unpack("<I", _recv_exact(host, handle, 4))
    if length > 1 << 20:
        host.fail_stop("net_read", f"stream record {number} claims {length} bytes")
    return records.open(number, _recv_exact(host, handle, length), host)


def exchange(host: HostChannel, key: bytes, payload: bytes) -> bytes:
    """Send ``payload`` to ourselves over the host's TCP, and (less its last ECHO_SHORTER bytes)
    back: what came back."""
    records = Records(key)
    listener, port = host.net_listen(0)
    client = host.net_connect(f"127.0.0.1:{port}".encode(), 1000)
    _wait(host, listener)
    server = None
    for _ in range(POLLS):
        try:
            server = host.net_accept(listener)
            break
        except HostCallError as e:
            if e.status != Status.AGAIN:
                raise
            _wait(host, listener)
    if server is None:
        raise ProgramError("no connection to accept")
    _send_all(host, client, records.seal(0, payload))
    got = _recv_record(host, server, records, 0)
    _send_all(host, server, records.seal(1, got[:-ECHO_SHORTER]))
    back = _recv_record(host, client, records, 1)
    for h in (server, client, listener):
        host.net_close(h)
    return back


def _console_line(host: HostChannel) -> bytes:
    line = b""
    for _ in range(POLLS):
        try:
            chunk = bytes(host.console_read(256, POLL_MS))
        except HostCallError as e:
            if e.status != Status.AGAIN:
                raise
            continue
        if not chunk or chunk.endswith(b"\n"):
            return line + chunk
        line += chunk
    return line


def workload(host: HostChannel, enclave: SimEnclave) -> dict[str, Any]:
    s = secrets_of(enclave)
    key = bytearray(s.image_key)
    host.on_violation(lambda: wipe(key))
    dev = HostBlockDevice(host, 0)
    counter = HostCounter(host, 0)
    store = SecureStore.format(dev, bytes(key), counter, cache_bytes=CACHE)
    for i, block in enumerate([s.secret, b"\x01" * BLOCK, b"\x03" * BLOCK]):
        store.write(i, block)
    store.commit()
    store.write(1, b"\x02" * BLOCK)
    store.write(3, b"\x04" * BLOCK)
    store.commit()
    store.close()
    store = SecureStore.mount(dev, bytes(key), counter, cache_bytes=CACHE)
    blocks = store.read_many(range(4))
    store.close()
    times = [host.clock_now() for _ in range(3)]
    host.console_write(1, GREETING)
    line = _console_line(host)
    echo = exchange(host, s.net_key, s.secret)
    quote = quote_for(host, enclave, REPORT_DATA)
    return {
        "blocks": [hashlib.sha256(b).hexdigest() for b in blocks],
        "echo": hashlib.sha256(echo).hexdigest(),
        "clock_monotonic": times == sorted(times),
        "console": line.decode(errors="replace"),
        "quote_binds": parse_quote(quote).sgx_body.reportdata == REPORT_DATA,
    }


def program_for(
    host: HostChannel, enclave: SimEnclave, sink: Callable[[dict[str, Any]], None]
) -> Callable[[], int]:
    def program() -> int:
        sink(workload(host, enclave))
        return 0

    return program


def entry(host: HostChannel, args: list[str]) -> Callable[[], int]:
    """``python -m haven.shield.enclave_main ... tests.hostif_program:entry SIGSTRUCT [--marker]``:
    boot (load the enclave on the simulated platform) before confinement; the program reports its
    observations as one JSON line on the console."""
    from haven.tee.sim.platform import SimPlatform
    from tests.sim_helpers import small_image

    enclave = SimPlatform.open().load_enclave(small_image(), Sigstruct.from_bytes(Path(args[0]).read_bytes()))
    if "--marker" in args:
        # Shows a test that the wipe hooks ran before the violation line was written.
        host.on_violation(lambda: os.write(2, b"test: keys wiped\n"))

    def report(observed: dict[str, Any]) -> None:
        try:
            with open("/etc/hostname", "rb"):
                observed["confined"] = False
        except PermissionError:
            observed["confined"] = True  # the filter, not the file, said no
        except OSError:
            observed["confined"] = False
        host.console_write(1, (json.dumps(observed, sort_keys=True) + "\n").encode())

    return program_for(host, enclave, report)


def hang(host: HostChannel, args: list[str]) -> Callable[[], int]:
    """An enclave that never finishes: the runtime's own deadline must end it."""

    def program() -> int:
        while True:
            time.sleep(60)

    return program


def garbage(host: HostChannel, args: list[str]) -> Callable[[], int]:
    """An enclave that writes something other than a request on its channel."""

    def program() -> int:
        os.write(host.fileno(), b"this is not a request frame!")
        time.sleep(60)
        return 0

    return program
