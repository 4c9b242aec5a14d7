"""Real applications under the LibOS against wasmtime's built-in WASI, as ratios measured in the same run.

Run: ``.venv/bin/python -m bench.bench_apps [--rounds R] [--size N] [--quick] [--only ROW]`` after
``scripts/build-test-apps``. Each figure is the best of R rounds; the baseline is the same ``.wasm``
under wasmtime's own WASI (``WasiConfig`` + ``Linker.define_wasi``) on a plain directory.

- ``speedtest1 --size N`` with its database in an **encrypted** mount (target: at most 1.0x); the
  same on an untrusted host directory is shown for reference;
- CPython ``sum(range(10**7))`` (target: at most 1.02x);
- CPython from start to ``print`` with a warm module cache (target: at most 1.5x): the LibOS loading the
  module from its sealed cache, instantiating and running it, against wasmtime loading its own
  serialized module (``Module.deserialize_file``), instantiating and running it. The whole command —
  ``haven run BUNDLE`` (read the bundle, measure it at EINIT, boot) against a Python process doing the
  baseline — is shown too;
- a C loop of ``clock_time_get`` and of 64-byte ``fd_write`` (µs per call, from ``bench.bench_wasi``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import wasmtime

from bench.bench_wasi import wasi_loops
from haven.bundle.build import build_bundle
from haven.bundle.container import write_bundle
from haven.libos.console import Console
from haven.libos.context import Preopen, WasiContext
from haven.libos.encfs import EncryptedFsBackend
from haven.libos.engine import EngineConfig, Instance
from haven.libos.hostfs import HostDirBackend
from haven.libos.runtime import Application, HostResources, ImageSource
from haven.shield.storage.counter import FileCounter
from haven.shield.storage.device import FileBlockDevice
from haven.shield.storage.image import create_image
from haven.tee.sgx.sigstruct import generate_signing_key
from haven.tee.sim.platform import SimPlatform

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "tests" / "apps" / "build"
KEY = bytes(range(32))
ROWS = ("speedtest", "sum", "start", "loops")  # --only's choices, in the order the rows print


class Bench:
    def __init__(self, work: Path, rounds: int) -> None:
        self.work = work
        self.rounds = rounds
        self.engine = EngineConfig().engine()
        self.base_engine = wasmtime.Engine()
        self.null = os.open(os.devnull, os.O_WRONLY)
        self.modules: dict[tuple[str, bool], wasmtime.Module] = {}

    def module(self, name: str, ours: bool) -> wasmtime.Module:
        if (name, ours) not in self.modules:
            engine = self.engine if ours else self.base_engine
            self.modules[name, ours] = wasmtime.Module.from_file(engine, str(BUILD / name))
        return self.modules[name, ours]

    def best(self, run: Callable[[], float]) -> float:
        return min(run() for _ in range(self.rounds))

    def best_pair(self, ours: Callable[[], float], base: Callable[[], float]) -> tuple[float, float]:
        """Best of each, the rounds alternating: a change of load on a shared machine then falls on
        both sides alike instead of on whichever ran second."""
        times = [(ours(), base()) for _ in range(self.rounds)]
        return min(t[0] for t in times), min(t[1] for t in times)

    def fresh_dir(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.work))

    def haven(self, name: str, argv: list[str], env: list[tuple[str, str]], backend: object | None) -> float:
        preopens = [Preopen("/sandbox", backend)] if backend is not None else []  # type: ignore[arg-type]
        ctx = WasiContext(args=argv, env=env, console=Console(None, self.null, self.null), preopens=preopens)
        instance = Instance(self.engine, self.module(name, True), ctx, memory_limit=4 << 30)
        t = time.perf_counter()
        outcome = instance.run()
        ctx.close_all()
        if backend is not None:
            backend.close()  # type: ignore[attr-defined]  # an encrypted image commits here
        elapsed = time.perf_counter() - t
        assert outcome.exit_code == 0, outcome
        return elapsed

    def baseline(
        self, name: str, argv: list[str], env: list[tuple[str, str]], directory: Path | None
    ) -> float:
        linker = wasmtime.Linker(self.base_engine)
        linker.define_wasi()
        store = wasmtime.Store(self.base_engine)
        wasi = wasmtime.WasiConfig()
        wasi.argv = argv
        wasi.env = [list(kv) for kv in env]
        wasi.stdout_file = wasi.stderr_file = os.devnull
        if directory is not None:
            wasi.preopen_dir(str(directory), "/sandbox")
        store.set_wasi(wasi)
        start = linker.instantiate(store, self.module(name, False)).exports(store)["_start"]
        assert isinstance(start, wasmtime.Func)
        t = time.perf_counter()
        try:
            start(store)
        except wasmtime.ExitTrap as e:
            assert e.code == 0
        return time.perf_counter() - t

    def image(self) -> EncryptedFsBackend:
        where = self.fresh_dir()
        path = where / "data.img"
        create_image(path, 256 << 20, KEY)
        source = ImageSource(FileBlockDevice.open(path), FileCounter(where / "data.img.counter"), KEY)
        return EncryptedFsBackend.mount(source, read_only=False, device=1, clock=time.time_ns)


def speedtest(b: Bench, size: int) -> tuple[float, float, float]:
    argv = ["speedtest1", "--size", str(size), "/sandbox/speedtest1.db"]
    env = [("TMPDIR", "/sandbox")]  # VACUUM's temporary database goes next to the database
    enc = b.best(lambda: b.haven("speedtest1.wasm", argv, env, b.image()))
    host = b.best(lambda: b.haven("speedtest1.wasm", argv, env, HostDirBackend(b.fresh_dir())))
    base = b.best(lambda: b.baseline("speedtest1.wasm", argv, env, b.fresh_dir()))
    return enc, host, base


def python_sum(b: Bench) -> tuple[float, float]:
    argv = ["python", "-c", "sum(range(10**7))"]
    ours = b.best(lambda: b.haven("python.wasm", argv, [], None))
    base = b.best(lambda: b.baseline("python.wasm", argv, [], None))
    return ours, base


def python_start(b: Bench) -> tuple[float, float, float, float]:
    """(in-enclave ours, in-process baseline, whole command ours, whole command baseline)."""
    app_dir = b.fresh_dir()
    shutil.copy(BUILD / "python.wasm", app_dir / "python.wasm")
    (app_dir / "app.toml").write_text('[app]\nmodule = "python.wasm"\nargv = ["python", "-c", "print(1)"]\n')
    bundle_path = app_dir / "app.bundle"
    bundle = build_bundle(app_dir / "app.toml", generate_signing_key())
    write_bundle(bundle, bundle_path)
    platform_file, cache = app_dir / "platform.json", app_dir / "cache"
    platform = SimPlatform.open(platform_file)
    enclave = platform.load_enclave(bundle.image, bundle.sigstruct)

    def ours() -> float:
        app = Application(enclave, HostResources(console=Console(None, b.null, b.null), cache_dir=cache))
        t = time.perf_counter()
        outcome = app.run()
        elapsed = time.perf_counter() - t
        app.close()
        assert outcome.exit_code == 0
        return elapsed

    ours()  # compiles and seals the cache entry: what follows is the warm start
    cwasm = app_dir / "python.cwasm"
    cwasm.write_bytes(bytes(b.module("python.wasm", False).serialize()))

    def base() -> float:
        t = time.perf_counter()
        module = wasmtime.Module.deserialize_file(b.base_engine, str(cwasm))
        linker = wasmtime.Linker(b.base_engine)
        linker.define_wasi()
        store = wasmtime.Store(b.base_engine)
        wasi = wasmtime.WasiConfig()
        wasi.argv = ["python", "-c", "print(1)"]
        wasi.stdout_file = os.devnull
        store.set_wasi(wasi)
        start = linker.instantiate(store, module).exports(store)["_start"]
        assert isinstance(start, wasmtime.Func)
        start(store)
        return time.perf_counter() - t

    env = dict(os.environ, HAVEN_SIM_PLATFORM=str(platform_file))
    command = [sys.executable, "-m", "haven", "run", "--cache-dir", str(cache), str(bundle_path)]
    script = (
        "import wasmtime\ne = wasmtime.Engine()\n"
        f"m = wasmtime.Module.deserialize_file(e, {str(cwasm)!r})\n"
        "l = wasmtime.Linker(e); l.define_wasi(); s = wasmtime.Store(e); w = wasmtime.WasiConfig()\n"
        "w.argv = ['python', '-c', 'print(1)']; w.inherit_stdout(); s.set_wasi(w)\n"
        "l.instantiate(s, m).exports(s)['_start'](s)\n"
    )

    def run_process(argv: list[str]) -> float:
        t = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - t

    return (
        *b.best_pair(ours, base),
        *b.best_pair(lambda: run_process(command), lambda: run_process([sys.executable, "-c", script])),
    )


def ratio(ours: float, base: float, target: float | None = None) -> str:
    r = ours / base
    if target is None:
        return f"{r:6.3f}x"
    return f"{r:6.3f}x  (target <= {target:.2f}x: {'met' if r <= target else 'NOT met'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=20, help="speedtest1 --size")
    parser.add_argument("--quick", action="store_true", help="one round, small sizes")
    parser.add_argument(
        "--only", choices=ROWS, action="append", help="run only these rows (repeatable; default: all)"
    )
    args = parser.parse_args()
    only = set(args.only or ROWS)
    if args.quick:
        args.rounds, args.size = 1, 5
    missing = [n for n in ("speedtest1.wasm", "python.wasm") if not (BUILD / n).is_file()]
    if missing:
        sys.exit(f"bench_apps: {', '.join(missing)} not built: run scripts/build-test-apps")
    with tempfile.TemporaryDirectory(prefix="haven-bench-apps-") as tmp:
        b = Bench(Path(tmp), args.rounds)
        print(f"Applications, best of {args.rounds} (seconds; ratio = Haven / wasmtime built-in WASI)")

        def row(label: str, ours: float, base: float, target: float | None = None) -> None:
            print(f"  {label:<38} {ours:8.4f} vs {base:8.4f}  {ratio(ours, base, target)}")

        if "speedtest" in only:
            enc, host, base = speedtest(b, args.size)
            row(f"speedtest1 --size {args.size}, encrypted mount", enc, base, 1.0)
            row(f"speedtest1 --size {args.size}, host directory", host, base)
        if "sum" in only:
            ours, base = python_sum(b)
            row("CPython sum(range(10**7))", ours, base, 1.02)
        if "start" in only:
            start, bstart, cmd, bcmd = python_start(b)
            row("CPython start to print, warm cache", start, bstart, 1.5)
            row("... whole command (haven run BUNDLE)", cmd, bcmd)
        if "loops" in only:
            print("C loops (µs per call)")
            for label, (h, w) in wasi_loops(100_000, args.rounds).items():
                row(label, h, w)


if __name__ == "__main__":
    main()
