"""The untrusted runtime: start the enclave process, serve its host interface until it exits.

The enclave process (:mod:`haven.shield.enclave_main`) gets one end of a socketpair, passed as an
inherited descriptor; the runtime keeps the other and answers the enclave's calls with a backend
(:class:`haven.host.backend.LocalBackend`, or the adversary in tests). It gives the enclave no stdin
and no stdout — its console goes through ``console_read`` and ``console_write`` — and only its stderr,
for the one line a fail-stop writes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from haven.errors import HavenError
from haven.host.dispatcher import Dispatcher, HostBackend
from haven.shield.confine import ConfinementError, seccomp_available
from haven.shield.hostwire import FrameError


class EnclaveProtocolError(HavenError):
    """The enclave process sent something that is not a request (a bug in the enclave, not an attack)."""


# Socket buffers of the channel: a block run of a few MiB crosses in a few system calls, not hundreds
# (capped by the kernel at net.core.wmem_max; socket(7)).
CHANNEL_BUFFER = 4 << 20


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """The socketpair between the host and the enclave process, with large buffers."""
    pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    for end in pair:
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            end.setsockopt(socket.SOL_SOCKET, option, CHANNEL_BUFFER)
    return pair


def enclave_command(
    entry: str, args: Sequence[str], channel_fd: int, *, confine: bool = True,
    grace: float | None = None, python: str | None = None,
) -> list[str]:  # fmt: skip
    cmd = [python or sys.executable, "-m", "haven.shield.enclave_main", "--channel", str(channel_fd)]
    if not confine:
        cmd.append("--unconfined")
    if grace is not None:
        cmd += ["--grace", repr(float(grace))]
    return [*cmd, entry, *args]


def run_enclave(
    entry: str,
    args: Sequence[str],
    backend: HostBackend,
    *,
    confine: bool = True,
    grace: float | None = None,
    timeout: float | None = None,
    python: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stderr: int | None = None,
) -> int:
    """Run ``entry`` (``module:function``) in a new enclave process served by ``backend``; its exit
    code (negative: killed by that signal). ``timeout`` kills an enclave still running after that
    many seconds. Refuses (``ConfinementError``) to start an enclave that cannot be confined unless
    ``confine`` is False."""
    if confine and not seccomp_available():
        raise ConfinementError(
            "this kernel (or machine) has no seccomp filtering: the enclave process cannot be confined "
            "to its host channel; refusing to run it (--unconfined runs it without confinement)"
        )
    ours, theirs = channel_pair()
    try:
        cmd = enclave_command(entry, args, theirs.fileno(), confine=confine, grace=grace, python=python)
        proc = subprocess.Popen(
            cmd,
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    watchdog = threading.Timer(timeout, proc.kill) if timeout is not None else None
    if watchdog is not None:
        watchdog.daemon = True
        watchdog.start()
    try:
        with ours:
            Dispatcher(ours, backend).serve()
    except FrameError as e:
        proc.kill()
        raise EnclaveProtocolError(f"the enclave process sent a malformed request: {e}") from None
    finally:
        code = proc.wait()
        if watchdog is not None:
            watchdog.cancel()
    return code


def python_path_with(root: Path) -> dict[str, str]:
    """This environment with ``root`` first on PYTHONPATH (for entries outside the installed package)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    return env
