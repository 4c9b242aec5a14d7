"""Raw wasmtime C-API glue: host functions defined with ``wasmtime_linker_define_func_unchecked``.

The public ``Linker.define_func`` boxes every argument and result into ``Val`` objects and costs
12-20 µs per call; an *unchecked* callback receives the arguments as an array of
``wasmtime_val_raw_t`` and writes its results into the same array, which from Python costs under
1 µs. Signatures (wasmtime ``crates/c-api/include/wasmtime/func.h`` and ``linker.h``)::

    typedef wasm_trap_t *(*wasmtime_func_unchecked_callback_t)(
        void *env, wasmtime_caller_t *caller, wasmtime_val_raw_t *args_and_results,
        size_t num_args_and_results);
    wasmtime_error_t *wasmtime_linker_define_func_unchecked(
        wasmtime_linker_t *linker, const char *module, size_t module_len, const char *name,
        size_t name_len, const wasm_functype_t *ty, wasmtime_func_unchecked_callback_t cb,
        void *data, void (*finalizer)(void *));
    wasm_trap_t *wasmtime_trap_new(const char *msg, size_t msg_len);

``wasmtime_val_raw_t`` is a 16-byte union (``val.h``): an i32 or i64 argument sits little-endian at
the start of its 16-byte slot, and the first result overwrites slot 0.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable
from typing import Any

import wasmtime
from wasmtime import _ffi

VAL_RAW_SIZE = 16  # sizeof(wasmtime_val_raw_t): the union includes a 128-bit v128

# The callback type with every pointer as a plain integer: ctypes then builds no pointer objects.
RawCallback = ctypes.CFUNCTYPE(
    ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t
)
_Finalizer = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_NO_FINALIZER = ctypes.cast(0, _Finalizer)

_define = _ffi.dll.wasmtime_linker_define_func_unchecked
_define.restype = ctypes.c_void_p
_define.argtypes = [
    ctypes.c_void_p,
    ctypes.c_char_p,
    ctypes.c_size_t,
    ctypes.c_char_p,
    ctypes.c_size_t,
    ctypes.c_void_p,
    RawCallback,
    ctypes.c_void_p,
    _Finalizer,
]
_trap_new = _ffi.dll.wasmtime_trap_new
_trap_new.restype = ctypes.c_void_p
_trap_new.argtypes = [ctypes.c_char_p, ctypes.c_size_t]

_VALTYPES = {"i32": wasmtime.ValType.i32, "i64": wasmtime.ValType.i64}
_ARG_FORMATS = {"i32": "I12x", "i64": "Q8x"}  # unsigned: WASI pointers, sizes and u64s are unsigned


def args_format(params: tuple[str, ...]) -> struct.Struct:
    """A struct reading every argument out of the ``wasmtime_val_raw_t`` array at once."""
    return struct.Struct("<" + "".join(_ARG_FORMATS[p] for p in params))


def new_trap(message: str) -> int:
    """A ``wasm_trap_t*`` to return from a callback: wasmtime unwinds the guest with it."""
    raw = message.encode("utf-8", "replace")
    ptr = _trap_new(raw, len(raw))
    if not ptr:
        raise MemoryError("wasmtime_trap_new failed")
    return int(ptr)


class RawLinker:
    """A ``wasmtime.Linker`` plus the unchecked host functions defined in it.

    Keeps every ctypes callback object alive as long as the linker: wasmtime holds only the raw
    function pointer.
    """

    def __init__(self, engine: wasmtime.Engine) -> None:
        self.linker = wasmtime.Linker(engine)
        self._keep: list[Any] = []

    def define(
        self,
        module: str,
        name: str,
        params: tuple[str, ...],
        results: tuple[str, ...],
        callback: Callable[[int | None, int | None, int, int], int],
    ) -> None:
        # A fresh type per definition: wasmtime ties a function type to the first engine it is used
        # with, and aborts the process if it then meets another.
        functype = wasmtime.FuncType([_VALTYPES[p]() for p in params], [_VALTYPES[r]() for r in results])
        cb = RawCallback(callback)
        mod_b, name_b = module.encode(), name.encode()
        err = _define(
            self.linker.ptr(), mod_b, len(mod_b), name_b, len(name_b), functype.ptr(), cb, None, _NO_FINALIZER
        )
        if err:
            raise wasmtime.WasmtimeError._from_ptr(ctypes.cast(err, ctypes.POINTER(_ffi.wasmtime_error_t)))
        self._keep.append((cb, functype))
