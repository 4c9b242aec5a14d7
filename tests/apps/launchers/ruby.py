"""Launcher for CRuby 3.4's reactor build (npm ``@ruby/3.4-wasm-wasi``, ``dist/ruby+stdlib.wasm``).

Exports of the module (``wasmtime.Module.exports``, version 2.10.1), named in the component-model
canonical ABI of ruby.wasm's ``rb-abi-guest`` interface: ``memory``, ``_initialize``, ``cabi_realloc``,
``ruby-init: func(args: list<string>) -> ()``, ``ruby-init-loadpath: func() -> ()``,
``ruby-show-version: func() -> ()``,
``rb-eval-string-protect: func(str: string) -> tuple<handle<rb-abi-value>, s32>``,
``rb-funcallv-protect: ...``, ``rb-intern: ...``, ``rb-errinfo: ...``, ``rb-clear-errinfo: ...``,
``rstring-ptr: ...``, ``cabi_post_rstring-ptr``, ``rb-vm-bugreport: ...``, ``rb-gc-enable: ...``,
``rb-gc-disable: ...``, ``rb-set-should-prohibit-rewind: ...``, ``canonical_abi_drop_rb-abi-value``, the
``asyncify_*`` functions, and wasi-vfs's ``wasi_vfs_pack_fs`` and ``__wasi_vfs_rt_init`` (the standard
library is packed into the module and served by wasi-vfs, inside the guest).

Besides ``wasi_snapshot_preview1`` it imports ``canonical_abi`` (``resource_new_rb-abi-value``,
``resource_get_rb-abi-value``, ``resource_drop_js-abi-value``: the handle table for values it returns) and
``rb-js-abi-host`` (the JavaScript bridge). The launcher keeps the handle table and makes every
JavaScript-bridge import trap: there is no JavaScript here, and plain Ruby never calls them.

Running ``ruby FILE ARGS...``: ``_initialize``; ``ruby-init`` with ``ruby -EUTF-8 -e_=0 -- FILE ARGS...``
(strings NUL-terminated, as ruby.wasm's own JavaScript embedding passes them; ``-e_=0`` is a placeholder
program, which ``ruby-init`` parses but does not run, so ``ARGV`` is ``[FILE, ARGS...]``); then
``rb-eval-string-protect`` of :data:`PRELUDE`, which loads FILE as the main script, prints an uncaught
exception the way ``ruby`` does, and ends the process with ``exit!`` — a WASI ``proc_exit`` — carrying
the script's exit status.
"""

from __future__ import annotations

from collections.abc import Callable

import wasmtime

from tests.apps.launchers._guest import Guest, LauncherError

RUBY_INIT = "ruby-init: func(args: list<string>) -> ()"
EVAL = "rb-eval-string-protect: func(str: string) -> tuple<handle<rb-abi-value>, s32>"
EXPORTS = frozenset({"memory", "_initialize", "cabi_realloc", RUBY_INIT, EVAL})

PRELUDE = """\
begin
  $0 = ARGV.shift
  load($0)
  __launcher_status = 0
rescue SystemExit => e
  __launcher_status = e.status
rescue Exception => e
  # Ruby's own report, without the frames of this prelude (they are the launcher's, not the script's).
  e.set_backtrace(e.backtrace.reject { |f| f.start_with?("eval:") || f.end_with?("'Kernel.eval'") })
  $stderr.print(e.full_message(highlight: false))
  __launcher_status = 1
end
$stdout.flush
$stderr.flush
exit!(__launcher_status)
"""


class RubyLauncher:
    name = "ruby"

    def __init__(self, module: wasmtime.Module) -> None:
        self.module = module
        self._handles: dict[int, int] = {}
        self._next_handle = 1

    @staticmethod
    def matches(names: set[str]) -> bool:
        return EXPORTS <= names

    def define_imports(self, linker: wasmtime.Linker) -> None:
        i32 = wasmtime.ValType.i32()
        linker.define_func(
            "canonical_abi", "resource_new_rb-abi-value", wasmtime.FuncType([i32], [i32]), self._new
        )
        linker.define_func(
            "canonical_abi", "resource_get_rb-abi-value", wasmtime.FuncType([i32], [i32]), self._get
        )
        linker.define_func(
            "canonical_abi", "resource_drop_js-abi-value", wasmtime.FuncType([i32], []), self._drop_js
        )
        for imp in self.module.imports:
            if imp.module == "rb-js-abi-host" and imp.name and isinstance(imp.type, wasmtime.FuncType):
                linker.define_func(imp.module, imp.name, imp.type, _no_javascript(imp.name))

    def _new(self, rep: int) -> int:
        handle = self._next_handle
        self._next_handle += 1
        self._handles[handle] = rep
        return handle

    def _get(self, handle: int) -> int:
        if handle not in self._handles:
            raise wasmtime.Trap(f"unknown rb-abi-value handle {handle}")
        return self._handles[handle]

    def _drop_js(self, handle: int) -> None:
        # JavaScript values are never created here (every bridge import traps), so none can be dropped.
        raise wasmtime.Trap(f"unknown js-abi-value handle {handle}")

    def run(self, store: wasmtime.Store, instance: wasmtime.Instance, args: list[str]) -> int:
        guest = Guest(store, instance)
        guest.call("_initialize")
        init_args = ["ruby", "-EUTF-8", "-e_=0", "--", *args[1:]]
        entries = [self._string(guest, arg.encode() + b"\0") for arg in init_args]
        vector = guest.call_i32("cabi_realloc", 0, 0, 4, 8 * len(entries))
        guest.write(
            vector,
            b"".join(p.to_bytes(4, "little") + n.to_bytes(4, "little") for p, n in entries),
        )
        guest.call(RUBY_INIT, vector, len(entries))
        code, length = self._string(guest, PRELUDE.encode())
        result = guest.call_i32(EVAL, code, length)
        state = guest.read_u32(result + 4)
        # The prelude ends in exit!, so returning at all means Ruby could not run it.
        raise LauncherError(f"the Ruby prelude returned (state {state}) instead of exiting")

    @staticmethod
    def _string(guest: Guest, data: bytes) -> tuple[int, int]:
        """Copy ``data`` into a fresh guest buffer (NUL-terminated too) and return (pointer, length)."""
        address = guest.call_i32("cabi_realloc", 0, 0, 1, len(data) + 1)
        if address == 0:
            raise LauncherError("cabi_realloc failed")
        guest.write(address, data + b"\0")
        return address, len(data)


def _no_javascript(name: str) -> Callable[..., None]:
    def trap(*_params: object) -> None:
        raise wasmtime.Trap(f"{name}: no JavaScript host in this runtime")

    return trap
