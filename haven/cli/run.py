"""`haven run`: run a signed bundle — or, for development, a bare module as a throw-away debug enclave.

The host side of a run: it maps the names the manifest uses to the host's files (``--image``,
``--dir``) and starts the enclave in a process of its own (:mod:`haven.host.launch`), which boots
the bundle, confines itself with seccomp and reaches the host only through the host interface.
Everything else — arguments, environment, mounts, limits — comes from the measured manifest, and the
command refuses to add to it.

Untrusted host directories (``untrusted = true`` mounts, dev-mode ``--mount``) cannot be served
through the host interface, so such a run stays in this one process, unconfined: for a module under
``--mount`` (a debug enclave anyway) with a warning, for a bundle only when ``--unconfined`` says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from haven.errors import BundleError, HavenError

WASM_MAGIC = b"\0asm"


class RunUsageError(HavenError):
    exit_code = 2


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run a signed bundle, or a .wasm module as a throw-away debug enclave",
        description="Run a signed enclave bundle on the simulated SGX platform. Given a WebAssembly "
        "module instead (MODULE.wasm [ARGS...]), build a throw-away debug bundle for it on the fly — "
        "DEBUG set, so no production policy would release a secret to it — and run that, as "
        "`wasmtime run` would. Options go before the bundle or module; what follows it is the "
        "module's arguments.",
    )
    p.add_argument("target", metavar="BUNDLE|MODULE.wasm")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="arguments (module only)")
    p.add_argument(
        "--mount",
        action="append",
        default=[],
        metavar="HOSTDIR:GUESTDIR",
        help="module only: preopen a host directory at GUESTDIR (untrusted, not encrypted)",
    )
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="module only")
    p.add_argument(
        "--image", action="append", default=[], metavar="NAME=FILE", help="bundle: the image behind a mount"
    )
    p.add_argument(
        "--image-key",
        action="append",
        default=[],
        metavar="NAME=KEYFILE",
        help="bundle: an image's key (until the key broker releases image keys)",
    )
    p.add_argument(
        "--counter", action="append", default=[], metavar="NAME=FILE", help="bundle: an image's counter file"
    )
    p.add_argument(
        "--dir",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="bundle: an untrusted mount's directory",
    )
    p.add_argument("--cache-dir", type=Path, metavar="DIR", help="compiled-module cache (default: per user)")
    p.add_argument("--no-cache", action="store_true", help="compile the module on every start")
    p.add_argument(
        "--platform", type=Path, metavar="FILE", help="simulated platform file (default: the user's)"
    )
    p.add_argument(
        "--unconfined",
        action="store_true",
        help="run without seccomp confinement (where seccomp is unavailable, or for a bundle with "
        "untrusted host directories, which then runs in this process)",
    )
    p.set_defaults(handler=_run)


def _pairs(values: list[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        name, sep, value = v.partition("=")
        if not sep or not name or not value:
            raise RunUsageError(f"{option} {v!r}: expected NAME=VALUE")
        if name in out:
            raise RunUsageError(f"{option}: {name!r} given twice")
        out[name] = value
    return out


def _is_module(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == WASM_MAGIC
    except OSError as e:
        raise BundleError(f"cannot read {path}: {e.strerror or type(e).__name__}") from None


def _dev_manifest(
    module: Path, args: list[str], env: dict[str, str], mounts: list[str]
) -> tuple[str, dict[str, Path]]:
    """The TOML of a throw-away debug manifest for ``module``, and its host directories by name."""
    lines = [
        "[app]",
        f"module = {q(str(module.resolve()))}",
        f"argv = [{', '.join(q(a) for a in [module.name, *args])}]",
        "env = { " + ", ".join(f"{q(k)} = {q(v)}" for k, v in env.items()) + " }",
        'stdin = "console"',
        "[enclave]",
        "debug = true",
        'memory_limit = "4GiB"',
    ]
    dirs: dict[str, Path] = {}
    for i, spec in enumerate(mounts):
        host, sep, guest = spec.rpartition(":")
        if not sep or not host or not guest:
            raise RunUsageError(f"--mount {spec!r}: expected HOSTDIR:GUESTDIR")
        if not guest.startswith("/"):
            raise RunUsageError(f"--mount {spec!r}: the guest directory must be absolute, like /data")
        if not Path(host).is_dir():
            raise RunUsageError(f"--mount {spec!r}: {host} is not a directory")
        name = f"mount{i}"
        dirs[name] = Path(host)
        lines += ["[[mount]]", f"guest = {q(guest)}", f"host = {q(name)}", "untrusted = true"]
    return "\n".join(lines) + "\n", dirs


def q(text: str) -> str:
    """``text`` as a TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text, ensure_ascii=False)


def _run(args: argparse.Namespace) -> int:
    from haven.bundle.build import enclave_image, sign_image
    from haven.bundle.container import read_bundle, write_bundle
    from haven.bundle.manifest import parse_manifest
    from haven.libos.runtime import enclave_application
    from haven.tee.sgx.sigstruct import generate_signing_key

    target = Path(args.target)
    if _is_module(target):
        if args.image or args.image_key or args.counter or args.dir:
            raise RunUsageError("--image, --image-key, --counter and --dir are for bundles; use --mount")
        toml, host_dirs = _dev_manifest(target, list(args.args), _pairs(args.env, "--env"), args.mount)
        with tempfile.TemporaryDirectory(prefix="haven-run-") as tmp:
            manifest, module = parse_manifest(toml, base_dir=Path(tmp))
            image = enclave_image(manifest, module)
            bundle = sign_image(image, manifest, generate_signing_key())  # a key nobody keeps
            if host_dirs:
                print(
                    "haven: warning: --mount runs the module in this process, unconfined "
                    "(development only)",
                    file=sys.stderr,
                    flush=True,
                )
                return _run_here(args, bundle, host_dirs, {})
            path = Path(tmp) / "module.bundle"
            write_bundle(bundle, path)
            return _run_confined(args, path)
    if args.args:
        raise RunUsageError("a bundle's arguments come from its measured manifest; the host cannot add any")
    if args.mount or args.env:
        raise RunUsageError("--mount and --env are for a module; a bundle's manifest declares its own")
    bundle = read_bundle(target)
    untrusted = [m for m in enclave_application(bundle.image)[0].mounts if m.host is not None]
    if not untrusted:
        return _run_confined(args, target)
    if not args.unconfined:
        raise RunUsageError(
            f"the bundle mounts the untrusted host directory {untrusted[0].host!r} at "
            f"{untrusted[0].guest}, which a confined enclave cannot reach (the host interface serves "
            "no directories); --unconfined runs it in this process, without confinement"
        )
    host_dirs = {k: Path(v) for k, v in _pairs(args.dir, "--dir").items()}
    return _run_here(args, bundle, host_dirs, _images(args))


def _run_confined(args: argparse.Namespace, bundle: Path) -> int:
    """The bundle in an enclave process of its own, served by this one."""
    from haven.host.launch import HostImage, run_bundle
    from haven.shield.storage.image import counter_path_for

    files = _pairs(args.image, "--image")
    keys = _pairs(args.image_key, "--image-key")
    counters = _pairs(args.counter, "--counter")
    _check_image_names(files, keys, counters)
    images = {
        name: HostImage(
            image=Path(file),
            counter=Path(counters[name]) if name in counters else counter_path_for(Path(file)),
            key_file=Path(keys[name]).resolve(),
        )
        for name, file in files.items()
    }
    cache = _cache_dir(args)
    return run_bundle(
        bundle.resolve(),
        images,
        platform=args.platform.resolve() if args.platform is not None else None,
        cache_dir=cache.resolve() if cache is not None else None,
        confine=not args.unconfined,
    )


def _run_here(
    args: argparse.Namespace, bundle: Any, host_dirs: dict[str, Path], images: dict[str, Any]
) -> int:
    """The bundle in this process, unconfined: for untrusted host directories (development)."""
    from haven.libos.runtime import Application, HostResources
    from haven.tee.sim.platform import SimPlatform

    try:
        platform = SimPlatform.open(args.platform)
        enclave = platform.load_enclave(bundle.image, bundle.sigstruct)
        resources = HostResources(images=images, host_dirs=host_dirs, cache_dir=_cache_dir(args))
        app = Application(enclave, resources)
        try:
            for warning in app.warnings:
                print(f"haven: warning: {warning}", file=sys.stderr, flush=True)
            outcome = app.run()
        finally:
            app.close()
    finally:
        for source in images.values():
            source.device.close()
    if outcome.message:
        print(f"haven: {outcome.message}", file=sys.stderr, flush=True)
    return outcome.exit_code


def _check_image_names(files: dict[str, str], keys: dict[str, str], counters: dict[str, str]) -> None:
    for name in (*keys, *counters):
        if name not in files:
            raise RunUsageError(f"--image-key/--counter name {name!r} has no --image")
    for name in files:
        if name not in keys:
            raise RunUsageError(f"--image {name}: give its key with --image-key {name}=KEYFILE")


def _cache_dir(args: argparse.Namespace) -> Path | None:
    if args.no_cache:
        return None
    if args.cache_dir is not None:
        return Path(args.cache_dir)
    import platformdirs

    return Path(platformdirs.user_cache_dir("haven")) / "modules"


def _images(args: argparse.Namespace) -> dict[str, Any]:
    from haven.libos.runtime import ImageSource
    from haven.shield.storage.counter import FileCounter
    from haven.shield.storage.device import FileBlockDevice
    from haven.shield.storage.image import counter_path_for
    from haven.shield.storage.keys import load_image_key

    files = _pairs(args.image, "--image")
    keys = _pairs(args.image_key, "--image-key")
    counters = _pairs(args.counter, "--counter")
    _check_image_names(files, keys, counters)
    images: dict[str, Any] = {}
    try:
        for name, file in files.items():
            path = Path(file)
            counter = Path(counters[name]) if name in counters else counter_path_for(path)
            key = load_image_key(Path(keys[name]))
            images[name] = ImageSource(
                device=FileBlockDevice.open(path), counter=FileCounter(counter), key=key
            )
    except BaseException:
        for source in images.values():
            source.device.close()
        raise
    return images
