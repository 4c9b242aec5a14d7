"""Per-call cost of WASI under the LibOS against wasmtime's built-in WASI, measured in the same run.

Run: ``.venv/bin/python -m bench.bench_wasi [--calls N] [--rounds R]``.

- ``clock_time_get`` and a 64-byte ``fd_write`` to a file, each in a tight C loop (``clock_loop.wasm``
  and ``write_loop.wasm`` from ``scripts/build-test-apps``; a WebAssembly-text equivalent when they are
  not built). The same module runs under the LibOS (raw C-API callbacks, our VFS over a host
  directory) and under wasmtime's built-in WASI (``WasiConfig`` + ``Linker.define_wasi``); the per-call
  cost is (time of N calls - time of 0 calls) / N, best of R rounds.
- The cost of a trivial host function defined with ``wasmtime_linker_define_func_unchecked`` (what the
  LibOS uses) against the public ``Linker.define_func``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import wasmtime

from haven.libos.capi import RawLinker
from haven.libos.console import Console
from haven.libos.context import Preopen, WasiContext
from haven.libos.engine import EngineConfig, Instance
from haven.libos.hostfs import HostDirBackend

BUILD = Path(__file__).resolve().parent.parent / "tests" / "apps" / "build" / "c"

# Fallbacks with the C programs' interface: argv[1] is the number of calls.
_LOOP_WAT = """(module
  (import "wasi_snapshot_preview1" "args_get" (func $args (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 512) "write_loop.out")
  (func $n (result i32) (local $p i32) (local $v i32)
    (drop (call $args (i32.const 0) (i32.const 64)))
    (local.set $p (i32.load (i32.const 4)))
    (block $done (loop $digits
      (br_if $done (i32.eqz (i32.load8_u (local.get $p))))
      (local.set $v (i32.add (i32.mul (local.get $v) (i32.const 10))
                             (i32.sub (i32.load8_u (local.get $p)) (i32.const 48))))
      (local.set $p (i32.add (local.get $p) (i32.const 1))) (br $digits)))
    (local.get $v))
  (func (export "_start") (local $i i32) (local $fd i32)
    (local.set $i (call $n))
    KIND))"""
_CLOCK = """(block $end (loop $l (br_if $end (i32.eqz (local.get $i)))
      (drop (call $clock (i32.const 1) (i64.const 1) (i32.const 256)))
      (local.set $i (i32.sub (local.get $i) (i32.const 1))) (br $l)))"""
_WRITE = """(drop (call $open (i32.const 3) (i32.const 0) (i32.const 512) (i32.const 14) (i32.const 9)
      (i64.const 0x3fffffff) (i64.const 0x3fffffff) (i32.const 0) (i32.const 300)))
    (local.set $fd (i32.load (i32.const 300)))
    (i32.store (i32.const 320) (i32.const 1024)) (i32.store (i32.const 324) (i32.const 64))
    (block $end (loop $l (br_if $end (i32.eqz (local.get $i)))
      (drop (call $write (local.get $fd) (i32.const 320) (i32.const 1) (i32.const 328)))
      (local.set $i (i32.sub (local.get $i) (i32.const 1))) (br $l)))"""


def program(name: str) -> bytes:
    built = BUILD / f"{name}.wasm"
    if built.is_file():
        return built.read_bytes()
    return bytes(wasmtime.wat2wasm(_LOOP_WAT.replace("KIND", _CLOCK if name == "clock_loop" else _WRITE)))


class Runners:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.config = EngineConfig()
        self.engine = self.config.engine()
        self.base_engine = wasmtime.Engine()
        self.devnull = os.open(os.devnull, os.O_WRONLY)

    def haven(self, module: wasmtime.Module, calls: int) -> float:
        backend = HostDirBackend(self.dir)
        console = Console(None, self.devnull, self.devnull)
        ctx = WasiContext(
            args=["loop", str(calls)], env=[], console=console, preopens=[Preopen("/", backend)]
        )
        instance = Instance(self.engine, module, ctx, memory_limit=1 << 30)
        t = time.perf_counter()
        outcome = instance.run()
        elapsed = time.perf_counter() - t
        ctx.close_all()
        backend.close()
        assert outcome.exit_code == 0, outcome
        return elapsed

    def builtin(self, module: wasmtime.Module, calls: int) -> float:
        linker = wasmtime.Linker(self.base_engine)
        linker.define_wasi()
        store = wasmtime.Store(self.base_engine)
        wasi = wasmtime.WasiConfig()
        wasi.argv = ["loop", str(calls)]
        wasi.stdout_file = os.devnull
        wasi.preopen_dir(str(self.dir), "/")
        store.set_wasi(wasi)
        start = linker.instantiate(store, module).exports(store)["_start"]
        assert isinstance(start, wasmtime.Func)
        t = time.perf_counter()
        start(store)
        return time.perf_counter() - t


def per_call(run: Callable[[int], float], calls: int, rounds: int) -> float:
    """Microseconds per call: best of ``rounds`` of (t(calls) - t(0)) / calls."""
    best = float("inf")
    for _ in range(rounds):
        best = min(best, (run(calls) - run(0)) / calls)
    return best * 1e6


def wasi_loops(calls: int, rounds: int) -> dict[str, tuple[float, float]]:
    out = {}
    with tempfile.TemporaryDirectory(prefix="haven-bench-") as tmp:
        r = Runners(Path(tmp))
        for name, label in (("clock_loop", "clock_time_get"), ("write_loop", "fd_write 64 B to a file")):
            wasm = program(name)
            ours, theirs = wasmtime.Module(r.engine, wasm), wasmtime.Module(r.base_engine, wasm)
            h = per_call(lambda n, m=ours: r.haven(m, n), calls, rounds)  # type: ignore[misc]
            b = per_call(lambda n, m=theirs: r.builtin(m, n), calls, rounds)  # type: ignore[misc]
            out[label] = (h, b)
    return out


def host_function(calls: int, rounds: int) -> tuple[float, float]:
    """µs per call of a no-op host function: raw unchecked callback, and Linker.define_func."""
    engine = wasmtime.Engine()
    wat = """(module (import "env" "f" (func $f (param i32) (result i32)))
      (func (export "loop") (param $n i32)
        (block $end (loop $l (br_if $end (i32.eqz (local.get $n)))
          (drop (call $f (local.get $n)))
          (local.set $n (i32.sub (local.get $n) (i32.const 1))) (br $l)))))"""
    module = wasmtime.Module(engine, wat)
    raw = RawLinker(engine)
    raw.define("env", "f", ("i32",), ("i32",), lambda env, caller, args, n: 0)
    public = wasmtime.Linker(engine)
    ftype = wasmtime.FuncType([wasmtime.ValType.i32()], [wasmtime.ValType.i32()])
    public.define_func("env", "f", ftype, lambda x: 0)
    costs = []
    for linker, n in ((raw.linker, calls), (public, max(1000, calls // 20))):
        store = wasmtime.Store(engine)
        go = linker.instantiate(store, module).exports(store)["loop"]
        assert isinstance(go, wasmtime.Func)

        def timed(k: int, go: wasmtime.Func = go, store: wasmtime.Store = store) -> float:
            t = time.perf_counter()
            go(store, k)
            return time.perf_counter() - t

        costs.append(per_call(timed, n, rounds))
    return costs[0], costs[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"WASI per-call cost, {args.calls} calls, best of {args.rounds} (µs per call)")
    print(f"  {'call':<26} {'Haven LibOS':>12} {'wasmtime WASI':>14} {'ratio':>7}")
    for label, (h, b) in wasi_loops(args.calls, args.rounds).items():
        print(f"  {label:<26} {h:>12.3f} {b:>14.3f} {h / b:>6.2f}x")
    raw, public = host_function(args.calls, args.rounds)
    print(f"  {'no-op host function':<26} {'raw C API':>12} {'define_func':>14}")
    print(f"  {'':<26} {raw:>12.3f} {public:>14.3f} {raw / public:>6.3f}x")


if __name__ == "__main__":
    main()
