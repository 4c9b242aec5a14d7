"""DCAP verification throughput: SGX and TDX quotes verified per second, ours against dcap-qvl on the
same quote and collateral in the same run.

    .venv/bin/python -m bench.bench_verify [SECONDS]

Quotes and collateral are the real ones of ../shared/vectors (or $HAVEN_VECTORS), each verified at
its own time. Four figures per quote:

- dcap-qvl   `dcap_qvl.verify` with its `QuoteCollateralV3` built once (it parses the TCB Info and
             checks every chain, CRL and signature on each call): the baseline;
- warm       `verify_dcap` with one `Collateral` reused: collateral and PCK chain checks come from
             the caches (keyed by content hash), the time windows are rechecked, and per quote only
             the ISV signature is verified;
- cold       a new `Collateral` parsed from the same JSON text for every quote: the caches still
             recognise the content by its hash;
- uncached   every cache cleared before each quote: all certificates, CRLs and documents parsed
             and every signature verified (with `cryptography`'s ECDSA, ~70 µs each here).

The target is "at least as fast as dcap-qvl"; the last column says which figures meet it.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dcap_qvl

from haven.attest.dcap import Collateral, clear_caches, parse_collateral_json, verify_dcap

VECTORS = Path(
    os.environ.get("HAVEN_VECTORS", Path(__file__).resolve().parents[1] / ".." / "shared" / "vectors")
)
CASES = (
    ("SGX v3", "sgx/dcap-qvl/sgx_quote.bin", "sgx/dcap-qvl/sgx_quote_collateral.json", 1752919277),
    ("TDX v4", "tdx/dcap-qvl/tdx_quote.bin", "tdx/dcap-qvl/tdx_quote_collateral.json", 1752919234),
)


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after a short warm-up)."""
    for _ in range(5):
        fn()
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(10):
            fn()
        n += 10
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def main(argv: list[str]) -> int:
    seconds = float(argv[1]) if len(argv) > 1 else 1.0
    if not VECTORS.is_dir():
        print(f"vectors not found at {VECTORS} (set HAVEN_VECTORS)", file=sys.stderr)
        return 1
    print(f"{'quote':8} {'verifier':10} {'quotes/s':>10} {'ms/quote':>9} {'vs dcap-qvl':>12}  target")
    for name, quote_path, collateral_path, ts in CASES:
        quote = (VECTORS / quote_path).read_bytes()
        text = (VECTORS / collateral_path).read_text()
        now = datetime.datetime.fromtimestamp(ts, datetime.UTC)
        theirs = dcap_qvl.QuoteCollateralV3.from_json(text)
        ours = parse_collateral_json(text)
        expected = dcap_qvl.verify(quote, theirs, ts).status
        assert verify_dcap(quote, ours, now=now).tcb_status == expected  # the same verdict, or no race

        def dcap_qvl_verify(quote: bytes = quote, c: object = theirs, ts: int = ts) -> object:
            return dcap_qvl.verify(quote, c, ts)

        def warm(quote: bytes = quote, c: Collateral = ours, now: datetime.datetime = now) -> object:
            return verify_dcap(quote, c, now=now)

        def cold(quote: bytes = quote, text: str = text, now: datetime.datetime = now) -> object:
            return verify_dcap(quote, parse_collateral_json(text), now=now)

        def uncached(quote: bytes = quote, text: str = text, now: datetime.datetime = now) -> object:
            clear_caches()
            return verify_dcap(quote, parse_collateral_json(text), now=now)

        runs: list[tuple[str, Callable[[], object]]] = [
            ("dcap-qvl", dcap_qvl_verify),
            ("warm", warm),
            ("cold", cold),
            ("uncached", uncached),
        ]
        baseline = 0.0
        for label, fn in runs:
            rate = _rate(fn, seconds)
            baseline = baseline or rate
            ratio = rate / baseline
            verdict = "" if label == "dcap-qvl" else ("meets" if ratio >= 1.0 else "misses")
            print(f"{name:8} {label:10} {rate:10.0f} {1000 / rate:9.3f} {ratio:11.2f}x  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
