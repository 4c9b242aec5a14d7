"""The whole system for the canary and the network adversary: ``tests/apps/c/canary_server.c`` built into
a bundle with an encrypted mount and an RA-TLS listener, run by ``run_bundle`` in a confined enclave
process, a host backend that records every byte it relays, and a ``haven.ratls`` client that pins the
bundle's MRENCLAVE and names the simulation root.

The secret is made inside the enclave (``random_get``): the test learns it from the client, or, when the
client got nothing, from the image with its key — and when neither has it, the application never ran far
enough to make one.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from haven.bundle.build import build_bundle
from haven.bundle.container import write_bundle
from haven.errors import HavenError
from haven.host import launch
from haven.host.adversary import Adversary, Plan
from haven.host.dispatcher import HostBackend
from haven.ratls import RatlsStream, open_stream
from haven.shield.storage.errors import StorageError
from haven.shield.storage.image import counter_path_for, create_image, open_image
from haven.tee.sim.collateral import platform_collateral
from haven.tee.sim.pki import root_ca_certificate
from haven.tee.sim.platform import SimPlatform
from tests.sim_helpers import cached_key, make_platform

BUILD = Path(__file__).resolve().parent / "apps" / "build" / "c"
CANARY = BUILD / "canary_server.wasm"
KEY = bytes(range(32, 64))
SECRET_HEX = 96  # 48 random bytes, hex-encoded, then a newline (canary_server.c)
FILE = b"secret.txt"
TIME_LIMIT = 15  # seconds: the manifest's time limit; a run still going after it has hung


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def leaks(secret: bytes, seen: list[bytes]) -> bool:
    """Whether any 16-byte run of ``secret`` is in ``seen``. Every such run contains one of the secret's
    8-byte-aligned 8-byte pieces, so looking for those is enough (and stricter)."""
    blob = b"".join(seen)
    return any(secret[i : i + 8] in blob for i in range(0, len(secret) - 7, 8))


class Recorder(HostBackend):
    """Between the dispatcher (or the adversary) and the honest ``LocalBackend``: keeps every byte the
    host relayed on the network in either direction, every block it was asked to write, and, per call,
    whether each request was answered with results (True) or an error status (False)."""

    def __init__(self, inner: HostBackend) -> None:
        self.inner: Any = inner
        self.relayed: list[bytes] = []
        self.blocks: list[bytes] = []
        self.answered: dict[str, list[bool]] = {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if not callable(method) or name.startswith("_"):
            return method

        def call(*args: Any) -> Any:
            try:
                result = method(*args)
            except BaseException:
                self.answered.setdefault(name, []).append(False)
                raise
            self.answered.setdefault(name, []).append(True)
            if name == "net_read":
                self.relayed.append(bytes(result))
            elif name == "net_write":
                self.relayed.append(bytes(args[1][:result]))
            elif name == "blk_write":
                self.blocks.append(bytes(args[2]))
            return result

        return call


@dataclass(frozen=True)
class System:
    work: Path
    bundle: Path
    image: Path
    key_file: Path
    port: int
    mrenclave: str
    policy: Path
    collateral: Path

    def images(self) -> dict[str, launch.HostImage]:
        return {"data": launch.HostImage(self.image, counter_path_for(self.image), self.key_file)}

    def secret_in_image(self) -> bytes | None:
        """What the application left in ``/data/secret.txt`` (None: no such file)."""
        with open_image(self.image, KEY, commit=False) as fs:
            try:
                node = fs.lookup(fs.root, FILE)
            except StorageError:
                return None
            return bytes(fs.read(node, 0, 4096))


def make_system(work: Path, platform_path: Path) -> System:
    """The canary's bundle (its MRENCLAVE pinned by the policy), a new image and a free port."""
    work.mkdir(parents=True, exist_ok=True)
    platform = SimPlatform.open(platform_path) if platform_path.exists() else make_platform(platform_path)
    (work / "canary.wasm").write_bytes(CANARY.read_bytes())
    port = free_port()
    (work / "app.toml").write_text(
        '[app]\nmodule = "canary.wasm"\nargv = ["canary"]\n\n'
        f'[enclave]\nproduct_id = 1\nsvn = 1\ndebug = false\ntime_limit = "{TIME_LIMIT}s"\n\n'
        '[[mount]]\nguest = "/data"\nimage = "data"\n\n'
        f'[[listen]]\nport = {port}\ntls = "ra-tls"\n'
    )
    built = build_bundle(work / "app.toml", cached_key("owner"))
    bundle = work / "app.bundle"
    write_bundle(built, bundle)
    image = work / "data.img"
    create_image(image, 4 << 20, KEY)
    key_file = work / "data.key"
    key_file.write_text(KEY.hex())
    mrenclave = built.image.mrenclave().hex()
    (work / "sim-root.der").write_bytes(root_ca_certificate(platform).public_bytes(Encoding.DER))
    collateral = work / "collateral.json"
    collateral.write_text(platform_collateral(platform).to_dcap_qvl_json())
    policy = work / "policy.json"
    policy.write_text(json.dumps({
        "trusted_roots": [{"name": "haven-simulation", "certificate": "sim-root.der"}],
        "sgx": {"mrenclave": mrenclave},
    }))  # fmt: skip
    return System(work, bundle, image, key_file, port, mrenclave, policy, collateral)


@dataclass
class Run:
    code: int | None = None
    elapsed: float = 0.0
    received: bytes | None = None  # all the client read, when it read to a clean end
    client_error: BaseException | None = None
    peer_mrenclave: str | None = None
    stderr: str = ""
    stdout: str = ""
    recorder: Recorder | None = None
    adversary: Adversary | None = None
    host_error: BaseException | None = None
    violations: list[str] = field(default_factory=list)

    def seen(self) -> list[bytes]:
        """Everything the host had in its hands: relayed traffic, written blocks, every byte argument."""
        assert self.recorder is not None and self.adversary is not None
        return [*self.recorder.relayed, *self.recorder.blocks, *self.adversary.seen]


def _client(system: System, run: Run, alive: Callable[[], bool], timeout: float) -> None:
    """Connect (once the host listens), read to the end, end our side."""
    deadline = time.monotonic() + timeout
    stream: RatlsStream | None = None
    try:
        while stream is None:
            try:
                stream = open_stream("127.0.0.1", system.port, system.policy, collateral=system.collateral,
                                     timeout=timeout)  # fmt: skip
            except HavenError as e:
                refused = "refused" in str(e)
                if not refused or not alive() or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        run.peer_mrenclave = stream.peer.mrenclave
        received = stream.recv_pending()
        while chunk := stream.recv():
            received += chunk
        if not stream.peer_closed:
            raise ConnectionError("the stream ended without close_notify")
        run.received = received
        stream.close_write()
    except (HavenError, OSError) as e:  # a TLS error, an RA-TLS refusal, a broken connection
        run.client_error = e
    finally:
        if stream is not None:
            stream.close()


def run_system(system: System, plan: Plan | None = None, *, grace: float = 5.0, timeout: float = 30.0) -> Run:
    """Run the bundle (confined) under ``plan`` while a client connects to it; the run's record."""
    run = Run()
    out, err = system.work / "stdout", system.work / "stderr"

    def wrap(backend: HostBackend) -> HostBackend:
        run.recorder = Recorder(backend)
        run.adversary = Adversary(run.recorder, plan)
        return run.adversary

    def host() -> None:
        try:
            with open(out, "wb") as o, open(err, "wb") as e:
                run.code = launch.run_bundle(system.bundle, system.images(), wrap=wrap, grace=grace,
                                             timeout=timeout, console=(None, o.fileno(), e.fileno()),
                                             stderr=e.fileno())  # fmt: skip
        except BaseException as e:  # reported by the test
            run.host_error = e

    start = time.monotonic()
    thread = threading.Thread(target=host, daemon=True)
    thread.start()
    _client(system, run, thread.is_alive, timeout=min(10.0, timeout))
    thread.join(timeout + 5)
    run.elapsed = time.monotonic() - start
    assert not thread.is_alive(), "the host never finished"
    run.stdout = out.read_text(errors="replace")
    run.stderr = err.read_text(errors="replace")
    run.violations = [ln.removeprefix("haven: host violation: ") for ln in run.stderr.splitlines()
                      if ln.startswith("haven: host violation: ")]  # fmt: skip
    return run


def image_bytes(system: System) -> bytes:
    return system.image.read_bytes() + (
        counter_path_for(system.image).read_bytes() if os.path.exists(counter_path_for(system.image)) else b""
    )
