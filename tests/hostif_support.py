"""Running the host-interface program against an (adversarial) host: in this process, with the host
dispatcher on a thread, or as the real two processes of ``haven.host.runtime``."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from haven.host.adversary import Adversary, Plan
from haven.host.backend import LocalBackend
from haven.host.dispatcher import Dispatcher
from haven.shield import enclave_main
from haven.shield.hostchannel import HostChannel
from haven.shield.storage.counter import FileCounter
from haven.shield.storage.device import FileBlockDevice
from haven.tee.sim.cpu import SimEnclave
from haven.tee.sim.platform import SimPlatform
from haven.tee.sim.qe import QuotingEnclave
from tests.hostif_program import IMAGE_BLOCKS, STDIN, Secrets, program_for, secrets_of
from tests.sim_helpers import load, make_platform

REPO = Path(__file__).resolve().parents[1]


class Stopped(BaseException):
    """Stands in for the enclave process's exit, so an in-process run can be looked at afterwards."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _terminate(code: int) -> NoReturn:
    raise Stopped(code)


@dataclass
class World:
    """One platform, its quoting enclave, and an application enclave, shared by many runs."""

    platform: SimPlatform
    enclave: SimEnclave
    qe: QuotingEnclave
    secrets: Secrets

    @classmethod
    def create(cls, directory: Path) -> World:
        platform = make_platform(directory / "platform.json")
        enclave = load(platform)
        return cls(platform, enclave, QuotingEnclave(platform), secrets_of(enclave))


@dataclass
class Outcome:
    code: int
    console: str  # what the enclave wrote on its own console (the fail-stop line)
    observed: dict[str, Any] | None
    stdout: bytes  # what reached the host's stdout through console_write
    seen: list[bytes]
    applied: list[Any]
    elapsed: float
    key_wiped: bool | None = None
    host_errors: list[BaseException] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def violation(self) -> str | None:
        for line in self.console.splitlines():
            if line.startswith("haven: host violation: "):
                return line.removeprefix("haven: host violation: ")
        return None


def _read_all(fd: int) -> bytes:
    out = b""
    while chunk := os.read(fd, 65536):
        out += chunk
    return out


def host_files(directory: Path) -> tuple[FileBlockDevice, FileCounter]:
    directory.mkdir(parents=True, exist_ok=True)
    return (
        FileBlockDevice.create(directory / "image", IMAGE_BLOCKS),
        FileCounter.create(directory / "counter"),
    )


def run_in_process(world: World, plan: Plan | None, directory: Path, *, grace: float = 2.0) -> Outcome:
    """The program in this thread, the host on another, over a socketpair."""
    device, counter = host_files(directory)
    stdin_r, stdin_w = os.pipe()
    os.write(stdin_w, STDIN)
    os.close(stdin_w)
    out_r, out_w = os.pipe()
    con_r, con_w = os.pipe()
    backend = LocalBackend(devices=[device], counters=[counter], console=(stdin_r, out_w, None),
                           quoting=lambda: world.qe)  # fmt: skip
    adversary = Adversary(backend, plan)
    ours, theirs = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            Dispatcher(theirs, adversary).serve()
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    host = HostChannel(ours.detach(), console_fd=con_w, grace=grace, terminate=_terminate)
    observed: list[dict[str, Any]] = []
    wiped: list[bool] = []
    host.on_violation(lambda: wiped.append(True))
    start = time.monotonic()
    try:
        code = enclave_main.run(
            host, lambda h, a: program_for(h, world.enclave, observed.append), [], confined=False
        )
        host.exit(code)
    except Stopped as s:
        code = s.code
    elapsed = time.monotonic() - start
    host.close()
    thread.join(10)
    assert not thread.is_alive(), "the host's dispatcher did not end"
    theirs.close()
    backend.close()
    device.close()
    for fd in (out_w, con_w, stdin_r):
        os.close(fd)
    stdout, console = _read_all(out_r), _read_all(con_r)
    os.close(out_r)
    os.close(con_r)
    return Outcome(code, console.decode(errors="replace"), observed[0] if observed else None, stdout,
                   adversary.seen, adversary.applied, elapsed, bool(wiped), errors,
                   dict(adversary.counts))  # fmt: skip


def run_in_processes(
    world: World, plan: Plan | None, directory: Path, *, grace: float = 5.0, confine: bool = True,
    entry: str = "tests.hostif_program:entry", timeout: float = 60.0,
) -> Outcome:  # fmt: skip
    """The program in its own (confined) enclave process, started and served by the runtime."""
    from haven.host.runtime import python_path_with, run_enclave
    from tests.sim_helpers import sign, small_image

    device, counter = host_files(directory)
    sigstruct = directory / "sigstruct"
    sigstruct.write_bytes(sign(small_image()).to_bytes())
    stdin_r, stdin_w = os.pipe()
    os.write(stdin_w, STDIN)
    os.close(stdin_w)
    out_r, out_w = os.pipe()
    err = (directory / "stderr").open("w+b")
    backend = LocalBackend(devices=[device], counters=[counter], console=(stdin_r, out_w, None),
                           quoting=lambda: world.qe)  # fmt: skip
    adversary = Adversary(backend, plan)
    env = python_path_with(REPO)
    env["HAVEN_SIM_PLATFORM"] = str(world.platform.path)
    start = time.monotonic()
    try:
        code = run_enclave(entry, [str(sigstruct), "--marker"], adversary, confine=confine, grace=grace,
                           timeout=timeout, env=env, cwd=REPO, stderr=err.fileno())  # fmt: skip
    finally:
        elapsed = time.monotonic() - start
        backend.close()
        device.close()
        os.close(out_w)
        os.close(stdin_r)
        stdout = _read_all(out_r)
        os.close(out_r)
        err.seek(0)
        console = err.read()
        err.close()
    return Outcome(code, console.decode(errors="replace"), observed_in(stdout), stdout, adversary.seen,
                   adversary.applied, elapsed, counts=dict(adversary.counts))  # fmt: skip


def leaks(secret: bytes, seen: list[bytes]) -> bool:
    """Whether any 16-byte run of ``secret`` is in what the host saw. Every such run contains one of
    the secret's 8-byte-aligned 8-byte pieces, so looking for those is enough (and stricter)."""
    blob = b"".join(seen)
    return any(secret[i : i + 8] in blob for i in range(0, len(secret) - 7, 8))


def observed_in(stdout: bytes) -> dict[str, Any] | None:
    """The JSON line the process entry reports on the console, if any."""
    for line in stdout.splitlines():
        if line.startswith(b"{"):
            return json.loads(line)  # type: ignore[no-any-return]
    return None
