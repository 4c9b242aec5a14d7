"""The state one guest's WASI calls share: memory, descriptors, arguments, clocks, randomness, console."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from haven.libos.abi import GuestMemory
from haven.libos.clock import ShieldClock
from haven.libos.console import Console
from haven.libos.errno import RIGHTS_STDIN, RIGHTS_STDOUT, Filetype
from haven.libos.errors import TimeLimitExceeded
from haven.libos.fdtable import (
    RIGHTS_PREOPEN_BASE,
    RIGHTS_PREOPEN_INHERITING,
    DirDesc,
    FdTable,
    StreamDesc,
)
from haven.libos.vfs import Backend


@dataclass(frozen=True)
class Preopen:
    """A directory the guest finds at startup: its guest path and the backend behind it."""

    guest_path: str
    backend: Backend


class RandomPool:
    """``random_get`` bytes from the enclave's CSPRNG (``os.urandom``), drawn in batches so that small
    requests (wasi-libc asks for a few bytes at a time) do not each cost a system call. Every byte is
    handed out once."""

    BATCH = 4096

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def take(self, n: int) -> bytes:
        if n > self.BATCH // 2:
            return os.urandom(n)
        if self._at + n > len(self._pool):
            self._pool = os.urandom(self.BATCH)
            self._at = 0
        out = self._pool[self._at : self._at + n]
        self._at += n
        return out


class WasiContext:
    """Everything a WASI function may touch. ``memory`` is attached once the instance exists."""

    def __init__(
        self,
        *,
        args: Sequence[str],
        env: Sequence[tuple[str, str]],
        console: Console,
        preopens: Sequence[Preopen] = (),
        clock: ShieldClock | None = None,
    ) -> None:
        self.args = [a.encode("utf-8") for a in args]
        self.env = [f"{k}={v}".encode() for k, v in env]
        self.console = console
        self.clock = clock or ShieldClock()
        self.random = RandomPool()
        self.memory: GuestMemory = _DETACHED
        self.deadline: float | None = None  # time.monotonic() at which the run's time limit expires
        self.fds = FdTable()
        for stream, rights in ((0, RIGHTS_STDIN), (1, RIGHTS_STDOUT), (2, RIGHTS_STDOUT)):
            ftype = Filetype.CHARACTER_DEVICE if console.isatty(stream) else Filetype.UNKNOWN
            self.fds.add(StreamDesc(ftype, rights, rights, stream=stream))
        self.preopens = tuple(preopens)
        for p in self.preopens:
            self.fds.add(
                DirDesc(
                    Filetype.DIRECTORY,
                    RIGHTS_PREOPEN_BASE,
                    RIGHTS_PREOPEN_INHERITING,
                    backend=p.backend,
                    node=p.backend.root(),
                    preopen=p.guest_path.encode("utf-8"),
                )
            )

    def attach(self, memory: GuestMemory) -> None:
        self.memory = memory

    def remaining(self) -> float | None:
        """Seconds left before the time limit (raises once it has passed); None without a limit."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeLimitExceeded()
        return left

    def close_all(self) -> None:
        """Close every open file (releasing the file system's references), newest first."""
        for fd, desc in reversed(self.fds.items()):
            file = getattr(desc, "file", None)
            if file is not None:
                self.fds.remove(fd)
                file.close()


class _Detached(GuestMemory):
    """Memory before the instance exists: every access faults."""

    def __init__(self) -> None:
        super().__init__(lambda: (0, 0))


_DETACHED = _Detached()
