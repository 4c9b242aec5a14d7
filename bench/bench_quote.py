"""Quoting throughput: QuotingEnclave.quote against one raw ECDSA-P256 signature, same run; and
dcap-qvl verifications of those quotes per second.

    .venv/bin/python -m bench.bench_quote [SECONDS]

A quote costs one REPORT MAC check (AES-128-CMAC, with the report key derivation) and one ECDSA-P256
signature; its QE report and PCK signature are made once. So the ideal ratio of quotes to bare
signatures is a little under 1, and the ratio printed shows the overhead of the rest (REPORT
checking, laying out the quote). The verification figure is dcap-qvl's full DCAP check (four
certificate chains, two CRLs, five signatures, JSON parsing) per quote.
"""

from __future__ import annotations

import datetime
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dcap_qvl
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from haven.tee.sgx.image import EnclaveImage, PageRun, enclave_size_for, pad_to_pages
from haven.tee.sgx.sigstruct import generate_signing_key, sign_enclave
from haven.tee.sgx.structs import (
    PAGE_SIZE,
    XFRM_LEGACY,
    AttributeFlags,
    Attributes,
    PageType,
    Secinfo,
    SecinfoFlags,
    Tcs,
)
from haven.tee.sim.collateral import platform_collateral
from haven.tee.sim.cpu import SimEnclave
from haven.tee.sim.platform import SimPlatform
from haven.tee.sim.qe import QuotingEnclave


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after a short warm-up)."""
    for _ in range(20):
        fn()
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            fn()
        n += 50
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def _app(platform: SimPlatform) -> SimEnclave:
    image = EnclaveImage(
        size=enclave_size_for(3 * PAGE_SIZE),
        ssaframesize=1,
        runs=(
            PageRun(
                0, pad_to_pages(b"bench"), Secinfo.for_page(PageType.PT_REG, SecinfoFlags.R | SecinfoFlags.X)
            ),
            PageRun(PAGE_SIZE, Tcs(ossa=2 * PAGE_SIZE, nssa=1).to_bytes(), Secinfo.for_page(PageType.PT_TCS)),
            PageRun(
                2 * PAGE_SIZE,
                bytes(PAGE_SIZE),
                Secinfo.for_page(PageType.PT_REG, SecinfoFlags.R | SecinfoFlags.W),
            ),
        ),
    )
    sig = sign_enclave(
        generate_signing_key(),
        enclavehash=image.mrenclave(),
        attributes=Attributes(flags=AttributeFlags.MODE64BIT, xfrm=XFRM_LEGACY),
        attributemask=Attributes(flags=0xFFFF_FFFF_FFFF_FFFE, xfrm=0xFFFF_FFFF_FFFF_FFFF),
        miscselect=0,
        miscmask=0xFFFF_FFFF,
        isvprodid=1,
        isvsvn=1,
    )
    return platform.load_enclave(image, sig)


def main(argv: list[str]) -> int:
    seconds = float(argv[0]) if argv else 1.0
    with tempfile.TemporaryDirectory(prefix="haven-bench-") as tmp:
        platform = SimPlatform.create(Path(tmp) / "platform.json")
        qe = QuotingEnclave(platform)
        app = _app(platform)
        report = app.ereport(qe.target_info(), bytes(64))
        key = ec.generate_private_key(ec.SECP256R1())
        message = bytes(432)  # what the ISV signature covers: header and report body

        raw = _rate(lambda: key.sign(message, ec.ECDSA(hashes.SHA256())), seconds)
        quotes = _rate(lambda: qe.quote(report), seconds)

        quote = qe.quote(report)
        now = datetime.datetime.now(datetime.UTC)
        collateral = dcap_qvl.QuoteCollateralV3.from_json(
            platform_collateral(platform, now, pki=qe.pki).to_dcap_qvl_json()
        )
        root = qe.pki.root_der()
        stamp = int(now.timestamp())
        if dcap_qvl.verify_with_root_ca(quote, collateral, root, stamp).status != "UpToDate":
            raise SystemExit("dcap-qvl did not accept the quote")
        verifies = _rate(lambda: dcap_qvl.verify_with_root_ca(quote, collateral, root, stamp), seconds)

    print(f"about {seconds:g} s per measurement, quote of {len(quote)} bytes")
    print(f"raw ECDSA-P256-SHA256 signatures (baseline): {raw:9.0f} /s")
    print(f"QuotingEnclave.quote (REPORT check + sign):  {quotes:9.0f} /s")
    print(f"dcap-qvl verify_with_root_ca of our quotes:  {verifies:9.0f} /s")
    print(f"ratio quotes / raw signatures:               {quotes / raw:9.3f}")
    print(f"ratio verifications / quotes:                {verifies / quotes:9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
