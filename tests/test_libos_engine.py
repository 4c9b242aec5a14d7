"""How a run ends: exit statuses, traps, limits, failures inside WASI calls, modules that cannot run."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from haven.libos.console import Console
from haven.libos.context import WasiContext
from haven.libos.engine import EXIT_HAVEN, EXIT_TIME_LIMIT, EXIT_TRAP, EngineConfig, Instance, Outcome
from haven.libos.errors import ModuleError
from haven.shield.storage.errors import IntegrityError

ENGINE = EngineConfig().engine()
EPOCH_ENGINE = EngineConfig(epoch_interruption=True).engine()

PROLOGUE = """
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
"""


def run(
    body: str, tmp_path: Path, *, memory_limit: int = 1 << 30, time_limit: int = 0, ctx_hook: Any = None
) -> Outcome:
    engine = EPOCH_ENGINE if time_limit else ENGINE
    module = wasmtime.Module(engine, f"(module {PROLOGUE} {body})")
    out = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        ctx = WasiContext(args=["t"], env=[], console=Console(None, out, out))
        if ctx_hook is not None:
            ctx_hook(ctx)
        return Instance(engine, module, ctx, memory_limit=memory_limit, time_limit=time_limit).run()
    finally:
        os.close(out)


def test_return_from_start_is_zero(tmp_path: Path) -> None:
    assert run('(func (export "_start"))', tmp_path) == Outcome(0)


@pytest.mark.parametrize("code", [0, 1, 42, 125])
def test_proc_exit_status(tmp_path: Path, code: int) -> None:
    assert run(f'(func (export "_start") (call $exit (i32.const {code})))', tmp_path) == Outcome(code)


@pytest.mark.parametrize("code", [126, 255, -1])
def test_proc_exit_outside_wasi_range_is_an_abort(tmp_path: Path, code: int) -> None:
    out = run(f'(func (export "_start") (call $exit (i32.const {code})))', tmp_path)
    assert out.exit_code == EXIT_TRAP
    assert out.message is not None and "outside WASI's [0, 126)" in out.message


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("(unreachable)", "unreachable"),
        ("(drop (i32.div_u (i32.const 1) (i32.const 0)))", "integer divide by zero"),
        ("(drop (i32.load (i32.const 70000)))", "out of bounds memory access"),
    ],
)
def test_traps_are_134_with_one_line(tmp_path: Path, body: str, reason: str) -> None:
    out = run(f'(func $f {body}) (func (export "_start") (call $f))', tmp_path)
    assert out.exit_code == EXIT_TRAP
    assert out.message is not None and out.message.startswith("the application trapped: ")
    assert reason in out.message and "\n" not in out.message


def test_stack_overflow_is_a_trap(tmp_path: Path) -> None:
    out = run('(func $r (call $r)) (func (export "_start") (call $r))', tmp_path)
    assert out.exit_code == EXIT_TRAP and out.message is not None and "call stack exhausted" in out.message


class _Exploding:
    """A clock that fails inside the WASI call (a bug, or the shield refusing the host's answer)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.mono_source = self.monotonic
        self.mono_floor = 0

    def monotonic(self) -> int:
        raise self.exc

    realtime = monotonic


CALL_CLOCK = '(func (export "_start") (drop (call $clock (i32.const 1) (i64.const 0) (i32.const 0))))'


def test_a_python_exception_in_a_call_is_a_clean_abort(tmp_path: Path) -> None:
    def hook(ctx: WasiContext) -> None:
        ctx.clock = _Exploding(ZeroDivisionError("division by zero"))  # type: ignore[assignment]

    out = run(CALL_CLOCK, tmp_path, ctx_hook=hook)
    assert out.exit_code == EXIT_TRAP
    assert out.message == "the LibOS failed (ZeroDivisionError: division by zero)"


def test_a_haven_error_in_a_call_stops_the_run(tmp_path: Path) -> None:
    def hook(ctx: WasiContext) -> None:
        ctx.clock = _Exploding(IntegrityError("block 7 failed authentication"))  # type: ignore[assignment]

    out = run(CALL_CLOCK, tmp_path, ctx_hook=hook)
    assert out == Outcome(EXIT_HAVEN, "stopped: block 7 failed authentication")


def test_an_interrupt_in_a_call_reaches_the_caller(tmp_path: Path) -> None:
    def hook(ctx: WasiContext) -> None:
        ctx.clock = _Exploding(KeyboardInterrupt())  # type: ignore[assignment]

    with pytest.raises(KeyboardInterrupt):
        run(CALL_CLOCK, tmp_path, ctx_hook=hook)


def test_time_limit_stops_a_busy_loop(tmp_path: Path) -> None:
    t = time.monotonic()
    out = run('(func (export "_start") (loop $l (br $l)))', tmp_path, time_limit=1)
    assert out == Outcome(EXIT_TIME_LIMIT, "the application exceeded its time limit of 1 s")
    assert time.monotonic() - t < 5


def test_time_limit_stops_a_guest_sleeping_in_poll(tmp_path: Path) -> None:
    # One clock subscription: 60 s relative, monotonic. The limit (1 s) ends the wait.
    body = """
      (data (i32.const 0) "\\01\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00")
      (data (i32.const 16) "\\01\\00\\00\\00\\00\\00\\00\\00\\00\\58\\47\\f8\\0d\\00\\00\\00")
      (func (export "_start")
        (drop (call $poll (i32.const 0) (i32.const 128) (i32.const 1) (i32.const 200))))"""
    t = time.monotonic()
    out = run(body, tmp_path, time_limit=1)
    assert out.exit_code == EXIT_TIME_LIMIT
    assert time.monotonic() - t < 5


def test_memory_limit_refuses_growth(tmp_path: Path) -> None:
    # Growing past the limit returns -1 to the guest, which reports it through its exit status.
    body = """(func (export "_start")
      (if (i32.ne (memory.grow (i32.const 1)) (i32.const 1)) (then (call $exit (i32.const 10))))
      (if (i32.ne (memory.grow (i32.const 1)) (i32.const -1)) (then (call $exit (i32.const 11))))
      (call $exit (i32.const 0)))"""
    assert run(body, tmp_path, memory_limit=2 * 65536) == Outcome(0)


def test_memory_limit_is_named_when_the_guest_traps_at_it(tmp_path: Path) -> None:
    out = run('(func (export "_start") (unreachable))', tmp_path, memory_limit=65536)
    assert out.message is not None and "the memory limit of 65536 bytes was reached" in out.message


def test_a_module_needing_more_memory_than_the_limit(tmp_path: Path) -> None:
    module = wasmtime.Module(ENGINE, '(module (memory (export "memory") 4) (func (export "_start")))')
    ctx = WasiContext(args=["t"], env=[], console=Console(None, None, None))
    with pytest.raises(ModuleError, match="cannot be instantiated: memory minimum size"):
        Instance(ENGINE, module, ctx, memory_limit=65536)


@pytest.mark.parametrize(
    ("wat", "message"),
    [
        (
            '(module (import "wasi_snapshot_preview1" "fd_frobnicate" (func)) (memory (export "memory") 1))',
            "imports wasi_snapshot_preview1.fd_frobnicate, which WASI preview 1 does not provide",
        ),
        ('(module (import "env" "f" (func)) (memory (export "memory") 1))', "imports env.f"),
        (
            '(module (import "wasi_snapshot_preview1" "fd_close" (func (param i64) (result i32))) '
            '(memory (export "memory") 1))',
            "cannot be instantiated",
        ),
        ('(module (func (export "_start")))', "exports no memory"),
    ],
)
def test_modules_that_cannot_link(wat: str, message: str) -> None:
    module = wasmtime.Module(ENGINE, wat)
    ctx = WasiContext(args=["t"], env=[], console=Console(None, None, None))
    with pytest.raises(ModuleError, match=message):
        Instance(ENGINE, module, ctx, memory_limit=1 << 20).run()


@pytest.mark.parametrize(
    ("wat", "message"),
    [
        ('(module (memory (export "memory") 1) (func (export "_initialize")))', "is a reactor"),
        ('(module (memory (export "memory") 1))', "exports no _start"),
    ],
)
def test_modules_without_a_command_entry(wat: str, message: str) -> None:
    module = wasmtime.Module(ENGINE, wat)
    ctx = WasiContext(args=["t"], env=[], console=Console(None, None, None))
    with pytest.raises(ModuleError, match=message):
        Instance(ENGINE, module, ctx, memory_limit=1 << 20).run()


def test_a_trap_during_instantiation(tmp_path: Path) -> None:
    module = wasmtime.Module(
        ENGINE, '(module (memory (export "memory") 1) (func $s (unreachable)) (start $s))'
    )
    ctx = WasiContext(args=["t"], env=[], console=Console(None, None, None))
    with pytest.raises(ModuleError, match=r"trapped while it was instantiated: .*unreachable"):
        Instance(ENGINE, module, ctx, memory_limit=1 << 20)


def test_engine_configuration_is_described_for_the_cache() -> None:
    a, b = EngineConfig(), EngineConfig(epoch_interruption=True)
    assert a.digest() != b.digest()
    assert b"wasmtime=50.0.1" in a.describe() and b"memory_may_move=0" in a.describe()
