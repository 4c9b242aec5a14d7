"""The test applications as runnable cases, and the canonical text of a run's result.

Each :class:`AppCase` names a module under ``tests/apps/build`` (built by ``scripts/build-test-apps``), its
argv and environment, its stdin, and what to put in the preopened directory first (scripts, links a guest
cannot make). Any runner with the signature of :func:`tests.apps.baseline.run_baseline` runs it through
:meth:`AppCase.run`; :func:`render` turns the result into the text kept in ``tests/apps/expected/NAME.txt``,
so that two runtimes are compared on exactly the same text.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tests.apps.baseline import BUILD, GUEST_DIR, Result

APPS = Path(__file__).resolve().parent
EXPECTED = APPS / "expected"

# The 46 functions of wasi_snapshot_preview1 (wasi_snapshot_preview1.witx).
WASI_FUNCTIONS = frozenset(
    {
        "args_get", "args_sizes_get", "environ_get", "environ_sizes_get", "clock_res_get", "clock_time_get",
        "fd_advise", "fd_allocate", "fd_close", "fd_datasync", "fd_fdstat_get", "fd_fdstat_set_flags",
        "fd_fdstat_set_rights", "fd_filestat_get", "fd_filestat_set_size", "fd_filestat_set_times",
        "fd_pread", "fd_prestat_get", "fd_prestat_dir_name", "fd_pwrite", "fd_read", "fd_readdir",
        "fd_renumber", "fd_seek", "fd_sync", "fd_tell", "fd_write", "path_create_directory",
        "path_filestat_get", "path_filestat_set_times", "path_link", "path_open", "path_readlink",
        "path_remove_directory", "path_rename", "path_symlink", "path_unlink_file", "poll_oneoff",
        "proc_exit", "proc_raise", "sched_yield", "random_get", "sock_accept", "sock_recv", "sock_send",
        "sock_shutdown",
    }
)


class Runner(Protocol):
    def __call__(
        self, wasm: Path, args: list[str], *, preopen: Path, env: dict[str, str], stdin: bytes = b""
    ) -> Result: ...


def _no_timings(text: bytes) -> bytes:
    """speedtest1 prints elapsed seconds after each test: replace them so transcripts compare."""
    return re.sub(rb"\d+\.\d{3}s\b", b"#.###s", text)


@dataclass(frozen=True)
class AppCase:
    name: str
    module: str  # path under tests/apps/build
    args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    stdin: bytes = b""
    # Copied into the preopened directory before the run: guest name -> file under tests/apps.
    sources: dict[str, str] = field(default_factory=dict)
    # Symbolic links made in the preopened directory before the run: name -> target.
    symlinks: dict[str, str] = field(default_factory=dict)
    normalize: Callable[[bytes], bytes] | None = None

    @property
    def wasm(self) -> Path:
        return BUILD / self.module

    def prepare(self, root: Path) -> None:
        for guest, source in self.sources.items():
            (root / guest).write_bytes((APPS / source).read_bytes())
        for name, target in self.symlinks.items():
            os.symlink(target, root / name)

    def run(self, runner: Runner, root: Path) -> Result:
        """Prepare ``root`` and run the case in it with ``runner``."""
        self.prepare(root)
        result = runner(self.wasm, list(self.args), preopen=root, env=dict(self.env), stdin=self.stdin)
        if self.normalize is not None:
            result = Result(
                exit_code=result.exit_code,
                stdout=self.normalize(result.stdout),
                stderr=self.normalize(result.stderr),
                files=result.files,
                trap=result.trap,
            )
        return result


def render(result: Result) -> str:
    """The canonical text of a result: exit status, both streams, and each file's size and SHA-256."""
    lines = [f"exit: {result.exit_code}", "--- stdout"]
    lines.append(result.stdout.decode("utf-8", "backslashreplace"))
    lines.append("--- stderr")
    lines.append(result.stderr.decode("utf-8", "backslashreplace"))
    lines.append("--- files")
    for name, data in result.files.items():
        if name.endswith("/"):
            lines.append(name)
        elif name.endswith("@"):
            lines.append(f"{name} -> {data.decode('utf-8', 'backslashreplace')}")
        else:
            lines.append(f"{name} {len(data)} bytes sha256:{hashlib.sha256(data).hexdigest()}")
    return "\n".join(lines) + "\n"


def _c(
    name: str,
    *args: str,
    env: dict[str, str] | None = None,
    stdin: bytes = b"",
    symlinks: dict[str, str] | None = None,
) -> AppCase:
    """A C program from tests/apps/c, argv[0] being its name."""
    return AppCase(
        name=name,
        module=f"c/{name}.wasm",
        args=(name, *args),
        env=env or {},
        stdin=stdin,
        symlinks=symlinks or {},
    )


# C programs that need a listener the manifest preopens: wasmtime's built-in WASI (the baseline) has no way
# to give them one from Python, so tests/test_libos_sock.py runs them against Haven only.
NETWORK_PROGRAMS = frozenset({"echo_server", "canary_server"})

TRAP_CASES = (
    "clock_id", "whence", "advice", "oflags", "fdflags", "lookupflags", "fstflags", "set_flags",
    "iovec_out_of_bounds", "buffer_out_of_bounds", "result_out_of_bounds", "path_out_of_bounds",
    "random_out_of_bounds", "args_out_of_bounds", "unreachable", "stack_overflow",
)  # fmt: skip

C_CASES = (
    _c("wasi_args_env", "a b", "", "ü", "--flag=1", env={"GREETING": "hello world", "EMPTY": "", "U": "λ"}),
    _c("wasi_clock_random"),
    _c("wasi_cpu_clocks"),
    _c("wasi_fd"),
    _c("wasi_readdir"),
    _c("wasi_path"),
    _c("wasi_escape", symlinks={"abs": "/etc", "abs-file": "/etc/passwd"}),
    _c("wasi_poll", stdin=b"ready\n"),
    _c("wasi_proc"),
    _c("wasi_sock"),
    _c("wasi_stdio", stdin=b"Some input\nover two lines \xc3\xa9\n"),
    _c("wasi_hostile"),
    _c("wasi_rights"),
    _c("clock_loop", "1000"),
    _c("write_loop", "1000"),
    *(
        AppCase(name=f"wasi_traps-{case}", module="c/wasi_traps.wasm", args=("wasi_traps", case))
        for case in TRAP_CASES
    ),
)


def _script(
    name: str, module: str, argv0: str, source: str, *args: str, env: dict[str, str] | None = None
) -> AppCase:
    """An interpreter running a script copied into the preopened directory."""
    guest = Path(source).name
    options = ("--std",) if module == "qjs.wasm" else ()
    return AppCase(
        name=name,
        module=module,
        args=(argv0, *options, f"{GUEST_DIR}/{guest}", *args),
        env=env or {},
        sources={guest: source},
    )


PYTHON_CASES = (
    _script("python-stdlib", "python.wasm", "python", "python/py_stdlib.py"),
    _script("python-files", "python.wasm", "python", "python/py_files.py"),
    _script("python-sqlite", "python.wasm", "python", "python/py_sqlite.py"),
    _script("python-time", "python.wasm", "python", "python/py_time.py"),
    _script(
        "python-exit", "python.wasm", "python", "python/py_exit.py", "7", "two words", env={"APP_MODE": "t"}
    ),
    _script("python-raise", "python.wasm", "python", "python/py_raise.py"),
)

OTHER_CASES = (
    AppCase(
        name="speedtest1",
        module="speedtest1.wasm",
        args=("speedtest1", "--size", "5", f"{GUEST_DIR}/speedtest1.db"),
        normalize=_no_timings,
    ),
    _script("quickjs-basic", "qjs.wasm", "qjs", "js/js_basic.js", "x", "y z", env={"APP_MODE": "test"}),
    _script("quickjs-throw", "qjs.wasm", "qjs", "js/js_throw.js"),
    _script("ruby-basic", "ruby.wasm", "ruby", "ruby/rb_basic.rb", "x", "y z", env={"APP_MODE": "test"}),
    _script("ruby-raise", "ruby.wasm", "ruby", "ruby/rb_raise.rb"),
)

CASES = (*C_CASES, *PYTHON_CASES, *OTHER_CASES)
