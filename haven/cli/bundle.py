"""`haven keygen`, `haven build` and `haven measure`: the owner's signing key, bundles, and their identity."""

from __future__ import annotations

import argparse
import hmac
import json
from pathlib import Path
from typing import Any

from haven.errors import BundleError, EnclaveInitError, KeyFileError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "keygen",
        help="make an enclave signing key (RSA-3072, exponent 3)",
        description="Make an enclave signing key (RSA-3072 with public exponent 3, as SGX requires), "
        "written as PEM with mode 0600. Prints its MRSIGNER.",
    )
    p.add_argument(
        "-o", "--output", type=Path, required=True, metavar="KEY.pem", help="where to write the key"
    )
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.set_defaults(handler=_keygen)

    p = sub.add_parser(
        "build",
        help="lay out, measure and sign an enclave bundle",
        description="Build an enclave bundle from a manifest: Haven's enclave-side code, the wasmtime "
        "library, the canonical manifest and the module, measured and signed. Prints MRENCLAVE and MRSIGNER.",
    )
    p.add_argument("manifest", type=Path, metavar="MANIFEST.toml")
    p.add_argument(
        "--key", type=Path, required=True, metavar="KEY.pem", help="the signing key (haven keygen)"
    )
    p.add_argument(
        "-o", "--output", type=Path, required=True, metavar="BUNDLE", help="where to write the bundle"
    )
    p.set_defaults(handler=_build)

    p = sub.add_parser(
        "measure",
        help="print the identity a quote of this bundle must show",
        description="Print MRENCLAVE (computed from the image, not read from the signature), MRSIGNER, "
        "ISVPRODID, ISVSVN, DEBUG and the module and manifest hashes of a bundle, without running it. "
        "Given a MANIFEST.toml instead, predict MRENCLAVE without building or signing anything.",
    )
    p.add_argument("target", type=Path, metavar="BUNDLE|MANIFEST.toml")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--signer",
        type=Path,
        metavar="KEY.pem",
        help="with a manifest: the signer's key (public or private PEM), to predict MRSIGNER too",
    )
    p.set_defaults(handler=_measure)


def _keygen(args: argparse.Namespace) -> int:
    from haven.bundle.build import mrsigner_of_key
    from haven.tee.sgx.sigstruct import generate_signing_key, save_signing_key

    out: Path = args.output
    if out.exists() and not args.force:
        raise KeyFileError(f"{out} already exists (use --force to replace it)")
    if out.is_dir():
        raise KeyFileError(f"{out} is a directory")
    key = generate_signing_key()
    save_signing_key(key, out, overwrite=args.force)
    print(f"wrote {out}")
    print(f"mrsigner  {mrsigner_of_key(key).hex()}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from haven.bundle.build import build_bundle
    from haven.bundle.container import write_bundle
    from haven.tee.sgx.sigstruct import load_signing_key, mrsigner_of

    if args.output.is_dir():
        raise BundleError(f"{args.output} is a directory")
    key = load_signing_key(args.key)
    bundle = build_bundle(args.manifest, key)
    write_bundle(bundle, args.output)
    size = args.output.stat().st_size
    print(f"wrote {args.output}")
    print(f"mrenclave  {bundle.sigstruct.enclavehash.hex()}")
    print(f"mrsigner   {mrsigner_of(bundle.sigstruct).hex()}")
    print(
        f"size       {size} bytes in the file, {bundle.image.size // (1 << 20)} MiB of enclave address space"
    )
    return 0


def _measure(args: argparse.Namespace) -> int:
    target: Path = args.target
    if target.suffix == ".toml":
        facts = _predict(target, args.signer)
    else:
        if args.signer is not None:
            raise BundleError("--signer is for a manifest; a bundle names its signer in its SIGSTRUCT")
        facts = _measure_bundle(target, args.json)
    _show(facts, args.json)
    return 0


def _measure_bundle(path: Path, as_json: bool) -> dict[str, Any]:
    from haven.bundle.container import read_bundle
    from haven.tee.sgx.sigstruct import mrsigner_of, verify_sigstruct

    bundle = read_bundle(path)
    mrenclave = bundle.mrenclave()
    signed = bundle.sigstruct.enclavehash
    if not hmac.compare_digest(mrenclave, signed):
        _show({"mrenclave": mrenclave.hex(), "signed_mrenclave": signed.hex()}, as_json)
        raise BundleError(
            f"{path}: the bundle was changed after signing (its MRENCLAVE is not the one signed)"
        )
    try:
        verify_sigstruct(bundle.sigstruct)
    except EnclaveInitError as e:
        raise BundleError(f"{path}: the signature is invalid: {e}") from None
    sig = bundle.sigstruct
    try:
        manifest = bundle.manifest()
        bundle.module()
        bundle.enclave_code()
    except BundleError as e:
        raise BundleError(f"{path}: {e}") from None
    debug = sig.attributes.debug
    for field, signed_value, declared in (
        ("ISVPRODID", sig.isvprodid, manifest.product_id),
        ("ISVSVN", sig.isvsvn, manifest.svn),
        ("DEBUG", debug, manifest.debug),
    ):
        if signed_value != declared:
            raise BundleError(f"{path}: SIGSTRUCT {field} is {signed_value} but the manifest says {declared}")
    return {
        "mrenclave": mrenclave.hex(),
        "mrsigner": mrsigner_of(sig).hex(),
        "isvprodid": sig.isvprodid,
        "isvsvn": sig.isvsvn,
        "debug": debug,
        "module_sha256": manifest.module.sha256.hex(),
        "manifest_sha256": manifest.sha256().hex(),
    }


def _predict(path: Path, signer: Path | None) -> dict[str, Any]:
    from haven.bundle.build import enclave_image, mrsigner_of_key
    from haven.bundle.manifest import load_manifest

    manifest, module = load_manifest(path)
    mrsigner = mrsigner_of_key(_signer_key(signer)).hex() if signer is not None else None
    return {
        "mrenclave": enclave_image(manifest, module).mrenclave().hex(),
        "mrsigner": mrsigner,
        "isvprodid": manifest.product_id,
        "isvsvn": manifest.svn,
        "debug": manifest.debug,
        "module_sha256": manifest.module.sha256.hex(),
        "manifest_sha256": manifest.sha256().hex(),
    }


def _signer_key(path: Path) -> Any:
    """An RSA-3072, e=3 public key from a public or private PEM file."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from haven.tee.sgx.sigstruct import load_signing_key

    try:
        with open(path, "rb") as f:
            data = f.read(64 << 10)
    except OSError as e:
        raise KeyFileError(f"signer key {path}: cannot read it ({e.strerror or type(e).__name__})") from None
    if b"PRIVATE KEY-----" in data:
        return load_signing_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyFileError(f"signer key {path}: not a PEM public or private key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyFileError(f"signer key {path}: not an RSA key")
    numbers = key.public_numbers()
    if key.key_size != 3072 or numbers.e != 3:
        raise KeyFileError(f"signer key {path}: SGX signing keys are RSA-3072 with exponent 3")
    return key


def _show(facts: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(facts, sort_keys=False))
        return
    for name, value in facts.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif value is None:
            value = "(unknown: give --signer)"
        print(f"{name:<16} {value}")
