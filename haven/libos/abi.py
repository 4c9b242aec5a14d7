"""The WASI ABI seen from the host: guest memory, the function registry, and the raw-call dispatcher.

Guest memory is one cached ``memoryview`` over the linear memory's bytes. The engine is configured
with ``memory_may_move = False``, so the base address never changes; only the length grows, and the
view is re-derived when (and only when) an access falls beyond the cached length. Every pointer and
length a guest passes is checked here. A pointer outside linear memory, or misaligned for the type it
points to, makes the call trap (:class:`~haven.libos.errors.GuestTrap`), as witx-docs ("Pointers")
requires and wasmtime does; a zero-length range is never dereferenced and always passes.

Every WASI function is a plain Python function ``impl(ctx, *args) -> errno`` registered with
:func:`wasi` under its ``wasi_snapshot_preview1`` name and core-wasm signature (witx lowers
``string`` and ``list`` parameters to pointer and length pairs, and results to out-pointers).
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from haven.libos.capi import VAL_RAW_SIZE, args_format
from haven.libos.errno import Errno, WasiError
from haven.libos.errors import GuestTrap
from haven.libos.layout import IOVEC

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_IOVEC = IOVEC
_IOVECS = struct.Struct("<II")  # one $iovec, for iter_unpack over an array of them
IOVEC_SIZE = IOVEC.size
MAX_IOVECS = 1024  # IOV_MAX on Linux; more is EINVAL, as readv/writev say

# The callback's argument array lives in native memory wasmtime owns for the duration of the call.
# Reading it through one view of the whole user address space costs ~60 ns, against ~330 ns for
# ctypes.string_at plus unpack. It spans the 48-bit user address space of x86-64 and AArch64 and is
# only ever indexed at addresses wasmtime hands us.
_ADDRESS_SPACE = memoryview((ctypes.c_char * (1 << 48)).from_address(0)).cast("B")


def _outside(ptr: int, length: int) -> GuestTrap:
    return GuestTrap(f"pointer {ptr:#x} ({length} bytes) is outside linear memory")


def _misaligned(ptr: int, align: int) -> GuestTrap:
    return GuestTrap(f"pointer {ptr:#x} is not aligned to {align} bytes")


class GuestMemory:
    """Bounds-checked access to the guest's linear memory through one cached view.

    ``locate`` returns the memory's current (base address, byte length); it is called at attach
    time and whenever an access falls beyond the cached length (the memory may have grown).
    """

    __slots__ = ("_locate", "size", "view")

    def __init__(self, locate: Callable[[], tuple[int, int]]) -> None:
        self._locate = locate
        self.view = memoryview(b"")
        self.size = 0
        self.refresh()

    def refresh(self) -> None:
        base, size = self._locate()
        if size != self.size or not self.view.nbytes:
            self.view = (
                memoryview((ctypes.c_ubyte * size).from_address(base)).cast("B")
                if size
                else (memoryview(b""))
            )
            self.size = size

    def check(self, ptr: int, length: int, align: int = 1) -> None:
        """Trap unless ``[ptr, ptr + length)`` lies inside linear memory and ``ptr`` is aligned."""
        if ptr & (align - 1):
            raise _misaligned(ptr, align)
        if ptr + length > self.size and length:
            self.refresh()
            if ptr + length > self.size:
                raise _outside(ptr, length)

    def read(self, ptr: int, length: int) -> bytes:
        if ptr + length > self.size:
            self.check(ptr, length)
            if not length:
                return b""
        return self.view[ptr : ptr + length].tobytes()

    def write(self, ptr: int, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if ptr + n > self.size:
            self.check(ptr, n)
            if not n:
                return
        self.view[ptr : ptr + n] = data

    def u32(self, ptr: int) -> int:
        if ptr + 4 > self.size or ptr & 3:
            self.check(ptr, 4, 4)
        value: int = _U32.unpack_from(self.view, ptr)[0]
        return value

    def put_u32(self, ptr: int, value: int) -> None:
        if ptr + 4 > self.size or ptr & 3:
            self.check(ptr, 4, 4)
        _U32.pack_into(self.view, ptr, value)

    def put_u64(self, ptr: int, value: int) -> None:
        if ptr + 8 > self.size or ptr & 7:
            self.check(ptr, 8, 8)
        _U64.pack_into(self.view, ptr, value)

    def pack(self, fmt: struct.Struct, ptr: int, *values: Any, align: int = 8) -> None:
        """Write a record (witx records of a u64 field are 8-aligned, the others 4)."""
        if ptr + fmt.size > self.size or ptr & (align - 1):
            self.check(ptr, fmt.size, align)
        fmt.pack_into(self.view, ptr, *values)

    def unpack(self, fmt: struct.Struct, ptr: int, align: int = 8) -> tuple[Any, ...]:
        if ptr + fmt.size > self.size or ptr & (align - 1):
            self.check(ptr, fmt.size, align)
        return fmt.unpack_from(self.view, ptr)

    def string(self, ptr: int, length: int) -> bytes:
        """A path or other witx ``string``: must be valid UTF-8 (EILSEQ otherwise)."""
        data = self.read(ptr, length)
        if not data.isascii():
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                raise WasiError(Errno.ILSEQ) from None
        return data

    def iovecs(self, ptr: int, count: int) -> list[tuple[int, int]]:
        """The (buf, buf_len) pairs of an ``$iovec_array``/``$ciovec_array``; the array is checked
        here, the buffers by :meth:`buffers` once the call has checked its descriptor (the order in
        which wasmtime checks them, so the same mistake gets the same answer)."""
        self.check(ptr, count * IOVEC_SIZE, 4)
        if count > MAX_IOVECS:
            raise WasiError(Errno.INVAL)
        if count == 1:
            return [_IOVEC.unpack_from(self.view, ptr)]
        return list(_IOVECS.iter_unpack(self.view[ptr : ptr + count * IOVEC_SIZE]))

    def buffers(self, iovecs: list[tuple[int, int]]) -> list[memoryview]:
        """Views of the buffers an iovec array names, each checked."""
        out = []
        for buf, length in iovecs:
            if buf + length > self.size and length:
                self.check(buf, length)
            out.append(self.view[buf : buf + length])
        return out


# --- the registry -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WasiFunction:
    """One import of ``wasi_snapshot_preview1``: its core signature and its implementation."""

    name: str
    params: tuple[str, ...]
    impl: Callable[..., int]
    noreturn: bool = False

    @property
    def results(self) -> tuple[str, ...]:
        return () if self.noreturn else ("i32",)


MODULE = "wasi_snapshot_preview1"
REGISTRY: dict[str, WasiFunction] = {}


def wasi(
    name: str, params: str = "", *, noreturn: bool = False
) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Register ``impl(ctx, *args) -> errno`` as the WASI function ``name`` with ``params`` (e.g.
    ``"i32 i64 i32"``); a ``noreturn`` function (``proc_exit``) has no result."""

    def register(impl: Callable[..., int]) -> Callable[..., int]:
        if name in REGISTRY:
            raise ValueError(f"WASI function {name} registered twice")
        REGISTRY[name] = WasiFunction(name, tuple(params.split()), impl, noreturn)
        return impl

    return register


def functions() -> list[WasiFunction]:
    """Every registered function (importing the implementation modules registers them)."""
    from haven.libos import wasi_core, wasi_fd, wasi_path, wasi_sock  # noqa: F401

    return list(REGISTRY.values())


Fatal = Callable[[str, BaseException], int]


def bind(fn: WasiFunction, ctx: object, fatal: Fatal) -> Callable[[int | None, int | None, int, int], int]:
    """The raw C-API callback for ``fn`` bound to ``ctx``.

    A :class:`WasiError` becomes the errno result; any other exception (``proc_exit``, a limit, a
    fault in the LibOS or the shield) goes to ``fatal``, which returns the trap that unwinds the guest.
    """
    impl, name = fn.impl, fn.name
    unpack = args_format(fn.params).unpack_from
    put = _U32.pack_into
    space = _ADDRESS_SPACE
    assert VAL_RAW_SIZE == 16

    if fn.noreturn:

        def noreturn(env: int | None, caller: int | None, args: int, nargs: int) -> int:
            try:
                impl(ctx, *unpack(space, args))
            except BaseException as e:
                return fatal(name, e)
            return fatal(name, RuntimeError(f"{name} returned"))

        return noreturn

    def callback(env: int | None, caller: int | None, args: int, nargs: int) -> int:
        try:
            result = impl(ctx, *unpack(space, args))
        except WasiError as e:
            result = e.errno
        except BaseException as e:
            return fatal(name, e)
        put(space, args, result)
        return 0

    return callback
