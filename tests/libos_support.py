"""Test support for the LibOS: a probe module that lets a test call any WASI function directly.

The probe is a small WebAssembly module that imports all 46 functions of ``wasi_snapshot_preview1``
and exports each behind a same-named thin wrapper, plus its memory. A test drives it from Python —
writes arguments into guest memory, calls a function, reads results back — under either runtime:

- ``Probe("haven", ...)``: the LibOS (raw C-API callbacks, our VFS over a host directory);
- ``Probe("wasmtime", ...)``: wasmtime's own built-in WASI (``WasiConfig`` + ``Linker.define_wasi``).

So every errno and every byte a WASI call writes can be compared between the two.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import wasmtime

from haven.libos.abi import functions
from haven.libos.console import Console
from haven.libos.context import Preopen, WasiContext
from haven.libos.engine import EngineConfig, Instance
from haven.libos.hostfs import HostDirBackend

PAGES = 4  # 256 KiB of guest memory; tests use addresses below 0x30000
SCRATCH = 0x10000  # where the helpers put strings


def probe_wat() -> str:
    imports, wrappers = [], []
    for fn in functions():
        params = " ".join(fn.params)
        result = "" if fn.noreturn else "(result i32)"
        imports.append(
            f'(import "wasi_snapshot_preview1" "{fn.name}" (func ${fn.name} (param {params}) {result}))'
            if params
            else f'(import "wasi_snapshot_preview1" "{fn.name}" (func ${fn.name} {result}))'
        )
        gets = " ".join(f"(local.get {i})" for i in range(len(fn.params)))
        sig = f"(param {params})" if params else ""
        wrappers.append(f'(func (export "{fn.name}") {sig} {result} (call ${fn.name} {gets}))')
    return (
        "(module\n"
        + "\n".join(imports)
        + f'\n(memory (export "memory") {PAGES})\n'
        + "\n".join(wrappers)
        + ")"
    )


_ENGINE: wasmtime.Engine | None = None
_MODULE: wasmtime.Module | None = None


def probe_module() -> tuple[wasmtime.Engine, wasmtime.Module]:
    global _ENGINE, _MODULE
    if _MODULE is None:
        _ENGINE = EngineConfig().engine()
        _MODULE = wasmtime.Module(_ENGINE, probe_wat())
    assert _ENGINE is not None
    return _ENGINE, _MODULE


class Probe:
    """One instance of the probe under ``kind`` ("haven" or "wasmtime")."""

    def __init__(
        self,
        kind: str,
        workdir: Path,
        *,
        preopens: Sequence[tuple[str, Path]] = (),
        args: Sequence[str] = ("probe",),
        env: Sequence[tuple[str, str]] = (),
        stdin: bytes = b"",
        read_only: bool = False,
        encrypted: bool = False,
    ) -> None:
        self.kind = kind
        workdir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = workdir / f"{kind}.stdout"
        self.stderr_path = workdir / f"{kind}.stderr"
        stdin_path = workdir / f"{kind}.stdin"
        stdin_path.write_bytes(stdin)
        engine, module = probe_module()
        self.engine = engine
        if kind == "haven":
            self._files = [
                os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
                for p in (self.stdout_path, self.stderr_path)
            ]
            self._files.append(os.open(stdin_path, os.O_RDONLY))
            console = Console(self._files[2], self._files[0], self._files[1])
            self.backends = [
                encrypted_backend(host, workdir / f"image{i}", read_only=read_only, device=i + 1)
                if encrypted
                else HostDirBackend(host, read_only=read_only, device=i + 1)
                for i, (_, host) in enumerate(preopens)
            ]
            self.ctx = WasiContext(
                args=args,
                env=env,
                console=console,
                preopens=[Preopen(guest, b) for (guest, _), b in zip(preopens, self.backends, strict=True)],
            )
            self.instance = Instance(engine, module, self.ctx, memory_limit=1 << 30)
            self.store = self.instance.store
            self.exports = self.instance.exports
        else:
            cfg = wasmtime.WasiConfig()
            cfg.argv = list(args)
            cfg.env = [list(kv) for kv in env]
            cfg.stdout_file = str(self.stdout_path)
            cfg.stderr_file = str(self.stderr_path)
            cfg.stdin_file = str(stdin_path)
            for guest, host in preopens:
                cfg.preopen_dir(str(host), guest, not read_only)
            linker = wasmtime.Linker(engine)
            linker.define_wasi()
            self.store = wasmtime.Store(engine)
            self.store.set_wasi(cfg)
            self.exports = linker.instantiate(self.store, module).exports(self.store)
        memory = self.exports["memory"]
        assert isinstance(memory, wasmtime.Memory)
        self.memory = memory
        self._scratch = SCRATCH

    def close(self) -> None:
        if self.kind == "haven":
            self.ctx.close_all()
            for b in self.backends:
                b.close()
            for fd in self._files:
                os.close(fd)

    # -- calling ---------------------------------------------------------------------------------------

    def call(self, name: str, *args: int) -> int:
        func = self.exports[name]
        assert isinstance(func, wasmtime.Func)
        result: Any = func(self.store, *args)
        return int(result) if result is not None else 0

    def __getattr__(self, name: str) -> Callable[..., int]:
        if name.startswith(
            ("fd_", "path_", "args_", "environ_", "clock_", "random_", "poll_", "proc_", "sched_", "sock_")
        ):
            return lambda *args: self.call(name, *args)
        raise AttributeError(name)

    # -- memory ----------------------------------------------------------------------------------------

    def write(self, ptr: int, data: bytes) -> None:
        self.memory.write(self.store, data, ptr)

    def read(self, ptr: int, n: int) -> bytes:
        return bytes(self.memory.read(self.store, ptr, ptr + n))

    def u32(self, ptr: int) -> int:
        value: int = struct.unpack("<I", self.read(ptr, 4))[0]
        return value

    def u64(self, ptr: int) -> int:
        value: int = struct.unpack("<Q", self.read(ptr, 8))[0]
        return value

    def string(self, text: str | bytes) -> tuple[int, int]:
        """Put ``text`` in scratch memory; returns (ptr, len) for a witx string argument."""
        data = text.encode() if isinstance(text, str) else text
        ptr = self._scratch
        self.write(ptr, data)
        self._scratch += (len(data) + 15) & ~7
        return ptr, len(data)

    def iovec(self, ptr: int, *buffers: tuple[int, int]) -> tuple[int, int]:
        """Write an iovec array of (buf, len) at ``ptr``; returns (ptr, count)."""
        self.write(ptr, b"".join(struct.pack("<II", b, n) for b, n in buffers))
        return ptr, len(buffers)

    def open(
        self,
        path: str,
        *,
        oflags: int = 0,
        rights: int = (1 << 30) - 1,
        fdflags: int = 0,
        dirfd: int = 3,
        follow: int = 1,
    ) -> tuple[int, int]:
        """path_open with every right; returns (errno, fd)."""
        p, n = self.string(path)
        err = self.path_open(dirfd, follow, p, n, oflags, rights, rights, fdflags, 0x100)
        return err, (self.u32(0x100) if err == 0 else -1)

    def stdout(self) -> bytes:
        return self.stdout_path.read_bytes()


IMAGE_KEY = bytes(range(32))


def encrypted_backend(tree: Path, where: Path, *, read_only: bool = False, device: int = 1) -> Any:
    """An encrypted image holding a copy of ``tree``, mounted as a LibOS backend."""
    from haven.libos.encfs import EncryptedFsBackend
    from haven.libos.runtime import ImageSource
    from haven.shield.storage.counter import FileCounter
    from haven.shield.storage.device import FileBlockDevice
    from haven.shield.storage.image import create_image

    where.mkdir(parents=True, exist_ok=True)
    image = where / "image.img"
    create_image(image, 16 << 20, IMAGE_KEY, from_dir=tree)
    source = ImageSource(FileBlockDevice.open(image), FileCounter(where / "image.img.counter"), IMAGE_KEY)
    return EncryptedFsBackend.mount(source, read_only=read_only, device=device, clock=time.time_ns)


def both(workdir: Path, make_tree: Callable[[Path], None] | None = None, **kw: Any) -> tuple[Probe, Probe]:
    """A haven probe and a wasmtime probe, each over its own copy of the tree ``make_tree`` builds
    (preopened as ``/``) unless ``preopens`` is given."""
    probes = []
    for kind in ("haven", "wasmtime"):
        root = workdir / f"{kind}-root"
        root.mkdir(parents=True)
        if make_tree is not None:
            make_tree(root)
        opts = dict(kw)
        opts.setdefault("preopens", [("/", root)])
        probes.append(Probe(kind, workdir / kind, **opts))
    return probes[0], probes[1]


def snapshot(root: Path) -> dict[str, Any]:
    """Every entry under ``root``: file contents, directory markers and link targets."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", p.read_bytes())
    return out


class Pair:
    """The same calls on a haven probe and a wasmtime probe: every errno (and every byte range a test
    asks about) must agree, except where a test says which answer each side gives."""

    def __init__(self, haven: Probe, wasmtime_probe: Probe) -> None:
        self.h, self.w = haven, wasmtime_probe

    def __iter__(self) -> Any:
        return iter((self.h, self.w))

    def call(self, name: str, *args: int) -> int:
        rh, rw = self.h.call(name, *args), self.w.call(name, *args)
        assert rh == rw, f"{name}{args}: haven {rh}, wasmtime {rw}"
        return rh

    def traps(self, name: str, *args: int) -> bool:
        """Whether the call traps on both sides (it must not trap on only one)."""
        a, b = traps(self.h, name, *args), traps(self.w, name, *args)
        assert a == b, f"{name}{args}: haven traps {a}, wasmtime traps {b}"
        return a

    def diverge(self, name: str, *args: int) -> tuple[int, int]:
        """A documented divergence: returns (haven's errno, wasmtime's errno)."""
        return self.h.call(name, *args), self.w.call(name, *args)

    def write(self, ptr: int, data: bytes) -> None:
        self.h.write(ptr, data)
        self.w.write(ptr, data)

    def read(self, ptr: int, n: int) -> bytes:
        a, b = self.h.read(ptr, n), self.w.read(ptr, n)
        assert a == b, f"memory at {ptr:#x}: haven {a!r}, wasmtime {b!r}"
        return a

    def u32(self, ptr: int) -> int:
        value: int = struct.unpack("<I", self.read(ptr, 4))[0]
        return value

    def u64(self, ptr: int) -> int:
        value: int = struct.unpack("<Q", self.read(ptr, 8))[0]
        return value

    def filestat(self, ptr: int) -> dict[str, int]:
        """The comparable fields of a $filestat both sides wrote at ``ptr``."""
        a, b = filestat(self.h.read(ptr, 64)), filestat(self.w.read(ptr, 64))
        assert a == b, f"filestat: haven {a}, wasmtime {b}"
        return a

    def string(self, text: str | bytes) -> tuple[int, int]:
        a, b = self.h.string(text), self.w.string(text)
        assert a == b
        return a

    def iovec(self, ptr: int, *buffers: tuple[int, int]) -> tuple[int, int]:
        self.h.iovec(ptr, *buffers)
        return self.w.iovec(ptr, *buffers)

    def open(self, path: str, **kw: Any) -> int:
        """path_open on both; the errno must agree; returns the fd (the same number on both sides)."""
        (eh, fh), (ew, fw) = self.h.open(path, **kw), self.w.open(path, **kw)
        assert eh == ew, f"path_open {path!r}: haven {eh}, wasmtime {ew}"
        assert fh == fw, f"path_open {path!r}: fd {fh} vs {fw}"
        return fh if eh == 0 else -eh

    def close(self) -> None:
        self.h.close()
        self.w.close()


def filestat(raw: bytes) -> dict[str, int]:
    """The fields of a $filestat both runtimes must agree on (not dev, ino or the times)."""
    _dev, _ino, ftype, _, nlink, size, _atim, _mtim, _ctim = struct.unpack("<QQB7sQQQQQ", raw)
    # A directory's size is the file system's own business (4096 on ext4, its entry count inside an
    # image), so it is not compared.
    return {"filetype": ftype, "nlink": nlink, "size": -1 if ftype == 3 else size}


def pair(tmp_path: Path, make_tree: Callable[[Path], None] | None = None, **kw: Any) -> Pair:
    h, w = both(tmp_path, make_tree, **kw)
    return Pair(h, w)


def traps(probe: Probe, name: str, *args: int) -> bool:
    """Whether the call traps: what witx requires of a pointer outside linear memory or misaligned,
    and what both runtimes do with an argument that is no value of its type (an enum out of range)."""
    try:
        probe.call(name, *args)
    except (wasmtime.Trap, wasmtime.WasmtimeError):
        return True
    return False
