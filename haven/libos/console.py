"""stdin, stdout and stderr: where the manifest sends them.

``"console"`` connects a stream to the host's terminal (through the host interface's
``console_write``; today, the process's own descriptors); ``"none"`` gives the guest an empty stdin
and discards its output, as wasmtime does for streams it does not inherit.
"""

from __future__ import annotations

import os
import select
from collections.abc import Sequence


class Console:
    """The three standard streams. Each is a host file descriptor, or None when not connected."""

    def __init__(self, stdin: int | None = None, stdout: int | None = 1, stderr: int | None = 2) -> None:
        self._fds = (stdin, stdout, stderr)

    @classmethod
    def for_manifest(cls, stdin: str, stdout: str, stderr: str) -> Console:
        return cls(
            0 if stdin == "console" else None,
            1 if stdout == "console" else None,
            2 if stderr == "console" else None,
        )

    def connected(self, stream: int) -> bool:
        return self._fds[stream] is not None

    def isatty(self, stream: int) -> bool:
        fd = self._fds[stream]
        try:
            return fd is not None and os.isatty(fd)
        except OSError:
            return False

    def write(self, stream: int, buffers: Sequence[memoryview | bytes]) -> int:
        """Write everything (blocking), as ``fd_write`` on a terminal or pipe does; returns the count."""
        total = sum(len(b) for b in buffers)
        fd = self._fds[stream]
        if fd is None or not total:
            return total
        pending = [b for b in buffers if len(b)]
        while pending:
            n = os.writev(fd, pending) if len(pending) > 1 else os.write(fd, pending[0])
            while pending and n >= len(pending[0]):
                n -= len(pending[0])
                pending.pop(0)
            if pending and n:
                pending[0] = memoryview(pending[0])[n:]
        return total

    def read_into(self, buffers: Sequence[memoryview]) -> int:
        fd = self._fds[0]
        if fd is None:
            return 0
        return os.readv(fd, list(buffers))

    def wait_readable(self, timeout: float | None) -> bool:
        """Whether stdin has data (or end of file) within ``timeout`` seconds (None: forever)."""
        fd = self._fds[0]
        if fd is None:
            return True
        try:
            ready, _, _ = select.select([fd], [], [], timeout)
        except (OSError, ValueError):
            return True
        return bool(ready)
