"""Shared pieces of the quoting tests: slow RSA keys made once, small signed enclaves, platforms."""

from __future__ import annotations

import datetime
import functools
from pathlib import Path

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

APP_PRODID = 7
APP_SVN = 3


@functools.cache
def qe_signing_key() -> rsa.RSAPrivateKey:
    """One RSA-3072 (e=3) QE key for every test platform: generating one takes a good part of a second."""
    return generate_signing_key()


@functools.cache
def app_signing_key() -> rsa.RSAPrivateKey:
    return generate_signing_key()


def make_platform(path: Path, **config: object) -> SimPlatform:
    return SimPlatform.create(path, PlatformConfig(**config), qe_signing_key=qe_signing_key())  # type: ignore[arg-type]


def app_image(payload: bytes = b"Haven quote test application") -> EnclaveImage:
    runs = (
        PageRun(0, pad_to_pages(payload), Secinfo.for_page(PageType.PT_REG, SecinfoFlags.R | SecinfoFlags.X)),
        PageRun(PAGE_SIZE, Tcs(ossa=2 * PAGE_SIZE, nssa=1).to_bytes(), Secinfo.for_page(PageType.PT_TCS)),
        PageRun(
            2 * PAGE_SIZE,
            bytes(PAGE_SIZE),
            Secinfo.for_page(PageType.PT_REG, SecinfoFlags.R | SecinfoFlags.W),
        ),
    )
    return EnclaveImage(size=enclave_size_for(3 * PAGE_SIZE), ssaframesize=1, runs=runs)


def app_sigstruct(image: EnclaveImage, *, debug: bool = False) -> Sigstruct:
    flags = AttributeFlags.MODE64BIT | (AttributeFlags.DEBUG if debug else 0)
    return sign_enclave(
        app_signing_key(),
        enclavehash=image.mrenclave(),
        attributes=Attributes(flags=flags, xfrm=XFRM_LEGACY),
        attributemask=Attributes(flags=0xFFFF_FFFF_FFFF_FFFE, xfrm=0xFFFF_FFFF_FFFF_FFFF),
        miscselect=0,
        miscmask=0xFFFF_FFFF,
        isvprodid=APP_PRODID,
        isvsvn=APP_SVN,
        date=datetime.date(2025, 1, 1),
    )


def launch_app(platform: SimPlatform, *, debug: bool = False, payload: bytes | None = None) -> SimEnclave:
    image = app_image() if payload is None else app_image(payload)
    return platform.load_enclave(image, app_sigstruct(image, debug=debug))


def epoch(t: datetime.datetime) -> int:
    return int(t.timestamp())
