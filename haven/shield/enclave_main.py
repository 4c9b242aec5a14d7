"""The enclave process: ``python -m haven.shield.enclave_main --channel FD [options] ENTRY [ARGS...]``.

The untrusted host runtime (:mod:`haven.host.runtime`) starts this process with one end of a
socketpair as descriptor ``FD``; everything the enclave needs from the outside world afterwards goes
through that channel (:class:`haven.shield.hostchannel.HostChannel`). The run has two phases:

1. *boot*: ``ENTRY`` (``package.module:function``) is called as ``function(host, args)``; it may still
   read what it needs from the local file system (code, the measured bundle, the platform) and
   returns the program to run, a callable returning the exit code;
2. *run*: the process confines itself (:func:`haven.shield.confine.confine`) — unless
   ``--unconfined`` — and runs the program. Its code is reported with the ``exit`` call.

A host violation stops the process with :data:`~haven.shield.hostwire.EXIT_VIOLATION`; so does an
integrity failure of private storage (the host served forged, stale or swapped blocks). Any other
error is reported on stderr as ``haven: error: ...`` with exit code 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from haven.errors import HavenError
from haven.shield.confine import confine
from haven.shield.hostchannel import DEFAULT_GRACE, HostChannel
from haven.shield.storage.errors import IntegrityError

Program = Callable[[], int]
Entry = Callable[[HostChannel, list[str]], Program]


class EntryError(HavenError):
    """The entry named on the command line cannot be loaded."""


def load_entry(spec: str) -> Entry:
    module, sep, name = spec.partition(":")
    if not sep or not module or not name.isidentifier():
        raise EntryError(f"entry {spec!r}: expected package.module:function")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise EntryError(f"entry {spec!r}: {e}") from None
    if not callable(fn):
        raise EntryError(f"entry {spec!r} is not callable")
    return fn  # type: ignore[no-any-return]


def _say(host: HostChannel, text: str) -> None:
    os.write(host.console_fd, (text.rstrip("\n") + "\n").encode("utf-8", "replace"))


def run(host: HostChannel, entry: str | Entry, args: list[str], *, confined: bool = True) -> int:
    """Boot ``entry`` (a ``module:function`` name, or the function), confine, run the program it
    returns; the program's exit code (a violation does not return)."""
    try:
        boot = load_entry(entry) if isinstance(entry, str) else entry
        program = boot(host, args)
        if confined:
            confine(host.fileno(), host.console_fd)
        return int(program())
    except IntegrityError as e:
        # The storage layer found the host's blocks forged, stale or swapped: an attack, like any
        # broken rule of the interface.
        host.fail_stop("storage", str(e))
    except HavenError as e:
        _say(host, f"haven: error: {e}")
        return e.exit_code or 1
    except Exception:
        traceback.print_exc()
        return 1


def main(argv: Sequence[str] | None = None) -> NoReturn:
    parser = argparse.ArgumentParser(prog="python -m haven.shield.enclave_main")
    parser.add_argument("--channel", type=int, required=True, metavar="FD")
    parser.add_argument("--unconfined", action="store_true", help="do not load the seccomp filter")
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE, metavar="SECONDS")
    parser.add_argument("entry", metavar="MODULE:FUNCTION")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    host = HostChannel(ns.channel, grace=ns.grace)
    code = run(host, ns.entry, list(ns.args), confined=not ns.unconfined)
    sys.stderr.flush()
    host.exit(code & 0xFF)
    raise AssertionError("exit returned")  # pragma: no cover


if __name__ == "__main__":
    main()
