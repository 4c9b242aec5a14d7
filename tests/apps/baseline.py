"""The baseline for differential tests: a module under wasmtime's own built-in WASI on a plain directory.

``run_baseline`` runs a WASI preview 1 module the way ``wasmtime run --dir HOST::/sandbox`` would: wasmtime's
WASI implementation (not Haven's), one preopened host directory, argv and environment exactly as given,
stdin from bytes, stdout and stderr captured. Reactor modules (QuickJS, Ruby) are driven through their
launcher (``tests.apps.launchers``), chosen from the module's exports, so that they behave as commands.

A Haven runner with the same signature returns the same :class:`Result` for the same module, arguments
and starting directory; tests compare the two field by field.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import wasmtime

from tests.apps.launchers import launcher_for

APPS = Path(__file__).resolve().parent
BUILD = APPS / "build"

# Where the preopened directory appears inside the guest. Fixed, so transcripts do not depend on the
# host path of a temporary directory.
GUEST_DIR = "/sandbox"

# The exit status `wasmtime run` gives a module that traps (128 + SIGABRT on Unix), so a trap is
# distinguishable from any proc_exit status a test program uses.
TRAP_EXIT_CODE = 134

DEFAULT_TIMEOUT = 120.0


@dataclass(frozen=True)
class Result:
    """What a run leaves behind: exit status, the two output streams and the directory's contents."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    files: dict[str, bytes]
    # The last line of a trap's message (its cause) when the module trapped. Not compared: its wording is
    # the engine's, and a LibOS may phrase its own failures differently.
    trap: str | None = field(default=None, compare=False)


class BaselineTimeout(RuntimeError):
    """The module ran past its wall-clock limit and was interrupted."""


def snapshot(root: Path) -> dict[str, bytes]:
    """Everything under ``root``: files by content, directories as ``"name/"`` and symlinks as ``"name@"``.

    Keys are POSIX paths relative to ``root``. A directory maps to ``b""``; a symbolic link maps to its
    target (as stored, not followed), so a test sees a link that escapes the directory without following
    it. Timestamps, modes and inode numbers are deliberately left out: they are host facts.
    """
    out: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in list(dirnames):
            path = base / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel + "@"] = os.fsencode(os.readlink(path))
                dirnames.remove(name)
            else:
                out[rel + "/"] = b""
        for name in filenames:
            path = base / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel + "@"] = os.fsencode(os.readlink(path))
            elif path.is_file():
                out[rel] = path.read_bytes()
    return dict(sorted(out.items()))


class _Runtime:
    """One engine for every baseline run in the process, with wasmtime's own compilation cache on disk."""

    def __init__(self) -> None:
        config = wasmtime.Config()
        config.epoch_interruption = True
        cache_config = self._cache_config()
        if cache_config is not None:
            config.cache = str(cache_config)
        self.engine = wasmtime.Engine(config)
        self._modules: dict[tuple[str, int, int], wasmtime.Module] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _cache_config() -> Path | None:
        """A cache configuration under the (git-ignored) build directory, if that directory exists."""
        if not BUILD.is_dir():
            return None
        path = BUILD / "wasmtime-cache.toml"
        directory = BUILD / "wasmtime-cache"
        text = f'[cache]\ndirectory = "{directory.as_posix()}"\n'
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
        return path

    def module(self, wasm: Path) -> wasmtime.Module:
        """The compiled module, compiled once per process (and once per machine, through the cache)."""
        st = wasm.stat()
        key = (str(wasm.resolve()), st.st_mtime_ns, st.st_size)
        with self._lock:
            module = self._modules.get(key)
            if module is None:
                module = wasmtime.Module.from_file(self.engine, str(wasm))
                self._modules[key] = module
            return module


_runtime: _Runtime | None = None


def _get_runtime() -> _Runtime:
    global _runtime
    if _runtime is None:
        _runtime = _Runtime()
    return _runtime


@contextmanager
def _deadline(engine: wasmtime.Engine, seconds: float) -> Iterator[threading.Event]:
    """Advance the engine's epoch once ``seconds`` have passed, interrupting a store whose deadline is 1."""
    fired = threading.Event()
    done = threading.Event()

    def watchdog() -> None:
        if not done.wait(seconds):
            fired.set()
            engine.increment_epoch()

    thread = threading.Thread(target=watchdog, daemon=True)
    thread.start()
    try:
        yield fired
    finally:
        done.set()
        thread.join()


def run_baseline(
    wasm: Path,
    args: list[str],
    *,
    preopen: Path,
    env: dict[str, str],
    stdin: bytes = b"",
    guest_dir: str = GUEST_DIR,
    timeout: float = DEFAULT_TIMEOUT,
) -> Result:
    """Run ``wasm`` under wasmtime's built-in WASI with ``preopen`` mounted at ``guest_dir``.

    ``args`` is the complete argv (``args[0]`` is the program name). The environment holds exactly
    ``env``. Returns the exit status (0 when ``_start`` returns, the ``proc_exit`` status, or
    :data:`TRAP_EXIT_CODE` on a trap), both output streams and :func:`snapshot` of ``preopen`` afterwards.
    """
    runtime = _get_runtime()
    module = runtime.module(wasm)
    with tempfile.TemporaryDirectory(prefix="haven-baseline-") as tmp:
        stdin_path, stdout_path, stderr_path = (Path(tmp) / n for n in ("stdin", "stdout", "stderr"))
        stdin_path.write_bytes(stdin)
        wasi = wasmtime.WasiConfig()
        wasi.argv = list(args)
        wasi.env = list(env.items())
        wasi.stdin_file = str(stdin_path)
        wasi.stdout_file = str(stdout_path)
        wasi.stderr_file = str(stderr_path)
        wasi.preopen_dir(str(preopen), guest_dir)

        store = wasmtime.Store(runtime.engine)
        store.set_wasi(wasi)
        store.set_epoch_deadline(1)
        linker = wasmtime.Linker(runtime.engine)
        linker.define_wasi()
        launcher = launcher_for(module)
        if launcher is not None:
            launcher.define_imports(linker)

        exit_code, trap = 0, None
        with _deadline(runtime.engine, timeout) as fired:
            try:
                instance = linker.instantiate(store, module)
                if launcher is None:
                    start = instance.exports(store)["_start"]
                    assert isinstance(start, wasmtime.Func)
                    start(store)
                else:
                    exit_code = launcher.run(store, instance, list(args))
            except wasmtime.ExitTrap as e:
                exit_code = e.code
            except (wasmtime.Trap, wasmtime.WasmtimeError) as e:
                if fired.is_set():
                    raise BaselineTimeout(f"{wasm.name} ran longer than {timeout} s") from e
                lines = [line.strip() for line in str(e).splitlines() if line.strip()]
                exit_code, trap = TRAP_EXIT_CODE, (lines[-1] if lines else "trap")
        del store, linker
        return Result(
            exit_code=exit_code,
            stdout=stdout_path.read_bytes(),
            stderr=stderr_path.read_bytes(),
            files=snapshot(preopen),
            trap=trap,
        )
