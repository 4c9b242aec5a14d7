"""A long crash soak: kill a writing process with SIGKILL at random instants, many times, and check the
image after every kill (the rule is in ``tests/crash_support.py``).

Run: ``.venv/bin/python -m bench.crash_soak [--kills N] [--images K] [--seed S] [--max-delay SECONDS]``.
Prints how many kills fell inside a sync and how many found a commit the writer had not yet recorded,
and the time per round against a round killed as soon as the writer is ready (start-up, mount and
check, no workload), measured in the same run. Exit status 1 at the first image that breaks the rule.

The soak runs on a copy of the sources taken when it starts (``haven/``, ``bench/`` and the Python files
of ``tests/``): every round starts fresh writer processes, and a writer started while the tree is being
edited would otherwise import some modules before an edit and some after, and fail in ways no single
version of the code can (a store from one edit calling a stage from another). The copy's digest is
printed, so a failure names the exact sources it ran.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def freeze(dest: Path) -> str:
    """Copy the sources a soak runs into ``dest``; returns their digest (SHA-256 over paths and bytes)."""
    shutil.copytree(REPO / "haven", dest / "haven", ignore=_IGNORE)
    shutil.copytree(REPO / "bench", dest / "bench", ignore=_IGNORE)
    (dest / "tests").mkdir()
    for source in (REPO / "tests").glob("*.py"):
        shutil.copy2(source, dest / "tests" / source.name)
    return sources_digest(dest)


def sources_digest(root: Path) -> str:
    """SHA-256 over the relative path and bytes of every file under ``root``, in path order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _run_frozen(args: argparse.Namespace) -> int:
    """Run this soak again on a frozen copy of the sources (see the module docstring)."""
    argv = [
        *("--kills", args.kills, "--images", args.images),
        *("--seed", args.seed, "--max-delay", args.max_delay),
    ]
    with tempfile.TemporaryDirectory(prefix="haven-soak-src-") as tmp:
        digest = freeze(Path(tmp))
        print(f"sources {digest[:16]} (copied from {REPO})", flush=True)
        command = [sys.executable, "-m", "bench.crash_soak", *map(str, argv), "--frozen"]
        return subprocess.run(command, cwd=tmp, check=False).returncode


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=2000, help="rounds in all (default 2000)")
    parser.add_argument("--images", type=int, default=2, help="images soaked side by side (default 2)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--max-delay", type=float, default=0.5, help="longest run before a kill, seconds")
    parser.add_argument("--frozen", action="store_true", help=argparse.SUPPRESS)  # running on the copy
    args = parser.parse_args()
    if args.kills < 1 or args.images < 1 or args.max_delay <= 0:
        parser.error("--kills and --images must be positive, --max-delay above zero")
    if not args.frozen:
        return _run_frozen(args)
    import haven
    from tests.crash_support import CrashCheckFailed, soak, summary  # the copy's, imported from its cwd

    if not Path(haven.__file__).resolve().is_relative_to(REPO):
        print(f"the soak imported haven from {haven.__file__}, not from the copy {REPO}", file=sys.stderr)
        return 1

    print(f"seed {args.seed}: {args.kills} kills over {args.images} images, delays up to {args.max_delay}s")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.monotonic()
        # Baseline: rounds killed as soon as the writer is ready (start-up, mount, check, no workload).
        baseline = soak(
            Path(tmp) / "baseline", 5 * args.images, seed=args.seed, images=args.images, max_delay=1e-6
        )
        per_baseline = (time.monotonic() - start) / len(baseline)
        start = time.monotonic()
        try:
            results = soak(
                Path(tmp) / "soak", args.kills, seed=args.seed, images=args.images, max_delay=args.max_delay
            )
        except CrashCheckFailed as e:
            print(f"FAILED: {e}", file=sys.stderr)
            return 1
        seconds = time.monotonic() - start
    print(summary(results, seconds))
    per_round = seconds / len(results)
    print(
        f"{per_round * 1000:.0f} ms per round; a kill right after start-up takes "
        f"{per_baseline * 1000:.0f} ms (ratio {per_round / per_baseline:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
