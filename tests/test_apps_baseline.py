"""The test applications under the baseline (wasmtime's own WASI on a plain directory) give their golden text.

The goldens in tests/apps/expected were generated from this baseline and reviewed; a Haven run of the same
case must render to the same text. Set HAVEN_REGEN_GOLDEN=1 to rewrite them after changing an application.
Each case skips, naming the build step, only when its module has not been built (CI builds them all).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import wasmtime

from tests.apps.baseline import (
    BUILD,
    TRAP_EXIT_CODE,
    BaselineTimeout,
    Result,
    run_baseline,
    snapshot,
)
from tests.apps.cases import (
    CASES,
    EXPECTED,
    NETWORK_PROGRAMS,
    TRAP_CASES,
    WASI_FUNCTIONS,
    AppCase,
    render,
)
from tests.apps.launchers import launcher_for

REGEN = os.environ.get("HAVEN_REGEN_GOLDEN") == "1"
C_DIR = Path(__file__).resolve().parent / "apps" / "c"


def _need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path.relative_to(BUILD.parent)} not built: run scripts/build-test-apps")
    return path


def _run(case: AppCase, tmp_path: Path) -> Result:
    _need(case.wasm)
    root = tmp_path / "root"
    root.mkdir()
    return case.run(run_baseline, root)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(case: AppCase, tmp_path: Path) -> None:
    result = _run(case, tmp_path)
    golden = EXPECTED / f"{case.name}.txt"
    if REGEN:
        golden.write_text(render(result))
    assert render(result) == golden.read_text()


def test_every_c_program_has_a_case() -> None:
    built_from = {p.stem for p in C_DIR.glob("*.c")} - NETWORK_PROGRAMS
    assert built_from == {Path(c.module).stem for c in CASES if c.module.startswith("c/")}


def test_every_golden_has_a_case() -> None:
    assert {p.stem for p in EXPECTED.glob("*.txt")} == {c.name for c in CASES}


def test_c_programs_import_every_wasi_function() -> None:
    """Together the C programs call all 46 functions of wasi_snapshot_preview1, and nothing else."""
    engine = wasmtime.Engine()
    imported: set[str] = set()
    for source in sorted(C_DIR.glob("*.c")):
        module = wasmtime.Module.from_file(engine, str(_need(BUILD / "c" / f"{source.stem}.wasm")))
        for imp in module.imports:
            assert imp.module == "wasi_snapshot_preview1", (source.name, imp.module)
            assert imp.name is not None
            imported.add(imp.name)
    assert imported == WASI_FUNCTIONS
    assert len(WASI_FUNCTIONS) == 46


def _golden_stdout(name: str) -> str:
    text = (EXPECTED / f"{name}.txt").read_text()
    return text.split("--- stdout\n", 1)[1].split("\n--- stderr\n", 1)[0]


def test_escape_attempts_all_fail() -> None:
    """Every escape line of the reviewed golden is a refusal; "escapes: 0"; nothing escaped."""
    out = _golden_stdout("wasi_escape")
    body = out.split("== escapes\n", 1)[1].split("== staying inside", 1)[0]
    attempts = [line for line in body.splitlines() if " -> " in line]
    assert len(attempts) == 18 * 14
    refusals = {"ENOTCAPABLE", "EPERM", "ENOENT", "ENOTDIR", "ELOOP", "EINVAL"}
    assert {line.rsplit(" -> ", 1)[1] for line in attempts} <= refusals
    # "..", absolute paths and links out are refused as capability errors (wasmtime says EPERM).
    for path in ("..", "../etc/passwd", "inside/../..", "/", "/etc/passwd", "up/etc/passwd"):
        assert re.search(rf"^path_open {re.escape(path)} -> (EPERM|ENOTCAPABLE)$", body, re.M), path
    assert "ESCAPED" not in out
    assert "escapes: 0" in out
    assert "path_open ../file.txt from inside/ -> EPERM" in out


def test_escape_leaves_nothing_outside(tmp_path: Path) -> None:
    """The escape program cannot create anything next to or above its directory."""
    case = next(c for c in CASES if c.name == "wasi_escape")
    _need(case.wasm)
    outer = tmp_path / "outer"
    root = outer / "root"
    root.mkdir(parents=True)
    (outer / "neighbour.txt").write_text("untouched\n")
    before = snapshot(outer)
    case.run(run_baseline, root)
    after = snapshot(outer)
    assert {k: v for k, v in after.items() if not k.startswith("root/")} == {
        k: v for k, v in before.items() if not k.startswith("root/")
    }


def test_traps_are_reported_as_traps(tmp_path: Path) -> None:
    for name in TRAP_CASES:
        case = next(c for c in CASES if c.name == f"wasi_traps-{name}")
        root = tmp_path / name
        root.mkdir()
        result = case.run(run_baseline, root)
        assert result.exit_code == TRAP_EXIT_CODE, name
        assert result.trap, name
        assert result.stdout == f"case {name}\n".encode(), name


def test_self_checks_pass() -> None:
    """No C program reported a failed self-check in its reviewed golden."""
    for source in C_DIR.glob("wasi_*.c"):
        for golden in EXPECTED.glob(f"{source.stem}*.txt"):
            out = _golden_stdout(golden.stem)
            assert "FAIL" not in out, golden.name


def test_reactors_get_their_launcher() -> None:
    engine = wasmtime.Engine()
    qjs = wasmtime.Module.from_file(engine, str(_need(BUILD / "qjs.wasm")))
    launcher = launcher_for(qjs)
    assert launcher is not None and launcher.name == "quickjs"
    command = wasmtime.Module.from_file(engine, str(_need(BUILD / "c" / "wasi_proc.wasm")))
    assert launcher_for(command) is None


def test_snapshot_records_files_dirs_and_links(tmp_path: Path) -> None:
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "f.txt").write_bytes(b"x")
    os.symlink("../outside", tmp_path / "d" / "link")
    os.symlink("/", tmp_path / "dirlink")
    assert snapshot(tmp_path) == {
        "d/": b"",
        "d/e/": b"",
        "d/f.txt": b"x",
        "d/link@": b"../outside",
        "dirlink@": b"/",
    }


def test_baseline_timeout(tmp_path: Path) -> None:
    """A module that never returns is interrupted at its wall-clock limit."""
    wasm = tmp_path / "spin.wasm"
    wasm.write_bytes(
        wasmtime.wat2wasm(
            '(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))'
        )
    )
    with pytest.raises(BaselineTimeout):
        run_baseline(wasm, ["spin"], preopen=tmp_path, env={}, timeout=0.5)


def test_baseline_is_isolated_from_the_host_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """argv and environment are exactly what the caller gives: nothing leaks in from the host."""
    case = next(c for c in CASES if c.name == "wasi_args_env")
    monkeypatch.setenv("HOST_SECRET", "do-not-pass")
    result = _run(case, tmp_path)
    assert b"HOST_SECRET" not in result.stdout
    assert result.exit_code == 3
