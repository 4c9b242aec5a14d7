"""Seal and unseal throughput against raw AES-128-GCM of the same payloads, measured in the same run.

Run: ``.venv/bin/python -m bench.bench_seal [--rounds N]``. For 4 KiB, 64 KiB and 1 MiB payloads it
times ``seal`` / ``unseal`` on a simulated enclave and ``AESGCM.encrypt`` / ``decrypt`` with a fixed
key; each figure is the best of N rounds of a batch. The ratio (seal time / raw time) is the cost of
what sealing adds: a REPORT to self, EGETKEY's CMAC derivation, a fresh KEYID, the 560-byte header
and copying the payload into the blob.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from haven.tee.sgx.image import EnclaveImage, PageRun, enclave_size_for
from haven.tee.sgx.sigstruct import generate_signing_key, sign_enclave
from haven.tee.sgx.structs import (
    PAGE_SIZE,
    XFRM_LEGACY,
    AttributeFlags,
    Attributes,
    KeyPolicy,
    PageType,
    Secinfo,
    SecinfoFlags,
)
from haven.tee.sim.cpu import SimEnclave
from haven.tee.sim.platform import SimPlatform
from haven.tee.sim.seal import seal, unseal

SIZES = (4 << 10, 64 << 10, 1 << 20)


def _best(fn: Callable[[], object], rounds: int, batch: int) -> float:
    """Seconds per call: best of ``rounds`` batches of ``batch`` calls."""
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(batch):
            fn()
        best = min(best, (time.perf_counter() - t) / batch)
    return best


def _enclave(platform: SimPlatform) -> SimEnclave:
    code = PageRun(0, b"bench".ljust(PAGE_SIZE, b"\0"), Secinfo.for_page(PageType.PT_REG, SecinfoFlags.R))
    image = EnclaveImage(size=enclave_size_for(PAGE_SIZE), ssaframesize=1, runs=(code,))
    attributes = Attributes(flags=int(AttributeFlags.MODE64BIT), xfrm=XFRM_LEGACY)
    sig = sign_enclave(
        generate_signing_key(),
        enclavehash=image.mrenclave(),
        attributes=attributes,
        attributemask=attributes,
        miscselect=0,
        miscmask=0,
        isvprodid=1,
        isvsvn=1,
    )
    return platform.load_enclave(image, sig)


def _rows(enclave: SimEnclave, aead: AESGCM, size: int, rounds: int) -> None:
    data = os.urandom(size)
    iv = bytes(12)
    blob = seal(enclave, data, KeyPolicy.MRENCLAVE)
    raw = aead.encrypt(iv, data, None)
    batch = max(1, (8 << 20) // size)
    timings = (
        ("seal", lambda: seal(enclave, data, KeyPolicy.MRENCLAVE), lambda: aead.encrypt(iv, data, None)),
        ("unseal", lambda: unseal(enclave, blob), lambda: aead.decrypt(iv, raw, None)),
    )
    mb = size / 1e6
    for op, ours, baseline in timings:
        ours_s = _best(ours, rounds, batch)
        raw_s = _best(baseline, rounds, batch)
        ratio = ours_s / raw_s
        print(f"{size >> 10:>6}Ki  {op:<7} {mb / ours_s:13.1f} {mb / raw_s:13.1f} {ratio:6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        enclave = _enclave(SimPlatform.create(Path(tmp) / "platform.json"))
        aead = AESGCM(AESGCM.generate_key(bit_length=128))
        print(f"{'payload':>8}  {'op':<7} {'sealing MB/s':>13} {'raw GCM MB/s':>13} {'ratio':>7}")
        for size in SIZES:
            _rows(enclave, aead, size, args.rounds)


if __name__ == "__main__":
    main()
