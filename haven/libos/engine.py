"""The wasmtime engine under the LibOS: configuration, linking, limits, and how a run ends.

A run ends in exactly one of these ways, each with its own exit status and at most one line on
stderr (never a traceback):

==========  ===================================================================================
status      cause
==========  ===================================================================================
0-125       ``_start`` returned (0) or the guest called ``proc_exit`` (wasmtime accepts [0, 126))
124         the manifest's wall-clock limit passed (as ``timeout(1)`` reports it)
134         the guest trapped, or a WASI call failed inside the LibOS (an abort: 128 + SIGABRT)
1           Haven stopped the run: the shield found an attack (fail-stop) or a check failed
==========  ===================================================================================
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import importlib.metadata
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import wasmtime

from haven.errors import HavenError
from haven.libos.abi import MODULE, REGISTRY, GuestMemory, bind, functions
from haven.libos.capi import RawLinker, new_trap
from haven.libos.context import WasiContext
from haven.libos.errors import GuestTrap, ModuleError, ProcExit, TimeLimitExceeded
from haven.libos.wasi_core import MAX_EXIT_STATUS

EXIT_TIME_LIMIT = 124
EXIT_TRAP = 134
EXIT_HAVEN = 1


@dataclass(frozen=True)
class EngineConfig:
    """The options compiled code depends on; their digest binds the module cache to them."""

    epoch_interruption: bool = False

    def describe(self) -> bytes:
        lib = _wasmtime_version()
        return (
            f"wasmtime={lib};memory_may_move=0;memory_init_cow=1;"
            f"epoch_interruption={int(self.epoch_interruption)};target=host"
        ).encode()

    def digest(self) -> bytes:
        return hashlib.sha256(self.describe()).digest()

    def engine(self) -> wasmtime.Engine:
        config = wasmtime.Config()
        # The linear memory is reserved once and never moves, so one cached view stays valid.
        config.memory_may_move = False
        # Copy-on-write memory images: the data segments are mapped, not copied, at each start (CPython's
        # are megabytes). wasmtime makes the image (a memfd) at the module's first instantiation, which a
        # confined enclave process cannot do: `make_memory_image` does it while the process may.
        config.memory_init_cow = True
        if self.epoch_interruption:
            config.epoch_interruption = True
        return wasmtime.Engine(config)


@functools.cache
def _wasmtime_version() -> str:
    return importlib.metadata.version("wasmtime")


def check_imports(module: wasmtime.Module, *, others: bool = False) -> None:
    """Refuse, with the name, any import that is not a function of ``wasi_snapshot_preview1`` (other
    modules' imports only when a launcher defines them)."""
    functions()  # registers every implementation
    for imp in module.imports:
        if (imp.module == MODULE and imp.name not in REGISTRY) or (imp.module != MODULE and not others):
            raise ModuleError(
                f"the module imports {imp.module}.{imp.name}, which WASI preview 1 does not provide"
            )


class Launcher(Protocol):
    """Drives a reactor module (one that exports ``_initialize`` and its own entry points instead of
    ``_start``) as a command: defines its non-WASI imports and calls its exports."""

    def define_imports(self, linker: wasmtime.Linker) -> None: ...
    def run(self, store: wasmtime.Store, instance: wasmtime.Instance, args: list[str]) -> int: ...


@dataclass(frozen=True)
class Outcome:
    """How a run ended: the exit status, and the one line to print on stderr (if any)."""

    exit_code: int
    message: str | None = None


class Instance:
    """One guest instance: the store, its limits, its WASI imports bound to ``ctx``."""

    def __init__(
        self,
        engine: wasmtime.Engine,
        module: wasmtime.Module,
        ctx: WasiContext,
        *,
        memory_limit: int,
        time_limit: int = 0,
        launcher: Launcher | None = None,
    ) -> None:
        self.launcher = launcher
        self.engine = engine
        self.ctx = ctx
        self.memory_limit = memory_limit
        self.time_limit = time_limit
        self._stop: BaseException | None = None
        self._stopped_in = ""
        self._timer: threading.Timer | None = None
        self.store = wasmtime.Store(engine)
        self.store.set_limits(memory_size=memory_limit)
        if time_limit:
            self.store.set_epoch_deadline(1)
        linker = RawLinker(engine)
        for fn in functions():
            linker.define(MODULE, fn.name, fn.params, fn.results, bind(fn, ctx, self._fatal))
        self._linker = linker
        if launcher is not None:
            launcher.define_imports(linker.linker)
        try:
            self.instance = linker.linker.instantiate(self.store, module)
        except wasmtime.Trap as e:
            raise ModuleError(f"the module trapped while it was instantiated: {trap_reason(e)}") from None
        except wasmtime.WasmtimeError as e:
            check_imports(module, others=launcher is not None)  # names an import WASI lacks, if that is it
            raise ModuleError(f"the module cannot be instantiated: {first_line(str(e))}") from None
        self.exports = self.instance.exports(self.store)
        memory = self.exports.get("memory")
        if not isinstance(memory, wasmtime.Memory):
            raise ModuleError("the module exports no memory named 'memory', which WASI requires")
        self._memory = memory
        ctx.attach(GuestMemory(self._locate))

    def _locate(self) -> tuple[int, int]:
        size = self._memory.data_len(self.store)
        base = ctypes.addressof(self._memory.data_ptr(self.store).contents) if size else 0
        return base, size

    def _fatal(self, name: str, exc: BaseException) -> int:
        """A WASI call that cannot return to the guest: remember why, unwind the guest with a trap."""
        if self._stop is None:
            self._stop, self._stopped_in = exc, name
        return new_trap(f"haven: {name} stopped the guest")

    def run(self, args: list[str] | None = None) -> Outcome:
        """Run the command (``_start``), or the reactor through its launcher; report how it ended."""
        if self.launcher is not None:
            launcher = self.launcher
            return self._call(lambda: launcher.run(self.store, self.instance, list(args or [])))
        func = self.exports.get("_start")
        if not isinstance(func, wasmtime.Func):
            if "_initialize" in self.exports:
                raise ModuleError("the module is a reactor (it exports _initialize, not _start)")
            raise ModuleError("the module exports no _start function")
        return self._call(lambda: func(self.store))

    def _call(self, entry: Callable[[], Any]) -> Outcome:
        self._start_timer()
        try:
            result = entry()
        except wasmtime.Trap as e:
            return self._ended(e)
        except wasmtime.WasmtimeError as e:
            return self._ended(e)
        finally:
            self._stop_timer()
        if self._stop is not None:  # a callback failed but wasmtime still returned normally
            return self._ended(None)
        return Outcome(result if isinstance(result, int) and self.launcher is not None else 0)

    def _ended(self, err: wasmtime.WasmtimeError | wasmtime.Trap | None) -> Outcome:
        stop, self._stop = self._stop, None
        if isinstance(stop, ProcExit):
            if 0 <= stop.code <= MAX_EXIT_STATUS:
                return Outcome(stop.code)
            return Outcome(EXIT_TRAP, f"exit status {stop.code} is outside WASI's [0, 126)")
        if isinstance(stop, TimeLimitExceeded) or (
            isinstance(err, wasmtime.Trap) and err.trap_code == wasmtime.TrapCode.INTERRUPT
        ):
            return Outcome(EXIT_TIME_LIMIT, f"the application exceeded its time limit of {self.time_limit} s")
        if isinstance(stop, (KeyboardInterrupt, SystemExit)):
            raise stop
        if isinstance(stop, GuestTrap):
            return Outcome(EXIT_TRAP, f"the application trapped: {self._stopped_in}: {stop}")
        if isinstance(stop, HavenError):
            return Outcome(EXIT_HAVEN, f"stopped: {stop}")
        if stop is not None:
            return Outcome(EXIT_TRAP, f"the LibOS failed ({type(stop).__name__}: {first_line(str(stop))})")
        reason = trap_reason(err) if isinstance(err, wasmtime.Trap) else first_line(str(err))
        if self._near_memory_limit():
            reason += f" (the memory limit of {self.memory_limit} bytes was reached)"
        return Outcome(EXIT_TRAP, f"the application trapped: {reason}")

    def _near_memory_limit(self) -> bool:
        return self._memory.data_len(self.store) + 65536 > self.memory_limit

    def _start_timer(self) -> None:
        if self.time_limit:
            self.ctx.deadline = time.monotonic() + self.time_limit
            self._timer = threading.Timer(self.time_limit, self.engine.increment_epoch)
            self._timer.daemon = True
            self._timer.start()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown error"


def trap_reason(trap: wasmtime.Trap) -> str:
    """The trap's cause and the innermost function, on one line."""
    reason = first_line(trap.message).removeprefix("wasm trap: ")
    try:
        frames = trap.frames
    except wasmtime.WasmtimeError:
        frames = []
    if frames:
        f = frames[0]
        where = f.func_name or f"function {f.func_index}"
        reason += f" (in {where})"
    return reason


def make_memory_image(engine: wasmtime.Engine, module: wasmtime.Module) -> None:
    """Instantiate ``module`` once with every import trapping, so that wasmtime builds (and keeps, with
    the module) its copy-on-write memory image now, before the enclave process is confined."""
    linker = wasmtime.Linker(engine)
    linker.define_unknown_imports_as_traps(module)
    # A start function that calls an import traps: the image exists by then.
    with contextlib.suppress(wasmtime.Trap, wasmtime.WasmtimeError):
        linker.instantiate(wasmtime.Store(engine), module)
