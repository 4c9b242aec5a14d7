"""Reading files a user or a host named: bounded, regular files only, one clear error.

Every input file can be hostile: a FIFO that blocks forever, a device, a multi-gigabyte file where a key
was expected. :func:`read_bounded` refuses those before reading more than ``limit + 1`` bytes, and reports
any failure as the caller's own error class, so each layer keeps its error type and the CLI prints one line.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from haven.errors import HavenError


def read_bounded(path: Path, limit: int, *, error: type[HavenError], what: str = "") -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them; else ``error`` naming the file."""
    shown = f"{what} {path}" if what else str(path)
    try:
        # Open non-blocking and check the type on the descriptor: opening a FIFO must not hang, and the
        # file checked is the file read (no window between a stat and an open).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise error(f"cannot read {shown}: {e.strerror or type(e).__name__}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise error(f"{shown} is {kind}")
        if st.st_size > limit:
            raise error(f"{shown} is larger than {limit} bytes")
        chunks = []
        remaining = limit + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as e:
        raise error(f"cannot read {shown}: {e.strerror or type(e).__name__}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise error(f"{shown} is larger than {limit} bytes")
    return data
