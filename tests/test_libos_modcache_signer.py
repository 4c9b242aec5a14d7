"""The module cache's key is bound to the signer (KEYPOLICY = MRSIGNER with ISVPRODID, ISVSVN and
DEBUG): an entry survives a manifest change of the same owner's bundle, and no other identity
can use it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from haven.bundle.build import build_bundle
from haven.libos import modcache
from haven.libos.console import Console
from haven.libos.engine import EngineConfig
from haven.libos.modcache import ModuleCache, Status, seal_key
from haven.libos.runtime import Application, HostResources
from haven.tee.sim.platform import SimPlatform
from tests.bundle_helpers import make_app, wasm
from tests.sim_helpers import DEBUG, cached_key, load, make_platform, small_image

CONFIG = EngineConfig()
ENGINE = CONFIG.engine()
HELLO = wasm("hello")
HELLO_SHA = hashlib.sha256(HELLO).digest()


def cache_for(directory: Path, platform: SimPlatform, payload: bytes = b"code", **sign: Any) -> ModuleCache:
    return ModuleCache(directory, seal_key(load(platform, small_image(payload), **sign)))


def no_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, a compile fails the test: a hit must come from the cache alone."""

    def refuse(*args: object) -> object:
        raise AssertionError("the module was compiled again")

    monkeypatch.setattr(modcache, "compile_module", refuse)


def test_another_enclave_of_the_same_signer_hits(
    tmp_path: Path, platform_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = make_platform(platform_path)
    a = cache_for(tmp_path, platform, b"enclave A")
    b = cache_for(tmp_path, platform, b"enclave B")  # another MRENCLAVE, same MRSIGNER
    assert a.load(ENGINE, HELLO, CONFIG.digest())[1] == Status.MISS
    no_compiling(monkeypatch)
    module, status = b.load(ENGINE, HELLO, CONFIG.digest())
    assert status == Status.HIT
    assert {e.name for e in module.exports} == {"memory", "_start"}


@pytest.mark.parametrize(
    "other",
    [
        {"key": "another signer"},
        {"attributes": DEBUG},  # a debug enclave of the same signer
        {"isvprodid": 2},  # another product of the same signer
        {"isvsvn": 2},  # another security version
    ],
    ids=["signer", "debug", "isvprodid", "isvsvn"],
)
def test_another_identity_misses(tmp_path: Path, platform_path: Path, other: dict[str, Any]) -> None:
    platform = make_platform(platform_path)
    mine = cache_for(tmp_path, platform)
    if "key" in other:
        other = {"key": cached_key(other["key"])}
    theirs = cache_for(tmp_path, platform, **other)
    mine.load(ENGINE, HELLO, CONFIG.digest())
    assert theirs.path_for(HELLO_SHA, CONFIG.digest()) != mine.path_for(HELLO_SHA, CONFIG.digest())
    assert theirs.load(ENGINE, HELLO, CONFIG.digest())[1] == Status.MISS
    # ... and the host moving the entry to where the other identity looks does not help
    mine.path_for(HELLO_SHA, CONFIG.digest()).replace(theirs.path_for(HELLO_SHA, CONFIG.digest()))
    assert theirs.load(ENGINE, HELLO, CONFIG.digest())[1] == Status.TAMPERED


def test_a_production_enclave_never_loads_a_debug_enclaves_entry(tmp_path: Path, platform_path: Path) -> None:
    """A debugger can write a debug enclave's memory, so what it sealed must not reach production."""
    platform = make_platform(platform_path)
    debug = cache_for(tmp_path, platform, attributes=DEBUG)
    production = cache_for(tmp_path, platform)
    debug.load(ENGINE, HELLO, CONFIG.digest())
    assert production.load(ENGINE, HELLO, CONFIG.digest())[1] == Status.MISS


# -- whole bundles: a manifest change is a new MRENCLAVE, not a new compile -----------------------


def application(
    tmp_path: Path,
    platform: SimPlatform,
    name: str,
    extra: str = "",
    *,
    argv: str = '["app"]',
    key: str = "owner",
) -> Application:
    manifest = make_app(tmp_path / name, extra)
    manifest.write_text(manifest.read_text().replace('argv = ["app", "--flag"]', f"argv = {argv}"))
    bundle = build_bundle(manifest, cached_key(key))
    enclave = platform.load_enclave(bundle.image, bundle.sigstruct)
    null = os.open(os.devnull, os.O_WRONLY)
    resources = HostResources(console=Console(None, null, null), cache_dir=tmp_path / "cache")
    return Application(enclave, resources)


def test_a_manifest_change_of_the_same_signer_hits_without_compiling(
    tmp_path: Path, platform_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = make_platform(platform_path)
    first = application(tmp_path, platform, "v1", argv='["app", "one"]')
    first.prepare()
    assert first.cache_status == Status.MISS
    second = application(tmp_path, platform, "v2", 'env = { K = "v" }\n', argv='["app", "two"]')
    assert second.enclave.secs.mrenclave != first.enclave.secs.mrenclave
    no_compiling(monkeypatch)
    assert second.run().exit_code == 0
    assert second.cache_status == Status.HIT
    assert len(list((tmp_path / "cache").iterdir())) == 1  # one entry serves both


@pytest.mark.parametrize(
    ("extra", "key"), [("", "another owner"), ("[enclave]\ndebug = true\n", "owner")], ids=["signer", "debug"]
)
def test_another_signer_or_a_debug_bundle_misses(
    tmp_path: Path, platform_path: Path, extra: str, key: str
) -> None:
    platform = make_platform(platform_path)
    application(tmp_path, platform, "mine").prepare()
    theirs = application(tmp_path, platform, "theirs", extra, key=key)
    theirs.prepare()
    assert theirs.cache_status == Status.MISS
    assert theirs.run().exit_code == 0
    assert len(list((tmp_path / "cache").iterdir())) == 2
