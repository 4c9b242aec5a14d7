"""Building a bundle (read, lay out, measure ~30 MB, sign) against a plain SHA-256 of the same bytes.

Run: ``.venv/bin/python -m bench.bench_build [--rounds N]``. Both are timed in the same run, best of
N rounds; the ratio says what layout, the EADD/EEXTEND record stream and signing cost over hashing alone.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import wasmtime

from haven.bundle.build import build_bundle
from haven.tee.sgx.sigstruct import generate_signing_key

_HELLO = """(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1) (func (export "_start") (call $exit (i32.const 0))))"""


def _best(fn: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    key = generate_signing_key()  # not timed: the owner makes it once
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "app.wasm").write_bytes(wasmtime.wat2wasm(_HELLO))
        (d / "app.toml").write_text('[app]\nmodule = "app.wasm"\n')
        bundle = build_bundle(d / "app.toml", key)
        image_bytes = b"".join(run.data for run in bundle.image.runs)

        build_s = _best(lambda: build_bundle(d / "app.toml", key), args.rounds)
        sha_s = _best(lambda: hashlib.sha256(image_bytes).digest(), args.rounds)

    mb = len(image_bytes) / 1e6
    print(f"enclave image: {mb:.1f} MB in {len(bundle.image.runs)} page runs")
    print(f"build_bundle:       {build_s * 1000:8.1f} ms  ({mb / build_s:7.1f} MB/s)")
    print(f"sha256 (baseline):  {sha_s * 1000:8.1f} ms  ({mb / sha_s:7.1f} MB/s)")
    print(f"ratio build / sha256: {build_s / sha_s:.2f}x")


if __name__ == "__main__":
    main()
