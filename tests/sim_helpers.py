"""Small enclaves for the simulated-platform tests: a few pages, signed with cached test keys."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

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
    Sigstruct,
    Tcs,
)
from haven.tee.sim.cpu import SimEnclave
from haven.tee.sim.platform import PlatformConfig, SimPlatform

R, W, X = SecinfoFlags.R, SecinfoFlags.W, SecinfoFlags.X
PRODUCTION = Attributes(flags=int(AttributeFlags.MODE64BIT), xfrm=XFRM_LEGACY)
DEBUG = Attributes(flags=int(AttributeFlags.MODE64BIT | AttributeFlags.DEBUG), xfrm=XFRM_LEGACY)
# Every flag but INIT, and the legacy XFRM bits, must match the SIGSTRUCT (as Haven's bundles sign).
STRICT_MASK = Attributes(flags=0xFFFF_FFFF_FFFF_FFFF & ~int(AttributeFlags.INIT), xfrm=XFRM_LEGACY)


@functools.cache
def cached_key(name: str) -> rsa.RSAPrivateKey:
    """RSA-3072 e=3 keys, generated once per test session (keygen takes a fraction of a second)."""
    return generate_signing_key()


def small_image(payload: bytes = b"enclave code", *, data: bytes = b"initial data") -> EnclaveImage:
    """TCS, one SSA frame, a code page (R|X), a data page (R|W) and an unmeasured heap page."""
    runs = (
        PageRun(
            0,
            Tcs(ossa=PAGE_SIZE, nssa=1, oentry=2 * PAGE_SIZE).to_bytes(),
            Secinfo.for_page(PageType.PT_TCS),
            name="tcs",
        ),
        PageRun(PAGE_SIZE, bytes(PAGE_SIZE), Secinfo.for_page(PageType.PT_REG, R | W), name="ssa"),
        PageRun(2 * PAGE_SIZE, pad_to_pages(payload), Secinfo.for_page(PageType.PT_REG, R | X), name="code"),
        PageRun(3 * PAGE_SIZE, pad_to_pages(data), Secinfo.for_page(PageType.PT_REG, R | W), name="data"),
        PageRun(
            4 * PAGE_SIZE,
            bytes(PAGE_SIZE),
            Secinfo.for_page(PageType.PT_REG, R | W),
            measured=False,
            name="heap",
        ),
    )
    return EnclaveImage(size=enclave_size_for(5 * PAGE_SIZE), ssaframesize=1, runs=runs)


def sign(
    image: EnclaveImage,
    key: rsa.RSAPrivateKey | None = None,
    *,
    attributes: Attributes = PRODUCTION,
    attributemask: Attributes = STRICT_MASK,
    isvprodid: int = 1,
    isvsvn: int = 1,
    **kw: Any,
) -> Sigstruct:
    kw.setdefault("miscselect", 0)
    kw.setdefault("miscmask", 0xFFFF_FFFF)
    return sign_enclave(
        key or cached_key("author"),
        enclavehash=image.mrenclave(),
        attributes=attributes,
        attributemask=attributemask,
        isvprodid=isvprodid,
        isvsvn=isvsvn,
        **kw,
    )


def load(
    platform: SimPlatform, image: EnclaveImage | None = None, key: rsa.RSAPrivateKey | None = None, **kw: Any
) -> SimEnclave:
    """Sign ``image`` (default ``small_image()``) with ``kw`` and load it on ``platform``."""
    image = image or small_image()
    return platform.load_enclave(image, sign(image, key, **kw))


def make_platform(path: Path, config: PlatformConfig | None = None) -> SimPlatform:
    """A new platform file, reusing a cached QE signing key so tests need no RSA keygen."""
    return SimPlatform.create(path, config, qe_signing_key=cached_key("qe"))
