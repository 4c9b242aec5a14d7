"""The long crash soak (``bench/crash_soak.py``) runs on a frozen copy of the sources.

Each round of a soak starts fresh writer processes. Run on the working tree, a writer started while a
file is being edited imports some modules from before the edit and some from after, and can fail in
ways no single version of the code can (a store of one version calling a stage of another). The soak
therefore copies the sources once and runs every process from the copy.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.crash_soak import REPO, freeze, sources_digest


def test_the_copy_holds_the_sources_and_is_named_by_its_digest(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    digest = freeze(first)
    assert freeze(second) == digest == sources_digest(first)
    modules = ["haven/shield/storage/store.py", "haven/shield/storage/fs/data.py", "tests/crash_writer.py",
               "tests/crash_support.py", "bench/crash_soak.py"]  # fmt: skip
    for module in modules:
        assert (first / module).read_bytes() == (REPO / module).read_bytes()
    assert not list(first.rglob("__pycache__"))
    assert not (first / "tests" / "apps").exists()  # only the test modules, not the applications' builds
    (second / "haven" / "shield" / "storage" / "stage.py").write_text("# another version\n")
    assert sources_digest(second) != digest  # a changed file changes the name


def test_a_short_soak_runs_from_the_copy(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.crash_soak", "--kills", "2", "--images", "1", "--seed", "7",
         "--max-delay", "0.05"],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("sources ") and f"(copied from {REPO})" in lines[0]
    assert lines[1] == "seed 7: 2 kills over 1 images, delays up to 0.05s"
    assert lines[2].startswith("2 rounds in ")
