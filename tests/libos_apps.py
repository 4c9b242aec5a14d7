"""``run_haven``: a module under Haven's LibOS, with the signature and result of ``run_baseline``.

It goes the whole way a bundle goes: a manifest (debug, the directory mounted at ``/sandbox``), the
enclave image laid out, measured and signed, EINIT on the simulated platform, then the LibOS boots
from the enclave's measured pages and runs the module. Reactors (QuickJS, Ruby) run through the same
launchers as the baseline.

Two things are shared across runs so that a test suite stays fast: the test platform (a file under
the git-ignored build directory, never the user's) and the sealed module cache next to it. The cache
key is bound to MRENCLAVE, which covers the manifest; so tests of one interpreter keep one manifest —
the same argv and environment — and vary the *files* in the mounted directory instead.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from haven.bundle.build import enclave_image, sign_image
from haven.bundle.container import Bundle
from haven.bundle.manifest import parse_manifest
from haven.cli.run import q
from haven.libos.console import Console
from haven.libos.runtime import Application, HostResources, ImageSource
from haven.tee.sim.platform import SimPlatform
from tests.apps.baseline import BUILD, DEFAULT_TIMEOUT, GUEST_DIR, Result, snapshot
from tests.apps.launchers import launcher_for
from tests.sim_helpers import cached_key, make_platform

_BUNDLES: dict[bytes, Bundle] = {}


def state_dir() -> Path:
    """Where the shared test platform and module cache live (the build directory when there is one)."""
    base = BUILD if BUILD.is_dir() else Path(tempfile.gettempdir()) / f"haven-tests-{os.getuid()}"
    base.mkdir(parents=True, exist_ok=True)
    return base


def test_platform() -> SimPlatform:
    path = state_dir() / "haven-test-platform.json"
    if path.exists():
        return SimPlatform.open(path)
    return make_platform(path)


def manifest_toml(
    wasm: Path, args: list[str], env: dict[str, str], guest_dir: str, timeout: float, *, image: bool
) -> str:
    source = 'image = "sandbox"' if image else 'host = "sandbox"\nuntrusted = true'
    return "\n".join(
        [
            "[app]",
            f"module = {q(str(wasm.resolve()))}",
            f"argv = [{', '.join(q(a) for a in args)}]",
            "env = { " + ", ".join(f"{q(k)} = {q(v)}" for k, v in sorted(env.items())) + " }",
            'stdin = "console"',
            "[enclave]",
            "debug = true",
            'memory_limit = "4GiB"',
            f'time_limit = "{max(1, int(timeout))}s"',
            "[[mount]]",
            f"guest = {q(guest_dir)}",
            source,
            "",
        ]
    )


def bundle_for(toml: str) -> Bundle:
    with tempfile.TemporaryDirectory() as tmp:
        manifest, module = parse_manifest(toml, base_dir=Path(tmp))
    key = manifest.canonical_bytes()
    bundle = _BUNDLES.get(key)
    if bundle is None:
        bundle = sign_image(enclave_image(manifest, module), manifest, cached_key("haven-tests"))
        _BUNDLES[key] = bundle
    return bundle


def run_haven(
    wasm: Path,
    args: list[str],
    *,
    preopen: Path,
    env: dict[str, str],
    stdin: bytes = b"",
    guest_dir: str = GUEST_DIR,
    timeout: float = DEFAULT_TIMEOUT,
    image: ImageSource | None = None,
    cache: bool = True,
) -> Result:
    """Run ``wasm`` in a Haven enclave with ``preopen`` (a host directory, untrusted) at ``guest_dir``,
    or with the encrypted ``image`` there instead; files are the directory's afterwards (the caller
    reads an image's itself)."""
    bundle = bundle_for(manifest_toml(wasm, args, env, guest_dir, timeout, image=image is not None))
    enclave = test_platform().load_enclave(bundle.image, bundle.sigstruct)
    with tempfile.TemporaryDirectory(prefix="haven-run-") as tmp:
        paths = [Path(tmp) / n for n in ("stdin", "stdout", "stderr")]
        paths[0].write_bytes(stdin)
        fds = [os.open(paths[0], os.O_RDONLY)] + [
            os.open(p, os.O_RDWR | os.O_CREAT, 0o600) for p in paths[1:]
        ]
        try:
            resources = HostResources(
                images={"sandbox": image} if image is not None else {},
                host_dirs={} if image is not None else {"sandbox": preopen},
                console=Console(fds[0], fds[1], fds[2]),
                cache_dir=(state_dir() / "haven-modcache") if cache else None,
            )
            app = Application(enclave, resources)
            try:
                outcome = app.run(launcher_for)
            finally:
                app.close()
        finally:
            for fd in fds:
                os.close(fd)
        stderr = paths[2].read_bytes()
        return Result(
            exit_code=outcome.exit_code,
            stdout=paths[1].read_bytes(),
            stderr=stderr,
            files=snapshot(preopen) if image is None else {},
            trap=outcome.message,
        )
