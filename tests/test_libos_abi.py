"""The WASI ABI layer: the registry against witx, structure layouts, guest-memory checks, raw callbacks."""

from __future__ import annotations

import ctypes
import struct
import time

import pytest
import wasmtime

from haven.libos import layout
from haven.libos.abi import MAX_IOVECS, REGISTRY, GuestMemory, functions
from haven.libos.capi import RawLinker, args_format
from haven.libos.errno import RIGHTS_ALL, Errno, Rights, WasiError, from_os_errno
from haven.libos.errors import GuestTrap
from haven.libos.layout import Dirent, Event, Fdstat, Filestat, Iovec, Prestat, Subscription
from haven.structs import Struct

# The 46 functions of wasi_snapshot_preview1 with their core signatures: witx lowers a string or a list
# to (pointer, length), a u64 type to i64, every other scalar to i32, and each result to an out-pointer.
WITX = {
    "args_get": "i32 i32",
    "args_sizes_get": "i32 i32",
    "environ_get": "i32 i32",
    "environ_sizes_get": "i32 i32",
    "clock_res_get": "i32 i32",
    "clock_time_get": "i32 i64 i32",
    "fd_advise": "i32 i64 i64 i32",
    "fd_allocate": "i32 i64 i64",
    "fd_close": "i32",
    "fd_datasync": "i32",
    "fd_fdstat_get": "i32 i32",
    "fd_fdstat_set_flags": "i32 i32",
    "fd_fdstat_set_rights": "i32 i64 i64",
    "fd_filestat_get": "i32 i32",
    "fd_filestat_set_size": "i32 i64",
    "fd_filestat_set_times": "i32 i64 i64 i32",
    "fd_pread": "i32 i32 i32 i64 i32",
    "fd_prestat_get": "i32 i32",
    "fd_prestat_dir_name": "i32 i32 i32",
    "fd_pwrite": "i32 i32 i32 i64 i32",
    "fd_read": "i32 i32 i32 i32",
    "fd_readdir": "i32 i32 i32 i64 i32",
    "fd_renumber": "i32 i32",
    "fd_seek": "i32 i64 i32 i32",
    "fd_sync": "i32",
    "fd_tell": "i32 i32",
    "fd_write": "i32 i32 i32 i32",
    "path_create_directory": "i32 i32 i32",
    "path_filestat_get": "i32 i32 i32 i32 i32",
    "path_filestat_set_times": "i32 i32 i32 i32 i64 i64 i32",
    "path_link": "i32 i32 i32 i32 i32 i32 i32",
    "path_open": "i32 i32 i32 i32 i32 i64 i64 i32 i32",
    "path_readlink": "i32 i32 i32 i32 i32 i32",
    "path_remove_directory": "i32 i32 i32",
    "path_rename": "i32 i32 i32 i32 i32 i32",
    "path_symlink": "i32 i32 i32 i32 i32",
    "path_unlink_file": "i32 i32 i32",
    "poll_oneoff": "i32 i32 i32 i32",
    "proc_exit": "i32",
    "proc_raise": "i32",
    "sched_yield": "",
    "random_get": "i32 i32",
    "sock_accept": "i32 i32 i32",
    "sock_recv": "i32 i32 i32 i32 i32 i32",
    "sock_send": "i32 i32 i32 i32 i32",
    "sock_shutdown": "i32 i32",
}


def test_all_46_functions_with_their_witx_signatures() -> None:
    got = {fn.name: " ".join(fn.params) for fn in functions()}
    assert len(got) == 46
    assert got == WITX
    assert REGISTRY["proc_exit"].results == ()
    assert all(fn.results == ("i32",) for fn in functions() if fn.name != "proc_exit")


def test_the_registry_matches_wasmtimes_own_wasi() -> None:
    """Every import wasmtime's built-in WASI defines has the type ours has (so a module that links
    against one links against the other)."""
    engine = wasmtime.Engine()
    for fn in functions():
        params = " ".join(fn.params)
        res = "" if fn.noreturn else "(result i32)"
        sig = f"(param {params})" if params else ""
        wat = f'(module (import "wasi_snapshot_preview1" "{fn.name}" (func {sig} {res})))'
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        store = wasmtime.Store(engine)
        store.set_wasi(wasmtime.WasiConfig())
        linker.instantiate(store, wasmtime.Module(engine, wat))  # raises if the type differs


def test_errno_values_are_witx_order() -> None:
    named = [Errno.SUCCESS, Errno.TOOBIG, Errno.BADF, Errno.FAULT, Errno.INVAL, Errno.NOENT, Errno.NOTDIR]
    assert [int(e) for e in named] == [0, 1, 8, 21, 28, 44, 54]
    assert int(Errno.PERM) == 63 and int(Errno.NOTCAPABLE) == 76 and len(Errno) == 77
    assert int(Rights.FD_DATASYNC) == 1 and int(Rights.SOCK_ACCEPT) == 1 << 29 and RIGHTS_ALL == (1 << 30) - 1
    assert (
        from_os_errno(2) == Errno.NOENT
        and from_os_errno(None) == Errno.IO
        and from_os_errno(9999) == Errno.IO
    )


@pytest.mark.parametrize(
    ("table", "size", "offsets"),
    [
        (Iovec, 8, {"buf": 0, "buf_len": 4}),
        (Fdstat, 24, {"fs_filetype": 0, "fs_flags": 2, "fs_rights_base": 8, "fs_rights_inheriting": 16}),
        (Filestat, 64, {"dev": 0, "ino": 8, "filetype": 16, "nlink": 24, "size": 32, "atim": 40, "ctim": 56}),
        (Dirent, 24, {"d_next": 0, "d_ino": 8, "d_namlen": 16, "d_type": 20}),
        (Prestat, 8, {"tag": 0, "pr_name_len": 4}),
        (
            Subscription,
            48,
            {"userdata": 0, "tag": 8, "id_or_fd": 16, "timeout": 24, "precision": 32, "flags": 40},
        ),
        (Event, 32, {"userdata": 0, "error": 8, "type": 10, "nbytes": 16, "flags": 24}),
    ],
)
def test_structure_layouts_are_wasi_libcs(table: type[Struct], size: int, offsets: dict[str, int]) -> None:
    # wasi-libc's <wasi/api.h> asserts these sizes and offsets for wasm32.
    assert table.SIZE == size and layout.codec(table).size == size
    for name, at in offsets.items():
        assert table.offset_of(name) == at


class _Buffer:
    """A ctypes buffer standing in for linear memory, growable in place (like memory_may_move=False)."""

    def __init__(self, size: int, capacity: int = 1 << 16) -> None:
        self.raw = ctypes.create_string_buffer(capacity)
        self.size = size
        self.locates = 0

    def locate(self) -> tuple[int, int]:
        self.locates += 1
        return ctypes.addressof(self.raw), self.size


def test_guest_memory_bounds_and_alignment_trap() -> None:
    buf = _Buffer(4096)
    mem = GuestMemory(buf.locate)
    mem.write(4092, b"abcd")
    assert mem.read(4092, 4) == b"abcd"
    for ptr, n in ((4093, 4), (4096, 1), (0xFFFFFFFF, 1), (0, 4097), (4000, 0xFFFFFFFF)):
        with pytest.raises(GuestTrap, match="outside linear memory"):
            mem.read(ptr, n)
    with pytest.raises(GuestTrap, match="outside"):
        mem.put_u64(4096, 1)
    with pytest.raises(GuestTrap, match="not aligned to 8"):
        mem.put_u64(4092, 1)
    with pytest.raises(GuestTrap, match="not aligned to 4"):
        mem.put_u32(2, 1)
    mem.check(4096, 0)  # an empty range is never dereferenced
    mem.check(1 << 31, 0)
    assert mem.read(1 << 31, 0) == b""


def test_guest_memory_rederives_its_view_only_when_memory_grew() -> None:
    buf = _Buffer(4096)
    mem = GuestMemory(buf.locate)
    first = buf.locates
    for _ in range(100):
        mem.put_u32(0, 7)
    assert buf.locates == first  # in-bounds accesses never ask again
    buf.size = 8192  # memory.grow
    mem.put_u32(8000, 9)
    assert mem.u32(8000) == 9 and mem.size == 8192


def test_strings_must_be_utf8() -> None:
    buf = _Buffer(64)
    mem = GuestMemory(buf.locate)
    mem.write(0, "héllo".encode())
    assert mem.string(0, 6) == "héllo".encode()
    mem.write(0, b"\xff\xfe")
    with pytest.raises(WasiError) as e:
        mem.string(0, 2)
    assert e.value.errno == Errno.ILSEQ


def test_iovecs_are_checked_one_by_one() -> None:
    buf = _Buffer(4096)
    mem = GuestMemory(buf.locate)
    mem.write(0, struct.pack("<IIII", 100, 10, 200, 0))
    views = mem.buffers(mem.iovecs(0, 2))
    assert [len(v) for v in views] == [10, 0]
    mem.write(0, struct.pack("<II", 4090, 10))  # the buffer runs past the end
    with pytest.raises(GuestTrap):
        mem.buffers(mem.iovecs(0, 1))
    with pytest.raises(GuestTrap):
        mem.iovecs(4088, 2)  # the array itself runs past the end
    with pytest.raises(GuestTrap, match="aligned"):
        mem.iovecs(2, 1)
    big = GuestMemory(_Buffer(16384).locate)
    with pytest.raises(WasiError) as e:
        big.iovecs(0, MAX_IOVECS + 1)  # more than IOV_MAX
    assert e.value.errno == Errno.INVAL


def test_raw_arguments_are_read_from_16_byte_slots() -> None:
    fmt = args_format(("i32", "i64", "i32"))
    raw = struct.pack("<I12xQ8xI12x", 0xFFFFFFFF, 1 << 63, 5)
    assert fmt.unpack_from(raw) == (0xFFFFFFFF, 1 << 63, 5)  # unsigned, as WASI's types are


def test_raw_callback_round_trip_and_cost() -> None:
    """A host function defined through wasmtime_linker_define_func_unchecked: arguments in, result
    out, and a per-call cost far below Linker.define_func's."""
    engine = wasmtime.Engine()
    seen: list[tuple[int, int]] = []

    def add(env: int | None, caller: int | None, args: int, nargs: int) -> int:
        a, b = args_format(("i32", "i64")).unpack_from(ctypes.string_at(args, 32))
        seen.append((a, b))
        ctypes.c_int32.from_address(args).value = a + b
        return 0

    linker = RawLinker(engine)
    linker.define("env", "add", ("i32", "i64"), ("i32",), add)
    wat = """(module (import "env" "add" (func $add (param i32 i64) (result i32)))
      (func (export "go") (param i32) (result i32) (call $add (local.get 0) (i64.const 40))))"""
    store = wasmtime.Store(engine)
    inst = linker.linker.instantiate(store, wasmtime.Module(engine, wat))
    go = inst.exports(store)["go"]
    assert isinstance(go, wasmtime.Func) and go(store, 2) == 42
    assert seen == [(2, 40)]


def test_raw_callbacks_beat_define_func() -> None:
    engine = wasmtime.Engine()
    wat = """(module (import "env" "f" (func $f (param i32) (result i32)))
      (func (export "loop") (param $n i32)
        (loop $l (drop (call $f (local.get $n)))
          (local.set $n (i32.sub (local.get $n) (i32.const 1))) (br_if $l (local.get $n)))))"""
    module = wasmtime.Module(engine, wat)
    raw = RawLinker(engine)
    raw.define("env", "f", ("i32",), ("i32",), lambda env, caller, args, n: 0)
    public = wasmtime.Linker(engine)
    public.define_func(
        "env", "f", wasmtime.FuncType([wasmtime.ValType.i32()], [wasmtime.ValType.i32()]), lambda x: 0
    )
    costs = []
    for linker in (raw.linker, public):
        store = wasmtime.Store(engine)
        go = linker.instantiate(store, module).exports(store)["loop"]
        assert isinstance(go, wasmtime.Func)
        t = time.perf_counter()
        go(store, 3000)
        costs.append(time.perf_counter() - t)
    assert costs[0] * 3 < costs[1]
