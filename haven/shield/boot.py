"""Booting a bundle in the enclave process, once the loader has EINIT it (``haven.host.loader``).

``python -m haven.shield.enclave_main --channel FD haven.host.loader:entry BUNDLE [options]``. The
boot phase, before confinement, may still use the local file system, and uses it for exactly what
cannot go through the host interface without adding nothing to it: the bundle file (whatever the
host put there is checked by EINIT against the SIGSTRUCT's MRENCLAVE, so how the bytes arrive does
not matter for trust), the simulated platform's file, the image key files (the development
stand-in until the key broker releases image keys), and the sealed module cache (compiled here, or
loaded and its GMAC checked). After that the program runs confined, and everything it needs — block
devices, counters, console, the wall clock — crosses the channel.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from haven.errors import HavenError
from haven.libos import abi
from haven.libos.console import Console
from haven.libos.net import QuoteRelay
from haven.libos.netbackend import HostNetBackend
from haven.libos.runtime import Application, HostResources, ImageSource, enclave_application
from haven.shield.hostchannel import HostBlockDevice, HostChannel, HostCounter
from haven.shield.hostif import MAX_CONSOLE, HostCallError, Status
from haven.shield.storage.errors import IntegrityError

# How long one console_read waits before the shield asks again (the host answers AGAIN): short
# enough that a guest blocked on stdin is never stuck behind one long host call.
CONSOLE_POLL_MS = 1000


class BootError(HavenError):
    """The enclave process was started with arguments it cannot boot from."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise BootError(f"boot: {message}")


class ChannelConsole(Console):
    """stdin, stdout and stderr over the host interface: ``console_write`` and ``console_read``.
    Which streams are connected is the manifest's choice; the host only carries the bytes."""

    def __init__(self, host: HostChannel, stdin: bool, stdout: bool, stderr: bool) -> None:
        super().__init__(None, None, None)
        self._host = host
        self._connected = (stdin, stdout, stderr)
        self._pending = b""  # read by wait_readable, not yet by the guest
        self._eof = False

    @classmethod
    def for_manifest_over(cls, host: HostChannel, stdin: str, stdout: str, stderr: str) -> ChannelConsole:
        return cls(host, stdin == "console", stdout == "console", stderr == "console")

    def connected(self, stream: int) -> bool:
        return self._connected[stream]

    def isatty(self, stream: int) -> bool:
        return False  # the host's terminal is not the enclave's to ask about

    def write(self, stream: int, buffers: Sequence[memoryview | bytes]) -> int:
        total = sum(len(b) for b in buffers)
        if not self._connected[stream] or not total:
            return total
        data = b"".join(buffers)
        for at in range(0, len(data), MAX_CONSOLE):
            try:
                self._host.console_write(stream, data[at : at + MAX_CONSOLE])
            except HostCallError:
                return at  # the host's terminal is gone: the guest sees a short write, as on a pipe
        return total

    def _fill(self, timeout_ms: int) -> bool:
        if self._pending or self._eof:
            return True
        try:
            data = bytes(self._host.console_read(MAX_CONSOLE, timeout_ms))
        except HostCallError as e:
            if e.status == Status.AGAIN:
                return False
            data = b""  # the host's console failed: end of input
        self._pending, self._eof = data, not data
        return True

    def read_into(self, buffers: Sequence[memoryview]) -> int:
        if not self._connected[0]:
            return 0
        while not self._fill(CONSOLE_POLL_MS):
            pass
        done = 0
        for buf in buffers:
            take = self._pending[: len(buf)]
            buf[: len(take)] = take
            self._pending = self._pending[len(take) :]
            done += len(take)
            if not self._pending:
                break
        if not self._pending and done:
            self._eof = False  # only an empty answer to a read is the end of input
        return done

    def wait_readable(self, timeout: float | None) -> bool:
        if not self._connected[0]:
            return True
        if timeout is None:
            while not self._fill(CONSOLE_POLL_MS):
                pass
            return True
        return self._fill(max(0, int(timeout * 1000)))


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="haven.shield.boot:entry", add_help=False)
    p.add_argument("bundle", type=Path)
    p.add_argument("--platform", type=Path)
    p.add_argument("--image", action="append", default=[], metavar="NAME=DEV:KEYFILE")
    p.add_argument("--cache-dir", type=Path)
    return p


def _images(specs: list[str], host: HostChannel) -> dict[str, ImageSource]:
    from haven.shield.storage.keys import load_image_key

    images: dict[str, ImageSource] = {}
    for spec in specs:
        name, _, rest = spec.partition("=")
        dev, _, keyfile = rest.partition(":")
        if not name or not dev.isdigit() or not keyfile:
            raise BootError(f"boot: --image {spec!r}: expected NAME=DEV:KEYFILE")
        key = load_image_key(Path(keyfile))
        d = int(dev)
        images[name] = ImageSource(device=HostBlockDevice(host, d), counter=HostCounter(host, d), key=key)
    return images


def parse_args(args: list[str]) -> argparse.Namespace:
    return _parser().parse_args(args)


def boot(host: HostChannel, enclave: Any, ns: argparse.Namespace) -> Callable[[], int]:
    """Given the initialised enclave, mount its encrypted images over the channel and compile (or
    load) the module; return the program that runs it, confined."""
    listeners = enclave_application(enclave.image)[0].listeners

    def on_fatal(exc: BaseException) -> None:
        if isinstance(exc, IntegrityError):
            # The host served forged, stale or swapped blocks in the middle of a run.
            host.fail_stop("storage", str(exc))

    resources = HostResources(
        images=_images(ns.image, host),
        cache_dir=ns.cache_dir,
        realtime=host.clock_now,
        on_fatal=on_fatal,
        net=HostNetBackend(host) if listeners else None,
        quotes=QuoteRelay.over(host) if any(lst.tls == "ra-tls" for lst in listeners) else None,
    )
    app = Application(enclave, resources)
    m = app.manifest
    resources.console = ChannelConsole.for_manifest_over(host, m.stdin, m.stdout, m.stderr)
    say = _sayer(host.console_fd)
    for warning in app.warnings:
        say(f"haven: warning: {warning}")
    try:
        app.prepare(before_confinement=True)
        abi.functions()  # imports every WASI implementation now: a confined process opens no files
    except BaseException:
        app.close()
        raise

    def program() -> int:
        try:
            outcome = app.run()
        finally:
            app.close()  # commits every encrypted image, over the channel
        if outcome.message:
            say(f"haven: {outcome.message}")
        return outcome.exit_code

    return program


def _sayer(fd: int) -> Callable[[str], None]:
    def say(line: str) -> None:
        data = (line.rstrip("\n") + "\n").encode("utf-8", "replace")
        while data:
            data = data[os.write(fd, data) :]

    return say
