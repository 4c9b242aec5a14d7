"""Errors of the LibOS, and the two ways a guest stops from inside a WASI call."""

from __future__ import annotations

from haven.errors import HavenError


class LibosError(HavenError):
    """The application cannot be run as the manifest says (reported on one line, exit 1)."""


class MountError(LibosError):
    """A mount the manifest asks for cannot be set up."""


class ModuleError(LibosError):
    """The module does not compile, does not link against WASI preview 1, or cannot be instantiated."""


class ProcExit(Exception):
    """``proc_exit``: unwinds the guest; the run ends with ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exit status {code}")
        self.code = code


class TimeLimitExceeded(Exception):
    """The manifest's wall-clock limit passed while the guest waited inside a WASI call."""


class GuestTrap(Exception):
    """A WASI call the guest made wrongly in a way witx says traps: a pointer outside linear memory
    or misaligned for its type (witx-docs, "Pointers"), or an argument that is no value of its witx
    type (an enum or flags value out of range). The guest stops, as under wasmtime."""


def bad_value(what: str, value: int) -> GuestTrap:
    return GuestTrap(f"{value:#x} is not a valid {what}")
