"""A long crash soak: kill a writing process with SIGKILL at random instants, many times, and check the
image after every kill (the rule is in ``tests/crash_support.py``).

Run: ``.venv/bin/python -m bench.crash_soak [--kills N] [--images K] [--seed S] [--max-delay SECONDS]``.
Prints how many kills fell inside a sync and how many found a commit the writer had not yet recorded,
and the time per round against a round killed as soon as the writer is ready (start-up, mount and
check, no workload), measured in the same run. Exit status 1 at the first image that breaks the rule.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.crash_support import CrashCheckFailed, soak, summary


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=2000, help="rounds in all (default 2000)")
    parser.add_argument("--images", type=int, default=2, help="images soaked side by side (default 2)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--max-delay", type=float, default=0.5, help="longest run before a kill, seconds")
    args = parser.parse_args()
    if args.kills < 1 or args.images < 1 or args.max_delay <= 0:
        parser.error("--kills and --images must be positive, --max-delay above zero")

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
