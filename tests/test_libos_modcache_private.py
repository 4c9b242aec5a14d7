"""What the module cache verifies is what it loads: the host changing its file while an entry is being
copied, or after it was verified, never gets its bytes deserialized."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from haven.libos import modcache
from haven.libos.engine import EngineConfig
from haven.libos.modcache import MAC_SIZE, CacheHeader, ModuleCache, Status, seal_key
from tests.bundle_helpers import wasm
from tests.sim_helpers import load, make_platform

CONFIG = EngineConfig()
ENGINE = CONFIG.engine()
HELLO = wasm("hello")
TRAILER = CacheHeader.SIZE + MAC_SIZE
# Native code the host would like the enclave to run: a valid serialized module of its own.
FORGED = bytes(
    wasmtime.Module(
        ENGINE, '(module (memory (export "memory") 1) (func (export "_start")) (func (export "evil")))'
    ).serialize()
)


@pytest.fixture
def cache(tmp_path: Path, platform_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleCache:
    monkeypatch.setattr(modcache, "CHUNK", 4096)  # many chunks, so the host can act between two of them
    c = ModuleCache(tmp_path / "cache", seal_key(load(make_platform(platform_path))))
    c.load(ENGINE, HELLO, CONFIG.digest())
    return c


def entry(cache: ModuleCache) -> Path:
    return cache.path_for(hashlib.sha256(HELLO).digest(), CONFIG.digest())


def genuine(module: wasmtime.Module) -> bool:
    return {e.name for e in module.exports} == {"memory", "_start"}


def overwrite(path: Path, data: bytes) -> None:
    """The host writes its file in place (the same inode the enclave has open)."""
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate()


def after_reads(monkeypatch: pytest.MonkeyPatch, n: int, act: Callable[[], None]) -> list[int]:
    """Run ``act`` (the host) right after the enclave's ``n``-th read of the entry; returns the count."""
    real = os.preadv
    count = [0]

    def preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        got = real(fd, buffers, offset)
        count[0] += 1
        if count[0] == n:
            act()
        return got

    monkeypatch.setattr(os, "preadv", preadv)
    return count


def test_the_entry_is_copied_in_many_chunks(cache: ModuleCache, monkeypatch: pytest.MonkeyPatch) -> None:
    """(What the tests below rely on: the host gets to act between two reads of one load.)"""
    count = after_reads(monkeypatch, 0, lambda: None)
    assert cache.load(ENGINE, HELLO, CONFIG.digest())[1] == Status.HIT
    assert count[0] >= 4


def test_the_host_rewriting_the_rest_of_the_entry_during_the_copy(
    cache: ModuleCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host's forged code, with the genuine trailer (header and tag), swapped in after the first
    chunk was read: the tag no longer verifies, and the genuine module is compiled instead."""
    path = entry(cache)
    good = path.read_bytes()
    forged = FORGED + good[-TRAILER:]
    after_reads(monkeypatch, 2, lambda: overwrite(path, forged))  # read 1: the trailer, 2: a chunk
    module, status = cache.load(ENGINE, HELLO, CONFIG.digest())
    assert status == Status.TAMPERED
    assert genuine(module)


def test_the_host_changing_what_was_already_read_changes_nothing(
    cache: ModuleCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each byte is read once: a change to the part already copied never reaches the copy."""
    path = entry(cache)
    good = path.read_bytes()
    forged = bytearray(good)
    forged[:4096] = FORGED[:4096]
    after_reads(monkeypatch, 2, lambda: overwrite(path, bytes(forged)))
    module, status = cache.load(ENGINE, HELLO, CONFIG.digest())
    assert status == Status.HIT
    assert genuine(module)


def test_the_host_rewriting_the_entry_after_it_was_verified(
    cache: ModuleCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The classic time-of-check/time-of-use attack: genuine bytes while the enclave verifies, forged
    ones when wasmtime loads. wasmtime loads the enclave's copy, so it gets the genuine module."""
    path = entry(cache)
    forged = FORGED + path.read_bytes()[-TRAILER:]
    for name in ("deserialize", "deserialize_file"):
        real = getattr(wasmtime.Module, name).__func__

        def swapped(
            cls: type[wasmtime.Module], engine: wasmtime.Engine, source: object, _real: Any = real
        ) -> object:
            overwrite(path, forged)
            return _real(cls, engine, source)

        monkeypatch.setattr(wasmtime.Module, name, classmethod(swapped))
    module, status = cache.load(ENGINE, HELLO, CONFIG.digest())
    assert status == Status.HIT
    assert genuine(module)
    assert path.read_bytes() == forged  # the host did swap its file


def test_the_host_cutting_the_entry_short_during_the_copy(
    cache: ModuleCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = entry(cache)
    after_reads(monkeypatch, 3, lambda: os.truncate(path, 8192))
    module, status = cache.load(ENGINE, HELLO, CONFIG.digest())
    assert status == Status.TAMPERED
    assert genuine(module)


def test_the_copy_is_sealed_against_writes(cache: ModuleCache) -> None:
    """On Linux the copy is a memfd that nothing (the enclave included) can write once it is filled."""
    if not modcache._MEMFD:
        pytest.skip("no memfd sealing on this system")
    key = cache._key(hashlib.sha256(HELLO).digest(), CONFIG.digest())
    with modcache.PrivateCopy(entry(cache), key) as copy:
        assert copy.authentic
        fd = copy._fd
        assert fd is not None
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"x", 0)
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 0)


def zeroed_entry(cache: ModuleCache) -> tuple[Path, bytes, bytes]:
    """An authentic entry whose payload has whole chunks of zeros, at the start, inside and at the end."""
    payload = bytes(8192) + os.urandom(5000) + bytes(4096 * 3) + os.urandom(100) + bytes(4096 * 2)
    module_sha = hashlib.sha256(HELLO).digest()
    key = cache._key(module_sha, CONFIG.digest())
    path = entry(cache)
    cache._write(path, key, module_sha, CONFIG.digest(), payload)
    return path, key, payload


def test_chunks_of_zeros_are_holes_that_read_as_the_payload(cache: ModuleCache) -> None:
    path, key, payload = zeroed_entry(cache)
    with modcache.PrivateCopy(path, key) as copy:
        assert copy.authentic and copy.size == len(payload)
        if copy._fd is not None:
            assert os.fstat(copy._fd).st_size == len(payload)
            assert os.pread(copy._fd, len(payload) + 1, 0) == payload
            # fewer blocks than the payload's pages: the chunks of zeros were never written
            assert os.fstat(copy._fd).st_blocks * 512 < len(payload)


@pytest.mark.parametrize("at", [0, 8192 + 5000 + 4096, 30000])  # each in a hole
def test_the_host_filling_a_chunk_of_zeros_is_caught(cache: ModuleCache, at: int) -> None:
    path, key, _ = zeroed_entry(cache)
    data = bytearray(path.read_bytes())
    data[at] = 0x90
    path.write_bytes(bytes(data))
    with modcache.PrivateCopy(path, key) as copy:
        assert not copy.authentic
    module, status = cache.load(ENGINE, HELLO, CONFIG.digest())
    assert status == Status.TAMPERED
    assert genuine(module)


def test_without_memfd_the_copy_is_private_memory_with_the_same_checks(
    cache: ModuleCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where there is no sealable memfd, the copy is a bytearray handed to ``Module.deserialize``."""
    monkeypatch.setattr(modcache, "_MEMFD", False)
    path = entry(cache)
    good = path.read_bytes()
    module, status = cache.load(ENGINE, HELLO, CONFIG.digest())
    assert status == Status.HIT and genuine(module)
    after_reads(monkeypatch, 2, lambda: overwrite(path, FORGED + good[-TRAILER:]))
    module, status = cache.load(ENGINE, HELLO, CONFIG.digest())
    assert status == Status.TAMPERED and genuine(module)
