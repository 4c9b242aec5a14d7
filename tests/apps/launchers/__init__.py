"""Launchers for reactor modules: they call an interpreter's exported entry points as a command would run.

A WASI *command* exports ``_start``; a *reactor* exports ``_initialize`` and entry points of its own, and
expects its embedder to call them. QuickJS and Ruby ship as reactors. A launcher drives one of them from
the outside — ``_initialize``, then the interpreter's own exports, with argv mapped to them — so that the
same module behaves like ``qjs FILE`` or ``ruby FILE``. The interpreter module itself is never changed,
and every file, clock or console access still goes through whatever WASI implementation the module was
linked against: the launcher only calls exports and reads and writes guest memory.

``launcher_for(module)`` picks the launcher from the module's exports (see each launcher's docstring for
the exports it relies on) and returns a fresh one per run, or ``None`` for a command module.
"""

from __future__ import annotations

from typing import Protocol

import wasmtime


class Launcher(Protocol):
    """How a runner drives a reactor module."""

    name: str

    def define_imports(self, linker: wasmtime.Linker) -> None:
        """Define the module's non-WASI imports (the runner defines ``wasi_snapshot_preview1``)."""

    def run(self, store: wasmtime.Store, instance: wasmtime.Instance, args: list[str]) -> int:
        """Run as a command with ``args`` (``args[0]`` is the program name); return the exit status.

        A ``proc_exit`` inside the module propagates as the engine's exit trap, as it would from
        ``_start``; the caller handles it the same way.
        """


def launcher_for(module: wasmtime.Module) -> Launcher | None:
    """A new launcher for ``module`` if it is a reactor we know how to drive, else ``None``."""
    from tests.apps.launchers.quickjs import QuickJSLauncher
    from tests.apps.launchers.ruby import RubyLauncher

    names = {export.name for export in module.exports}
    if "_start" in names:
        return None
    for kind in (QuickJSLauncher, RubyLauncher):
        if kind.matches(names):
            return kind(module)
    return None
