"""Building a bundle: lay out Haven's enclave-side code, wasmtime, the manifest and the module; measure; sign.

Everything the enclave runs is measured: the Python sources of the enclave-side packages and of the
wasmtime binding (an archive), the wasmtime native library, the canonical manifest and the module.
Nothing host-side is: ``haven/host``, ``haven/kbs`` and ``haven/cli`` never enter the enclave.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from haven.bundle import layout
from haven.bundle.container import Bundle
from haven.bundle.enclave_code import encode_code_archive
from haven.bundle.manifest import Manifest, load_manifest
from haven.errors import BundleError, FormatError
from haven.fileio import read_bounded
from haven.tee.sgx.image import EnclaveImage
from haven.tee.sgx.sigstruct import sign_enclave
from haven.tee.sgx.structs import XFRM_LEGACY, AttributeFlags, Attributes

# The parts of the haven package that run inside the enclave (DESIGN.md, "Layers").
ENCLAVE_MODULES = ("__init__.py", "errors.py", "structs.py", "fileio.py")
ENCLAVE_PACKAGES = ("tee", "attest", "shield", "libos", "bundle")
# The simulated processor (EINIT, EGETKEY, the quoting enclave) stands for hardware, not enclave code:
# like microcode it is outside MRENCLAVE (its version shows in CPUSVN, not in the measurement).
NOT_ENCLAVE_CODE = ("haven/tee/sim/",)
# Python sources, WebAssembly text, and the package data enclave-side code reads at run time (pinned
# root certificates, JSON documents): the enclave has these files only if they are in the archive.
SOURCE_SUFFIXES = (".py", ".wat", ".pem", ".der", ".json")
MAX_SOURCE_FILE = 16 << 20

# SIGSTRUCT.ATTRIBUTES / ATTRIBUTEMASK (SDM Vol. 3D, "Layout of ATTRIBUTES Structure"): a 64-bit
# enclave with legacy XSAVE state; every flag but INIT (which EINIT itself sets) is enforced, so a
# loader cannot turn DEBUG on, nor ask for PROVISIONKEY or KSS, without changing the identity signed.
_FLAGS_MASK = 0xFFFF_FFFF_FFFF_FFFF & ~int(AttributeFlags.INIT)
ATTRIBUTE_MASK = Attributes(flags=_FLAGS_MASK, xfrm=XFRM_LEGACY)
MISCSELECT = 0
MISCMASK = 0xFFFF_FFFF


def attributes_for(manifest: Manifest) -> Attributes:
    flags = AttributeFlags.MODE64BIT | (AttributeFlags.DEBUG if manifest.debug else 0)
    return Attributes(flags=int(flags), xfrm=XFRM_LEGACY)


def default_code_root() -> Path:
    """The directory that holds the running ``haven`` package."""
    import haven

    return Path(haven.__file__).resolve().parent.parent


def default_wasmtime_package() -> Path:
    import wasmtime

    return Path(wasmtime.__file__).resolve().parent


def wasmtime_library(wasmtime_package: Path | None = None) -> Path:
    """The native library the wasmtime binding loads, at the same place within ``wasmtime_package``."""
    from wasmtime import _ffi

    installed = Path(_ffi.__file__).resolve().parent
    relative = Path(_ffi.filename).resolve().relative_to(installed)
    return (wasmtime_package or installed) / relative


def _sources(package_dir: Path, archive_prefix: str) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(package_dir):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        for fname in filenames:
            path = Path(dirpath) / fname
            if not fname.endswith(SOURCE_SUFFIXES) or fname.startswith(".") or not path.is_file():
                continue
            rel = path.relative_to(package_dir).as_posix()
            files[f"{archive_prefix}/{rel}"] = _read(path, MAX_SOURCE_FILE)
    return files


def _read(path: Path, limit: int) -> bytes:
    return read_bounded(path, limit, error=BundleError)


def enclave_code_files(
    code_root: Path | None = None, *, wasmtime_package: Path | None = None
) -> dict[str, bytes]:
    """Archive path -> bytes of every enclave-side source file."""
    root = Path(code_root) if code_root is not None else default_code_root()
    haven_dir = root / "haven"
    if not (haven_dir / "__init__.py").is_file():
        raise BundleError(f"{root} does not hold the haven package")
    files: dict[str, bytes] = {}
    for name in ENCLAVE_MODULES:
        files[f"haven/{name}"] = _read(haven_dir / name, MAX_SOURCE_FILE)
    for package in ENCLAVE_PACKAGES:
        if (haven_dir / package).is_dir():
            files.update(_sources(haven_dir / package, f"haven/{package}"))
    files = {p: d for p, d in files.items() if not p.startswith(NOT_ENCLAVE_CODE)}
    wt = Path(wasmtime_package) if wasmtime_package is not None else default_wasmtime_package()
    if not (wt / "__init__.py").is_file():
        raise BundleError(f"{wt} is not the wasmtime package")
    files.update({p: d for p, d in _sources(wt, "wasmtime").items() if p.endswith(".py")})
    return files


def enclave_code_archive(code_root: Path | None = None, *, wasmtime_package: Path | None = None) -> bytes:
    """The deterministic archive of the enclave-side sources (see :mod:`haven.bundle.enclave_code`)."""
    return encode_code_archive(enclave_code_files(code_root, wasmtime_package=wasmtime_package))


def enclave_image(
    manifest: Manifest,
    module: bytes,
    *,
    code_root: Path | None = None,
    wasmtime_package: Path | None = None,
) -> EnclaveImage:
    """The enclave image for an application: what MRENCLAVE is computed over."""
    digest = hashlib.sha256(module).digest()
    if len(module) != manifest.module.size or not hmac.compare_digest(digest, manifest.module.sha256):
        raise BundleError("the module bytes are not the module the manifest names")
    lib = wasmtime_library(wasmtime_package)
    contents = {
        layout.CODE: enclave_code_archive(code_root, wasmtime_package=wasmtime_package),
        layout.WASMTIME: _read(lib, 1 << 30),
        layout.MANIFEST: manifest.canonical_bytes(),
        layout.MODULE: module,
    }
    try:
        return layout.build_image(contents)
    except FormatError as e:
        raise BundleError(str(e)) from None


def sign_image(
    image: EnclaveImage, manifest: Manifest, key: rsa.RSAPrivateKey, *, date: datetime.date | None = None
) -> Bundle:
    sigstruct = sign_enclave(
        key,
        enclavehash=image.mrenclave(),
        attributes=attributes_for(manifest),
        attributemask=ATTRIBUTE_MASK,
        miscselect=MISCSELECT,
        miscmask=MISCMASK,
        isvprodid=manifest.product_id,
        isvsvn=manifest.svn,
        date=date,
    )
    return Bundle(sigstruct=sigstruct, image=image)


def build_bundle(
    manifest_path: Path,
    key: rsa.RSAPrivateKey,
    *,
    code_root: Path | None = None,
    wasmtime_package: Path | None = None,
    date: datetime.date | None = None,
) -> Bundle:
    """Read the manifest (and the files it names), lay out, measure and sign the enclave."""
    manifest, module = load_manifest(Path(manifest_path))
    image = enclave_image(manifest, module, code_root=code_root, wasmtime_package=wasmtime_package)
    return sign_image(image, manifest, key, date=date)


def mrsigner_of_key(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> bytes:
    """MRSIGNER of a signing key: SHA-256 of its modulus as SIGSTRUCT stores it (384 bytes, little-endian)."""
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    n = public.public_numbers().n
    return hashlib.sha256(n.to_bytes(384, "little")).digest()
