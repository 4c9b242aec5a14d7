"""The sealed compiled-module cache: verified before it is loaded, recompiled whenever it is not right."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import wasmtime

from haven.libos.engine import EngineConfig
from haven.libos.errors import ModuleError
from haven.libos.modcache import MAC_SIZE, CacheHeader, ModuleCache, Status, load_module, seal_key
from tests.bundle_helpers import wasm
from tests.sim_helpers import cached_key, load, make_platform, small_image

CONFIG = EngineConfig()
TRAILER = CacheHeader.SIZE + MAC_SIZE
ENGINE = CONFIG.engine()
HELLO = wasm("hello")


@pytest.fixture
def cache(tmp_path: Path, platform_path: Path) -> ModuleCache:
    enclave = load(make_platform(platform_path))
    return ModuleCache(tmp_path / "cache", seal_key(enclave))


def entry(cache: ModuleCache, module: bytes = HELLO) -> Path:
    return cache.path_for(hashlib.sha256(module).digest(), CONFIG.digest())


def runs(module: wasmtime.Module) -> None:
    """The loaded module is a working one (instantiable, with its exports)."""
    assert {e.name for e in module.exports} == {"memory", "_start"}


def test_miss_then_hit(cache: ModuleCache) -> None:
    m, status = cache.load(ENGINE, HELLO, CONFIG.digest())
    assert status == Status.MISS and entry(cache).is_file()
    runs(m)
    m, status = cache.load(ENGINE, HELLO, CONFIG.digest())
    assert status == Status.HIT
    runs(m)


def test_the_entry_holds_no_readable_module_hash_in_its_name(cache: ModuleCache) -> None:
    cache.load(ENGINE, HELLO, CONFIG.digest())
    assert hashlib.sha256(HELLO).hexdigest()[:16] not in entry(cache).name


@pytest.mark.parametrize(
    "where",
    ["payload", "header-module-hash", "header-length", "mac", "magic", "salt"],
)
def test_tampered_entry_is_detected_and_rebuilt(cache: ModuleCache, where: str) -> None:
    cache.load(ENGINE, HELLO, CONFIG.digest())
    path = entry(cache)
    data = bytearray(path.read_bytes())
    header_at = len(data) - TRAILER  # payload || header || HMAC
    at = {
        "payload": 100,
        "header-module-hash": header_at + CacheHeader.offset_of("module_sha256"),
        "header-length": header_at + CacheHeader.offset_of("length"),
        "mac": len(data) - 1,
        "magic": header_at,
        "salt": header_at + CacheHeader.offset_of("salt"),
    }[where]
    data[at] ^= 0x40  # one bit, anywhere: the tag covers the payload and the whole header
    path.write_bytes(bytes(data))
    m, status = cache.load(ENGINE, HELLO, CONFIG.digest())
    assert status == Status.TAMPERED
    runs(m)
    assert cache.load(ENGINE, HELLO, CONFIG.digest())[1] == Status.HIT  # rewritten


@pytest.mark.parametrize("change", ["truncated", "extended", "empty", "directory"])
def test_malformed_entry_is_rebuilt(cache: ModuleCache, change: str) -> None:
    cache.load(ENGINE, HELLO, CONFIG.digest())
    path = entry(cache)
    data = path.read_bytes()
    if change == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif change == "extended":
        path.write_bytes(data + b"\0")
    elif change == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
        path.mkdir()
    m, status = cache.load(ENGINE, HELLO, CONFIG.digest())
    assert status == Status.TAMPERED
    runs(m)


def test_native_code_the_host_wrote_is_never_loaded(cache: ModuleCache) -> None:
    """A valid serialized module (what the host could produce itself) without the enclave's MAC."""
    other = wasmtime.Module(
        ENGINE, '(module (memory (export "memory") 1) (func (export "_start") (unreachable)))'
    )
    cache.load(ENGINE, HELLO, CONFIG.digest())
    path = entry(cache)
    good = path.read_bytes()
    forged_payload = bytes(other.serialize())
    header = CacheHeader.from_bytes(good[-TRAILER:-MAC_SIZE]).replace(length=len(forged_payload))
    path.write_bytes(forged_payload + header.to_bytes() + good[-MAC_SIZE:])
    m, status = cache.load(ENGINE, HELLO, CONFIG.digest())
    assert status == Status.TAMPERED
    runs(m)  # the genuine module, recompiled


def test_an_entry_of_another_signer_does_not_verify(tmp_path: Path, platform_path: Path) -> None:
    platform = make_platform(platform_path)
    a = ModuleCache(tmp_path / "c", seal_key(load(platform, small_image(b"enclave A"))))
    b = ModuleCache(tmp_path / "c", seal_key(load(platform, small_image(b"enclave B"), cached_key("other"))))
    a.load(ENGINE, HELLO, CONFIG.digest())
    entry(a).rename(entry(b))  # the host puts A's entry where B looks
    assert b.load(ENGINE, HELLO, CONFIG.digest())[1] == Status.TAMPERED


def test_an_authentic_entry_for_other_inputs_is_stale(cache: ModuleCache) -> None:
    module_sha = hashlib.sha256(HELLO).digest()
    key = cache._key(module_sha, CONFIG.digest())
    path = entry(cache)
    other_module = hashlib.sha256(b"another module").digest()
    cache._write(path, key, other_module, CONFIG.digest(), b"\0" * 64)
    assert cache.load(ENGINE, HELLO, CONFIG.digest())[1] == Status.STALE
    cache._write(path, key, module_sha, CONFIG.digest(), b"not a serialized module")
    m, status = cache.load(ENGINE, HELLO, CONFIG.digest())
    assert status == Status.STALE  # authentic but not loadable: recompiled, never a crash
    runs(m)


def test_engine_configuration_is_bound(cache: ModuleCache) -> None:
    other = EngineConfig(epoch_interruption=True)
    cache.load(ENGINE, HELLO, CONFIG.digest())
    assert cache.path_for(hashlib.sha256(HELLO).digest(), other.digest()) != entry(cache)
    assert cache.load(other.engine(), HELLO, other.digest())[1] == Status.MISS


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_cache_only_costs_a_compile(tmp_path: Path, platform_path: Path) -> None:
    d = tmp_path / "ro"
    d.mkdir(mode=0o500)
    c = ModuleCache(d, seal_key(load(make_platform(platform_path))))
    assert c.load(ENGINE, HELLO, CONFIG.digest())[1] == Status.MISS
    assert c.load(ENGINE, HELLO, CONFIG.digest())[1] == Status.MISS


def test_a_cache_path_that_is_a_file_only_costs_a_compile(tmp_path: Path, platform_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    c = ModuleCache(tmp_path / "file" / "sub", seal_key(load(make_platform(platform_path))))
    m, status = c.load(ENGINE, HELLO, CONFIG.digest())
    assert status == Status.MISS
    runs(m)


def test_without_a_cache_and_with_a_bad_module() -> None:
    assert load_module(ENGINE, HELLO, CONFIG.digest(), None)[1] == Status.DISABLED
    with pytest.raises(ModuleError, match="does not compile"):
        load_module(ENGINE, b"\0asm\x01\0\0\0\xff", CONFIG.digest(), None)


def test_least_recently_used_entries_are_evicted(tmp_path: Path, platform_path: Path) -> None:
    enclave = load(make_platform(platform_path))
    modules = [wasm("hello"), wasm("exit_code")]
    c = ModuleCache(tmp_path / "c", seal_key(enclave))
    c.load(ENGINE, modules[0], CONFIG.digest())
    one = entry(c, modules[0]).stat().st_size
    c.max_bytes = one + one // 2  # room for one entry and a half
    c.load(ENGINE, modules[1], CONFIG.digest())
    assert not entry(c, modules[0]).exists() and entry(c, modules[1]).exists()
    assert c.load(ENGINE, modules[1], CONFIG.digest())[1] == Status.HIT
